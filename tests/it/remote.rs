//! The team store on Redis: real `llmtape serve` processes sharing one real
//! `redis-server` (started per test), with the mock upstream counting
//! calls.

use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::support::*;

/// `llmtape serve` with `[remote]` pointing at `redis`; `remote_toml` adds
/// keys to the section (`prefix = "x"`), `mode` is passed as --mode.
pub(crate) async fn serve_remote(
    dir: &Path,
    mock: &MockUpstream,
    store: &Path,
    redis_url: &str,
    remote_toml: &str,
    mode: Option<&str>,
) -> Serve {
    serve_remote_after(dir, mock, store, "", redis_url, remote_toml, mode).await
}

/// [`serve_remote`] with `sections` (other TOML sections) written before
/// `[remote]`.
pub(crate) async fn serve_remote_after(
    dir: &Path,
    mock: &MockUpstream,
    store: &Path,
    sections: &str,
    redis_url: &str,
    remote_toml: &str,
    mode: Option<&str>,
) -> Serve {
    let config = dir.join(format!(
        "proxy-{}.toml",
        store.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &config,
        format!("{sections}[remote]\nurl = \"{redis_url}\"\n{remote_toml}\n"),
    )
    .unwrap();
    let mut cmd = serve_cmd(dir, &mock.url(), store);
    cmd.arg("--config").arg(&config);
    if let Some(mode) = mode {
        cmd.args(["--mode", mode]);
    }
    Serve::start(cmd).await
}

/// A metric's value from `/_llmtape/metrics`.
pub(crate) async fn metric(serve: &Serve, name: &str) -> u64 {
    let reply = send(Method::GET, &serve.url("/_llmtape/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Health's `remote` field.
pub(crate) async fn health_remote(serve: &Serve) -> String {
    let reply = send(Method::GET, &serve.url("/_llmtape/health"), &[], "").await;
    reply.json()["remote"].as_str().unwrap().to_string()
}

/// Waits (at most [`WAIT`]) until `name` reaches `at_least`.
pub(crate) async fn wait_metric(serve: &Serve, name: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(serve, name).await < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} >= {at_least} within {WAIT:?}; log: {}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn chat() -> &'static str {
    CHAT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_on_a_is_replayed_byte_for_byte_on_b_with_an_empty_store() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("a"),
        &redis.url(),
        "",
        None,
    )
    .await;
    let recorded = post(&a.url("/v1/chat/completions"), chat()).await;
    assert_eq!(recorded.cache(), "miss");
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    redis.wait_for(&redis_record_key("llmtape", &key)).await;
    assert_eq!(health_remote(&a).await, "up");

    let b = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("b"),
        &redis.url(),
        "",
        None,
    )
    .await;
    let replayed = post(&b.url("/v1/chat/completions"), chat()).await;
    assert_eq!(replayed.status, StatusCode::OK);
    assert_eq!(replayed.cache(), "hit");
    assert_eq!(replayed.header("x-llmtape-tier"), Some("remote"));
    assert_eq!(replayed.body, recorded.body, "byte-identical");
    assert_eq!(mock.calls(), 1, "B did not call the upstream");
    assert_eq!(metric(&b, "llmtape_remote_hits_total").await, 1);

    // The copy is local now: the next hit asks Redis nothing.
    let again = post(&b.url("/v1/chat/completions"), chat()).await;
    assert_eq!(again.header("x-llmtape-tier"), Some("local"));
    assert_eq!(again.body, recorded.body);
    assert_eq!(metric(&b, "llmtape_remote_hits_total").await, 1);
    assert_eq!(metric(&b, "llmtape_remote_misses_total").await, 0);
    assert_eq!(metric(&b, "llmtape_remote_errors_total").await, 0);
    // And it survives Redis going away.
    redis.signal("-STOP").await;
    let started = Instant::now();
    let offline = post(&b.url("/v1/chat/completions"), chat()).await;
    assert_eq!(offline.header("x-llmtape-tier"), Some("local"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no wait on a stopped Redis"
    );
    redis.signal("-CONT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_wrong_key_and_unknown_schema_values_are_misses_never_served() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("a"),
        &redis.url(),
        "",
        None,
    )
    .await;
    let first = post(&a.url("/v1/chat/completions"), CHAT).await;
    let key = first.header("x-llmtape-key").unwrap().to_string();
    let other = post(&a.url("/v1/chat/completions"), STREAM_CHAT).await;
    let other_key = other.header("x-llmtape-key").unwrap().to_string();
    let name = redis_record_key("llmtape", &key);
    let value = redis.wait_for(&name).await;
    let other_value = redis
        .wait_for(&redis_record_key("llmtape", &other_key))
        .await;

    let mut flipped = value.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    let mut unknown_schema = value.clone();
    unknown_schema[7] = b'9';
    let cases: [(&str, Vec<u8>); 4] = [
        ("corrupt", flipped),
        ("wrong key", other_value),
        ("unknown schema", unknown_schema),
        ("junk", b"not a recording".to_vec()),
    ];
    let lease = format!("{name}:lease");
    for (n, (what, bad)) in cases.into_iter().enumerate() {
        // The previous proxy was killed, maybe before releasing its lease.
        let _: () = redis.cmd(&[b"DEL", lease.as_bytes()]).await;
        let _: () = redis.cmd(&[b"SET", name.as_bytes(), &bad]).await;
        let store = dir.path().join(format!("b{n}"));
        let b = serve_remote(dir.path(), &mock, &store, &redis.url(), "", None).await;
        let calls = mock.calls();
        let reply = post(&b.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(reply.cache(), "miss", "{what}: not served");
        assert_eq!(mock.calls(), calls + 1, "{what}: asked the upstream");
        assert_ne!(reply.body, other.body, "{what}");
        assert_eq!(
            metric(&b, "llmtape_remote_bad_values_total").await,
            1,
            "{what}"
        );
        // Its own recording replaces the bad value; let that finish first.
        wait_metric(&b, "llmtape_remote_writes_total", 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_never_see_each_others_recordings() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("a"),
        &redis.url(),
        "prefix = \"team-a\"",
        None,
    )
    .await;
    let recorded = post(&a.url("/v1/chat/completions"), CHAT).await;
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    redis.wait_for(&redis_record_key("team-a", &key)).await;

    let b = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("b"),
        &redis.url(),
        "prefix = \"team-b\"",
        None,
    )
    .await;
    let other_team = post(&b.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(other_team.cache(), "miss");
    assert_ne!(other_team.body, recorded.body);
    assert_eq!(mock.calls(), 2);
    let b_value = redis.wait_for(&redis_record_key("team-b", &key)).await;
    let a_value = redis.get(&redis_record_key("team-a", &key)).await.unwrap();
    assert_ne!(a_value, b_value, "each team keeps its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_proxy_reads_the_shared_store_and_never_writes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("a"),
        &redis.url(),
        "",
        None,
    )
    .await;
    let recorded = post(&a.url("/v1/chat/completions"), CHAT).await;
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    redis.wait_for(&redis_record_key("llmtape", &key)).await;

    let ci = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("ci"),
        &redis.url(),
        "access = \"read-only\"",
        None,
    )
    .await;
    let replayed = post(&ci.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(replayed.header("x-llmtape-tier"), Some("remote"));
    assert_eq!(replayed.body, recorded.body);
    // A miss of its own is recorded locally only.
    let own = post(&ci.url("/v1/chat/completions"), STREAM_CHAT).await;
    assert_eq!(own.cache(), "miss");
    let own_key = own.header("x-llmtape-key").unwrap().to_string();
    let local = post(&ci.url("/v1/chat/completions"), STREAM_CHAT).await;
    assert_eq!(local.header("x-llmtape-tier"), Some("local"));
    assert_eq!(
        redis.recordings("llmtape").await,
        1,
        "only A's recording is in Redis"
    );
    assert!(redis
        .get(&redis_record_key("llmtape", &own_key))
        .await
        .is_none());
    assert_eq!(metric(&ci, "llmtape_remote_writes_total").await, 0);
    assert_eq!(metric(&ci, "llmtape_remote_pending_pushes").await, 0);
}

#[tokio::test]
async fn a_malformed_url_stops_serve_with_exit_2_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_cmd(dir.path(), "http://127.0.0.1:9", &dir.path().join("s"));
    cmd.args(["--remote", "http://127.0.0.1:6379"]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("remote.url"), "{stderr}");
    assert!(
        stderr.contains("redis://127.0.0.1:6379"),
        "names the fix: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_redis_unreachable_and_pushes_once_it_is_up() {
    if !RedisServer::installed_or_skip() {
        return;
    }
    let closed = ClosedPort::new();
    let port = closed.addr.port();
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let a = serve_remote(dir.path(), &mock, &dir.path().join("a"), &url, "", None).await;
    a.wait_for_log("shared store unreachable at start").await;
    assert_eq!(health_remote(&a).await, "down");
    let started = Instant::now();
    let recorded = post(&a.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(recorded.status, StatusCode::OK);
    assert_eq!(recorded.cache(), "miss");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by remote.timeout, took {:?}",
        started.elapsed()
    );
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    wait_metric(&a, "llmtape_remote_pending_pushes", 1).await;

    drop(closed);
    let Some(redis) = RedisServer::start_on(port).await else {
        panic!("redis-server on the freed port {port}");
    };
    let pushed = redis.wait_for(&redis_record_key("llmtape", &key)).await;
    let recording = Recording::decode(pushed.into()).unwrap();
    assert_eq!(recording.body, recorded.body);
    wait_metric(&a, "llmtape_remote_writes_total", 1).await;
    assert_eq!(metric(&a, "llmtape_remote_pending_pushes").await, 0);
    assert_eq!(health_remote(&a).await, "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_costs_bounded_latency_opens_the_breaker_and_closes_it_again() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("a"),
        &redis.url(),
        "timeout = \"200ms\"",
        None,
    )
    .await;
    let url = a.url("/v1/chat/completions");
    redis.signal("-STOP").await;
    for n in 0..5 {
        let started = Instant::now();
        let reply = post(&url, &question(n)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.cache(), "miss");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {n} waited {:?} for a stopped Redis",
            started.elapsed()
        );
    }
    assert_eq!(metric(&a, "llmtape_remote_breaker_open").await, 1);
    assert_eq!(health_remote(&a).await, "down");
    redis.signal("-CONT").await;
    // The pending recordings go out once Redis answers, and the breaker closes.
    wait_metric(&a, "llmtape_remote_writes_total", 5).await;
    assert_eq!(metric(&a, "llmtape_remote_pending_pushes").await, 0);
    assert_eq!(metric(&a, "llmtape_remote_breaker_open").await, 0);
    assert_eq!(redis.recordings("llmtape").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_fail_and_replay_mode_misses_are_503_remote_unavailable() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fail = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("fail"),
        &redis.url(),
        "on_unavailable = \"fail\"",
        None,
    )
    .await;
    let replay = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("replay"),
        &redis.url(),
        "",
        Some("replay"),
    )
    .await;
    // Recorded before the outage: still served from the local store.
    let local = post(&fail.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(local.status, StatusCode::OK);
    let port = redis.kill().await;
    assert!(port > 0);
    for serve in [&fail, &replay] {
        let reply = post(&serve.url("/v1/chat/completions"), STREAM_CHAT).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            serve.log()
        );
        assert_eq!(reply.json()["error"]["type"], "llmtape_remote_unavailable");
    }
    let hit = post(&fail.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(hit.header("x-llmtape-tier"), Some("local"));
    assert_eq!(hit.body, local.body);
    assert_eq!(mock.calls(), 1);
}

/// 50 identical concurrent requests spread over three proxies sharing one
/// Redis: one upstream call, the same bytes for everyone.
async fn fifty_misses_over_three_proxies(body: &'static str) {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxies = Vec::new();
    for name in ["a", "b", "c"] {
        let store = dir.path().join(name);
        proxies.push(serve_remote(dir.path(), &mock, &store, &redis.url(), "", None).await);
    }
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let url = proxies[n % 3].url("/v1/chat/completions");
            tokio::spawn(async move { post_with(&url, body, &[("x-mock-delay-ms", "300")]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    assert_eq!(mock.calls(), 1, "one upstream call across three proxies");
    assert_eq!(replies.iter().filter(|r| r.cache() == "miss").count(), 1);
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, replies[0].body, "identical bodies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_misses_over_three_proxies_make_one_upstream_call() {
    fifty_misses_over_three_proxies(CHAT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_streamed_misses_over_three_proxies_make_one_upstream_call() {
    fifty_misses_over_three_proxies(STREAM_CHAT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_flushall_local_copies_still_serve_and_push_restores_pull_and_ls_remote_read_it() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("a");
    let mut a = serve_remote(dir.path(), &mock, &store, &redis.url(), "", None).await;
    let recorded = post(&a.url("/v1/chat/completions"), CHAT).await;
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    let name = redis_record_key("llmtape", &key);
    redis.wait_for(&name).await;
    let _: () = redis.cmd(&[b"FLUSHALL"]).await;
    let local = post(&a.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(local.header("x-llmtape-tier"), Some("local"));
    assert_eq!(local.body, recorded.body);
    assert!(a.terminate().await.success());

    let ran = run_in(
        dir.path(),
        &[
            "push",
            "--store",
            store.to_str().unwrap(),
            "--remote",
            &redis.url(),
        ],
        None,
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.err());
    assert!(ran.out().contains("pushed 1 recordings"), "{}", ran.out());
    let value = redis.get(&name).await.expect("push restored it");
    assert_eq!(Recording::decode(value.into()).unwrap().body, recorded.body);

    // ls --remote takes the URL from remote.url (or LLMTAPE_REMOTE).
    std::fs::write(
        dir.path().join("remote.toml"),
        format!("[remote]\nurl = \"{}\"\n", redis.url()),
    )
    .unwrap();
    let listed = run_in(
        dir.path(),
        &["ls", "--remote", "--json", "--config", "remote.toml"],
        None,
    )
    .await;
    assert_eq!(listed.code, 0, "{}", listed.err());
    let rows: serde_json::Value = serde_json::from_str(&listed.out()).unwrap();
    assert_eq!(rows[0]["key"], key);

    let pulled_store = dir.path().join("c");
    let pulled = run_in(
        dir.path(),
        &[
            "pull",
            "--store",
            pulled_store.to_str().unwrap(),
            "--remote",
            &redis.url(),
        ],
        None,
    )
    .await;
    assert_eq!(pulled.code, 0, "{}", pulled.err());
    assert!(
        pulled.out().contains("pulled 1 recordings"),
        "{}",
        pulled.out()
    );
    let store = SledStore::open(&pulled_store).unwrap();
    let here = store
        .get(&RequestKey::from_hex(&key).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(here.body, recorded.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_stops_serve_with_exit_2() {
    let Some(redis) = RedisServer::start_with(&["--requirepass", "s3cret"]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_cmd(dir.path(), "http://127.0.0.1:9", &dir.path().join("s"));
    let url = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    cmd.args(["--remote", &url]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("remote.url"), "names the fix: {stderr}");
    assert!(
        !stderr.contains("wrong@"),
        "the password is not shown: {stderr}"
    );
}
