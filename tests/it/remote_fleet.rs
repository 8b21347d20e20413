//! The team store with several proxies at work: re-recordings reaching the
//! others, a leader killed mid-stream, a stream longer than the lease,
//! read-only proxies waiting on a lease, `rediss://`, and push/pull through
//! a running `serve`. Real `llmtape serve` processes, a real `redis-server`
//! per test, the mock upstream counting calls.

use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::remote::{metric, serve_remote, serve_remote_after, wait_metric};
use crate::support::*;

const CHAT_PATH: &str = "/v1/chat/completions";

/// A stream of 20 events 100 ms apart: about 2 s in flight.
const TWO_SECOND_STREAM: &[(&str, &str)] = &[
    ("x-mock-stream-events", "20"),
    ("x-mock-stream-delay-ms", "100"),
];
/// 25 events 200 ms apart: 5 s, past the 3 s lease.
const FIVE_SECOND_STREAM: &[(&str, &str)] = &[
    ("x-mock-stream-events", "25"),
    ("x-mock-stream-delay-ms", "200"),
];

/// `llmtape serve` with `[remote]` at `redis_url` and the upstream's
/// first-byte timeout (the longest anyone waits for an answer to begin).
async fn serve_with_deadline(
    dir: &Path,
    mock: &MockUpstream,
    store: &Path,
    redis_url: &str,
    first_byte: &str,
) -> Serve {
    let upstream = format!("[upstream]\nfirst_byte_timeout = \"{first_byte}\"\n\n");
    serve_remote_after(dir, mock, store, &upstream, redis_url, "", None).await
}

/// Waits (at most [`WAIT`]) until Redis holds a recording of `key` whose
/// body is `body`.
async fn wait_for_body(redis: &RedisServer, key: &str, body: &[u8]) {
    let name = redis_record_key("llmtape", key);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = redis.get(&name).await {
            if Recording::decode(value.into()).unwrap().body == body {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new recording of {key} in redis within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most [`WAIT`]) until `name` exists in Redis.
async fn wait_for_key(redis: &RedisServer, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !redis.cmd::<bool>(&[b"EXISTS", name.as_bytes()]).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} in redis within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn lease_name(key: &str) -> String {
    format!("{}:lease", redis_record_key("llmtape", key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_recording_on_a_is_what_b_serves_next_even_when_b_was_away() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let a = serve_remote(dir.path(), &mock, &dir.path().join("a"), &url, "", None).await;
    let b_store = dir.path().join("b");
    let mut b = serve_remote(dir.path(), &mock, &b_store, &url, "", None).await;

    let first = post(&a.url(CHAT_PATH), CHAT).await;
    let key = first.header("x-llmtape-key").unwrap().to_string();
    wait_for_body(&redis, &key, &first.body).await;
    let copy = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(copy.header("x-llmtape-tier"), Some("remote"));
    assert_eq!(copy.body, first.body);
    let held = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(
        held.header("x-llmtape-tier"),
        Some("local"),
        "B holds a copy"
    );

    // Re-recorded on A: B drops its copy for the new one.
    let second = post_with(&a.url(CHAT_PATH), CHAT, &[("cache-control", "no-cache")]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_ne!(second.body, first.body, "the mock answers anew");
    wait_for_body(&redis, &key, &second.body).await;
    wait_metric(&b, "llmtape_remote_replaced_total", 1).await;
    let next = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(next.cache(), "hit");
    assert_eq!(next.header("x-llmtape-tier"), Some("local"));
    assert_eq!(next.body, second.body, "B serves the re-recording");
    assert_eq!(mock.calls(), 2);

    // B not running while A re-records again: it catches up when it
    // starts (its store still holds the second recording).
    assert!(b.terminate().await.success());
    let third = post_with(&a.url(CHAT_PATH), CHAT, &[("cache-control", "no-cache")]).await;
    assert_ne!(third.body, second.body);
    wait_for_body(&redis, &key, &third.body).await;
    let b = serve_remote(dir.path(), &mock, &b_store, &url, "", None).await;
    wait_metric(&b, "llmtape_remote_replaced_total", 1).await;
    let caught_up = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(caught_up.header("x-llmtape-tier"), Some("local"));
    assert_eq!(caught_up.body, third.body, "B caught up at start");
    assert_eq!(mock.calls(), 3);
    // A's own announcements changed nothing on A.
    assert_eq!(metric(&a, "llmtape_remote_replaced_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_stream_is_taken_over_by_one_follower_within_the_deadline() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut proxies = Vec::new();
    for name in ["a", "b", "c"] {
        let store = dir.path().join(name);
        proxies.push(serve_with_deadline(dir.path(), &mock, &store, &url, "15s").await);
    }
    let mut leading = open_stream(&proxies[0].url(CHAT_PATH), STREAM_CHAT, TWO_SECOND_STREAM).await;
    assert_eq!(leading.status(), StatusCode::OK);
    let key = leading.headers()["x-llmtape-key"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        next_chunk(leading.body_mut()).await.unwrap().is_some(),
        "A is streaming"
    );
    wait_for_key(&redis, &lease_name(&key)).await;

    let started = Instant::now();
    let followers: Vec<_> = proxies[1..]
        .iter()
        .map(|p| {
            let url = p.url(CHAT_PATH);
            tokio::spawn(async move { post_with(&url, STREAM_CHAT, TWO_SECOND_STREAM).await })
        })
        .collect();
    // Killed without a chance to release its lease or finish its stream.
    let a = &mut proxies[0];
    let killed = a.signal("-KILL").await;
    assert!(!killed.success());
    assert!(
        read_all(leading.body_mut()).await.is_err(),
        "A's own client sees the stream cut"
    );

    let mut replies = Vec::new();
    for follower in followers {
        replies.push(follower.await.unwrap());
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "answered within the first-byte deadline, took {waited:?}"
    );
    assert!(mock.calls() <= 2, "{} upstream calls", mock.calls());
    assert_eq!(mock.calls(), 2, "the leader's, then one take-over");
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body, replies[0].body,
            "the take-over's answer for both"
        );
    }
    let outcomes: Vec<&str> = replies.iter().map(|r| r.cache()).collect();
    assert!(
        outcomes.contains(&"miss") && outcomes.contains(&"hit"),
        "{outcomes:?}"
    );
    assert!(String::from_utf8_lossy(&replies[0].body).contains("[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_lease_makes_one_upstream_call() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut proxies = Vec::new();
    for name in ["a", "b", "c"] {
        let store = dir.path().join(name);
        proxies.push(serve_remote(dir.path(), &mock, &store, &url, "", None).await);
    }
    // Only renewal keeps the lease through this stream.
    let mut leading =
        open_stream(&proxies[0].url(CHAT_PATH), STREAM_CHAT, FIVE_SECOND_STREAM).await;
    let key = leading.headers()["x-llmtape-key"]
        .to_str()
        .unwrap()
        .to_string();
    wait_for_key(&redis, &lease_name(&key)).await;
    let followers: Vec<_> = proxies[1..]
        .iter()
        .map(|p| {
            let url = p.url(CHAT_PATH);
            tokio::spawn(async move { post_with(&url, STREAM_CHAT, FIVE_SECOND_STREAM).await })
        })
        .collect();
    let body = read_all(leading.body_mut()).await.unwrap();
    for follower in followers {
        let reply = follower.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.cache(), "hit");
        assert_eq!(reply.header("x-llmtape-tier"), Some("remote"));
        assert_eq!(reply.body, body, "the leader's stream, byte for byte");
    }
    assert_eq!(mock.calls(), 1, "one upstream call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_proxy_waits_on_a_lease_it_cannot_take_and_local_followers_say_their_tier() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let a = serve_remote(dir.path(), &mock, &dir.path().join("a"), &url, "", None).await;
    let ci = serve_remote(
        dir.path(),
        &mock,
        &dir.path().join("ci"),
        &url,
        "access = \"read-only\"",
        None,
    )
    .await;
    let slow = [("x-mock-delay-ms", "1500")];
    let leader = {
        let url = a.url(CHAT_PATH);
        tokio::spawn(async move { post_with(&url, CHAT, &slow).await })
    };
    mock.wait_for_calls(1).await;
    // A second request on A joins A's own flight.
    let local_follower = {
        let url = a.url(CHAT_PATH);
        tokio::spawn(async move { post_with(&url, CHAT, &slow).await })
    };
    let leases: Vec<String> = redis.cmd(&[b"KEYS", b"*:lease"]).await;
    assert_eq!(leases.len(), 1, "A holds the lease: {leases:?}");
    let read_only = post_with(&ci.url(CHAT_PATH), CHAT, &slow).await;
    let leader = leader.await.unwrap();
    let local_follower = local_follower.await.unwrap();
    assert_eq!(leader.cache(), "miss");
    assert_eq!(read_only.cache(), "hit", "{}", ci.log());
    assert_eq!(read_only.header("x-llmtape-tier"), Some("remote"));
    assert_eq!(read_only.body, leader.body);
    assert_eq!(local_follower.cache(), "hit");
    assert_eq!(local_follower.header("x-llmtape-tier"), Some("local"));
    assert_eq!(local_follower.body, leader.body);
    assert_eq!(
        mock.calls(),
        1,
        "the read-only proxy did not ask the upstream"
    );
    assert_eq!(metric(&ci, "llmtape_remote_writes_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_reach_a_tls_redis_and_an_unknown_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.path().join("redis.crt");
    let key_path = dir.path().join("redis.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let Some(redis) = RedisServer::start_tls(&cert_path, &key_path).await else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mock = MockUpstream::start().await;
    let trusted = |store: &str| {
        let mut cmd = serve_cmd(dir.path(), &mock.url(), &dir.path().join(store));
        cmd.args(["--remote", &url])
            .env("SSL_CERT_FILE", &cert_path);
        cmd
    };
    let a = Serve::start(trusted("a")).await;
    // Up at start (its ping passed); polled, since on a loaded machine one
    // command past remote.timeout marks it down until the next succeeds.
    let deadline = tokio::time::Instant::now() + WAIT;
    while crate::remote::health_remote(&a).await != "up" {
        assert!(tokio::time::Instant::now() < deadline, "{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recorded = post(&a.url(CHAT_PATH), CHAT).await;
    assert_eq!(recorded.cache(), "miss");
    wait_metric(&a, "llmtape_remote_writes_total", 1).await;
    let b = Serve::start(trusted("b")).await;
    let replayed = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(
        replayed.header("x-llmtape-tier"),
        Some("remote"),
        "{}",
        b.log()
    );
    assert_eq!(replayed.body, recorded.body);
    assert_eq!(mock.calls(), 1);

    // Without the certificate among its roots, the proxy does not trust
    // this Redis: it starts, says so, and keeps to its local store.
    let mut cmd = serve_cmd(dir.path(), &mock.url(), &dir.path().join("c"));
    cmd.args(["--remote", &url])
        .env("SSL_CERT_FILE", dir.path().join("no-such-roots.pem"));
    let c = Serve::start(cmd).await;
    c.wait_for_log("shared store unreachable at start").await;
    assert_eq!(crate::remote::health_remote(&c).await, "down");
    let own = post(&c.url(CHAT_PATH), CHAT).await;
    assert_eq!(own.cache(), "miss");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_run_through_the_serve_that_holds_the_store() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let a_store = dir.path().join("a");
    let a = serve_remote(dir.path(), &mock, &a_store, &url, "", None).await;
    let recorded = post(&a.url(CHAT_PATH), CHAT).await;
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    wait_for_body(&redis, &key, &recorded.body).await;
    let _: () = redis.cmd(&[b"FLUSHALL"]).await;

    let pushed = run_in(
        dir.path(),
        &[
            "push",
            "--store",
            a_store.to_str().unwrap(),
            "--remote",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(pushed.code, 0, "{}", pushed.err());
    assert!(
        pushed.out().contains("pushed 1 recordings"),
        "{}",
        pushed.out()
    );
    wait_for_body(&redis, &key, &recorded.body).await;

    let b_store = dir.path().join("b");
    let b = serve_remote(dir.path(), &mock, &b_store, &url, "", None).await;
    // Every write to Redis is announced here, in order.
    let mut announced = redis::Client::open(url.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    announced.subscribe("{llmtape}:changed").await.unwrap();
    let pulled = run_in(
        dir.path(),
        &[
            "pull",
            "--store",
            b_store.to_str().unwrap(),
            "--remote",
            &url,
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
    let hit = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(
        hit.header("x-llmtape-tier"),
        Some("local"),
        "pulled into B's store"
    );
    assert_eq!(hit.body, recorded.body);
    assert_eq!(metric(&b, "llmtape_remote_hits_total").await, 0);
    assert_eq!(mock.calls(), 1);

    // What B pulled in is not pushed back: the first write B announces is
    // a recording of its own, made after the pull.
    let own = post(&b.url(CHAT_PATH), STREAM_CHAT).await;
    assert_eq!(own.cache(), "miss");
    let own_key = own.header("x-llmtape-key").unwrap().to_string();
    let message = tokio::time::timeout(
        WAIT,
        futures_util::StreamExt::next(&mut announced.on_message()),
    )
    .await
    .expect("an announcement in time")
    .unwrap();
    let payload: String = message.get_payload().unwrap();
    assert!(payload.starts_with(&own_key), "first announced: {payload}");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_lost_its_subscription_catches_up_from_the_change_list() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let a = serve_remote(dir.path(), &mock, &dir.path().join("a"), &url, "", None).await;
    let b = serve_remote(dir.path(), &mock, &dir.path().join("b"), &url, "", None).await;
    let first = post(&a.url(CHAT_PATH), CHAT).await;
    let key = first.header("x-llmtape-key").unwrap().to_string();
    let name = redis_record_key("llmtape", &key);
    let value = redis.wait_for(&name).await;
    assert_eq!(
        post(&b.url(CHAT_PATH), CHAT).await.header("x-llmtape-tier"),
        Some("remote")
    );

    // A newer recording lands in Redis with no announcement (as if sent
    // while B was not listening), then B's subscription is cut.
    let mut newer = Recording::decode(value.into()).unwrap();
    newer.meta.recorded_at = "2099-01-01T00:00:00.000Z".into();
    let body =
        String::from_utf8(newer.body.to_vec())
            .unwrap()
            .replacen("chatcmpl-", "chatcmpl-newer-", 1);
    assert_ne!(body.as_bytes(), &first.body[..], "the body changed");
    newer.body = body.clone().into();
    let at = "4070908800000"; // 2099-01-01 in ms
    let _: () = redis
        .cmd(&[b"ZADD", b"{llmtape}:changes", at.as_bytes(), key.as_bytes()])
        .await;
    let _: () = redis.cmd(&[b"SET", name.as_bytes(), &newer.encode()]).await;
    let untouched = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(untouched.body, first.body, "no announcement, no change yet");
    let _: () = redis.cmd(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]).await;

    wait_metric(&b, "llmtape_remote_replaced_total", 1).await;
    let caught_up = post(&b.url(CHAT_PATH), CHAT).await;
    assert_eq!(caught_up.header("x-llmtape-tier"), Some("local"));
    assert_eq!(
        caught_up.body,
        body.as_bytes(),
        "B caught up on reconnecting"
    );
    assert_eq!(mock.calls(), 1);
}
