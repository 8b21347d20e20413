//! The record-and-replay core, end to end over real sockets: llmtape on
//! 127.0.0.1:0 in front of the mock upstream in `support`.

use crate::support::*;
use http::{Method, StatusCode};

#[tokio::test]
async fn a_repeat_call_is_a_byte_identical_hit_with_one_upstream_call() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");

    let first = post(&url, CHAT).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.cache(), "miss");
    let key = first.header("x-llmtape-key").unwrap().to_string();
    assert_eq!(key.len(), 64);
    assert!(first.header("x-llmtape-recorded-at").is_none());

    let second = post(&url, CHAT).await;
    assert_eq!(second.cache(), "hit");
    assert_eq!(second.body, first.body, "replay must be byte for byte");
    assert_eq!(second.header("x-llmtape-key"), Some(key.as_str()));
    assert!(second
        .header("x-llmtape-recorded-at")
        .unwrap()
        .ends_with('Z'));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.header("x-request-id"), first.header("x-request-id"));
    assert!(
        second.header("set-cookie").is_none(),
        "cookies are never replayed"
    );
    assert_eq!(mock.calls(), 1, "the hit must not reach the upstream");

    // Semantically equal JSON (key order, whitespace, 0 vs 0.0) hits too.
    let reordered = r#"{ "temperature": 0.0, "seed": 42,
        "messages": [{"content": "Say hi", "role": "user"}], "model": "gpt-4o-mini" }"#;
    let third = post(&url, reordered).await;
    assert_eq!(third.cache(), "hit");
    assert_eq!(third.body, first.body);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_different_request_is_a_miss_with_a_fresh_answer() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let a = post(&url, CHAT).await;
    let b = post(&url, &CHAT.replace("\"seed\":42", "\"seed\":43")).await;
    assert_eq!(b.cache(), "miss");
    assert_ne!(a.body, b.body);
    assert_ne!(a.header("x-llmtape-key"), b.header("x-llmtape-key"));
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn the_ignored_user_field_does_not_split_the_cache() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    post(&url, CHAT).await;
    let with_user = CHAT.replace("\"seed\"", "\"user\":\"alice\",\"seed\"");
    assert_eq!(post(&url, &with_user).await.cache(), "hit");
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn every_cached_route_records_and_replays() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let posts = [
        ("/v1/chat/completions", CHAT),
        (
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}"#,
        ),
        (
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"hi"}"#,
        ),
        ("/v1/responses", r#"{"model":"gpt-4o-mini","input":"hi"}"#),
        ("/v1/moderations", r#"{"input":"hi"}"#),
        (
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-06-01",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        ),
    ];
    for (path, body) in posts {
        let first = post(&proxy.url(path), body).await;
        assert_eq!(first.cache(), "miss", "{path}");
        let second = post(&proxy.url(path), body).await;
        assert_eq!(second.cache(), "hit", "{path}");
        assert_eq!(second.body, first.body, "{path}");
    }
    let models = send(Method::GET, &proxy.url("/v1/models"), &[], "").await;
    assert_eq!(models.cache(), "miss");
    let again = send(Method::GET, &proxy.url("/v1/models"), &[], "").await;
    assert_eq!(again.cache(), "hit");
    assert_eq!(again.body, models.body);
    assert_eq!(mock.calls(), posts.len() + 1);
}

#[tokio::test]
async fn the_azure_api_version_is_part_of_the_key() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let path = "/openai/deployments/my-gpt/chat/completions";
    let a = post_with(
        &proxy.url(&format!("{path}?api-version=2024-06-01")),
        body,
        &[("api-key", "dummy")],
    )
    .await;
    let b = post_with(
        &proxy.url(&format!("{path}?api-version=2024-10-21")),
        body,
        &[("api-key", "dummy")],
    )
    .await;
    assert_eq!((a.cache(), b.cache()), ("miss", "miss"));
    assert_eq!(mock.calls(), 2);
    let seen = mock.seen();
    assert_eq!(
        seen[0].path_and_query,
        format!("{path}?api-version=2024-06-01")
    );
    assert_eq!(
        seen[0].headers.get("api-key").unwrap(),
        "dummy",
        "Azure's key is forwarded"
    );
}

#[tokio::test]
async fn uncached_routes_pass_through_untouched() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/files?purpose=batch");
    let a = post(&url, "file bytes").await;
    let b = post(&url, "file bytes").await;
    assert_eq!((a.cache(), b.cache()), ("bypass", "bypass"));
    assert_ne!(a.body, b.body);
    assert_eq!(mock.calls(), 2);
    let seen = mock.seen();
    assert_eq!(seen[0].path_and_query, "/v1/files?purpose=batch");
    assert_eq!(&seen[0].body[..], b"file bytes");
}

#[tokio::test]
async fn requests_are_forwarded_with_credentials_and_identity_encoding() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    post_with(
        &proxy.url("/v1/chat/completions"),
        CHAT,
        &[
            ("accept-encoding", "gzip, br"),
            ("x-llmtape-namespace", "suite"),
            ("connection", "keep-alive"),
        ],
    )
    .await;
    let seen = &mock.seen()[0];
    assert_eq!(seen.headers["authorization"], "Bearer sk-test-dummy");
    assert_eq!(seen.headers["accept-encoding"], "identity");
    assert!(seen.headers.get("x-llmtape-namespace").is_none());
    assert_eq!(
        &seen.body[..],
        CHAT.as_bytes(),
        "the body goes upstream as sent"
    );
}

#[tokio::test]
async fn api_key_env_replaces_the_callers_dummy_key() {
    // The key comes from the environment, which only a process of its own
    // may change.
    if ran_in_own_process(
        "proxy::api_key_env_replaces_the_callers_dummy_key",
        &[("LLMTAPE_IT_REAL_KEY", "sk-test-injected-dummy")],
    )
    .await
    {
        return;
    }
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(
        &mock.url(),
        "[upstream]\napi_key_env = \"LLMTAPE_IT_REAL_KEY\"\n",
    )
    .await;
    post(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(
        mock.seen()[0].headers["authorization"],
        "Bearer sk-test-injected-dummy"
    );
}

#[tokio::test]
async fn record_mode_always_forwards_and_keeps_history() {
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), "mode = \"record\"\n").await;
    let url = proxy.url("/v1/chat/completions");
    let a = post(&url, CHAT).await;
    let b = post(&url, CHAT).await;
    assert_eq!((a.cache(), b.cache()), ("miss", "miss"));
    assert_ne!(a.body, b.body);
    assert_eq!(mock.calls(), 2);
    // Auto mode per request now replays the newest recording.
    let c = post_with(&url, CHAT, &[("x-llmtape-mode", "auto")]).await;
    assert_eq!(c.cache(), "hit");
    assert_eq!(c.body, b.body);
    let key = RequestKey::from_hex(b.header("x-llmtape-key").unwrap()).unwrap();
    proxy.stop().await;
    let store = SledStore::open(&proxy.store_dir).unwrap();
    let history = store.history(&key).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body, a.body);
}

#[tokio::test]
async fn replay_mode_misses_with_404_and_never_calls_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "mode = \"replay\"\n").await;
    let url = proxy.url("/v1/chat/completions");
    let miss = post(&url, CHAT).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert_eq!(miss.cache(), "miss");
    let body = miss.json();
    assert_eq!(body["error"]["type"], "llmtape_miss");
    assert_eq!(body["error"]["code"], "replay_miss");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(miss.header("x-llmtape-key").unwrap()),
        "{message}"
    );
    assert!(message.contains("mode=replay"), "{message}");
    // no-cache does not make replay mode call out; nor does a stream.
    post_with(&url, CHAT, &[("cache-control", "no-cache")]).await;
    post(&url, &CHAT.replace("\"seed\"", "\"stream\":true,\"seed\"")).await;
    assert_eq!(mock.calls(), 0);

    // Record it through a per-request mode, then replay mode hits.
    let recorded = post_with(&url, CHAT, &[("x-llmtape-mode", "auto")]).await;
    assert_eq!(recorded.cache(), "miss");
    let hit = post(&url, CHAT).await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.body, recorded.body);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn passthrough_mode_stores_nothing() {
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), "mode = \"passthrough\"\n").await;
    let url = proxy.url("/v1/chat/completions");
    let a = post(&url, CHAT).await;
    let b = post(&url, CHAT).await;
    assert_eq!((a.cache(), b.cache()), ("bypass", "bypass"));
    assert_eq!(mock.calls(), 2);
    proxy.stop().await;
    assert!(SledStore::open(&proxy.store_dir).unwrap().is_empty());
}

#[tokio::test]
async fn the_mode_header_overrides_per_request_and_rejects_unknown_modes() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let bypass = post_with(&url, CHAT, &[("x-llmtape-mode", "passthrough")]).await;
    assert_eq!(bypass.cache(), "bypass");
    let replay = post_with(&url, CHAT, &[("x-llmtape-mode", "replay")]).await;
    assert_eq!(
        replay.status,
        StatusCode::NOT_FOUND,
        "passthrough stored nothing"
    );
    let bad = post_with(&url, CHAT, &[("x-llmtape-mode", "sometimes")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-llmtape-mode"));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn cache_control_no_cache_re_records() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let a = post(&url, CHAT).await;
    let b = post_with(&url, CHAT, &[("cache-control", "no-cache")]).await;
    assert_eq!(b.cache(), "miss");
    assert_ne!(a.body, b.body);
    let c = post(&url, CHAT).await;
    assert_eq!(c.cache(), "hit");
    assert_eq!(c.body, b.body, "the re-recording replaces the old one");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn namespaces_isolate_recordings() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let a = post_with(&url, CHAT, &[("x-llmtape-namespace", "suite-a")]).await;
    let b = post_with(&url, CHAT, &[("x-llmtape-namespace", "suite-b")]).await;
    assert_eq!((a.cache(), b.cache()), ("miss", "miss"));
    assert_eq!(
        post_with(&url, CHAT, &[("x-llmtape-namespace", "suite-a")])
            .await
            .body,
        a.body
    );
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn api_key_scope_partitions_by_caller_and_global_scope_does_not() {
    let mock = MockUpstream::start().await;
    let scoped = TestProxy::start(&mock.url(), "[key]\nscope = \"api-key\"\n").await;
    let url = scoped.url("/v1/chat/completions");
    post_with(&url, CHAT, &[("authorization", "Bearer sk-test-alice")]).await;
    let bob = post_with(&url, CHAT, &[("authorization", "Bearer sk-test-bob")]).await;
    assert_eq!(bob.cache(), "miss", "bob must not see alice's recording");
    let alice = post_with(&url, CHAT, &[("authorization", "Bearer sk-test-alice")]).await;
    assert_eq!(alice.cache(), "hit");

    let global = TestProxy::start(&mock.url(), "").await;
    let url = global.url("/v1/chat/completions");
    post_with(&url, CHAT, &[("authorization", "Bearer sk-test-real")]).await;
    let dummy = post_with(&url, CHAT, &[("authorization", "Bearer sk-test-dummy")]).await;
    assert_eq!(
        dummy.cache(),
        "hit",
        "a replay with a dummy key hits by default"
    );
}

#[tokio::test]
async fn upstream_errors_are_returned_and_not_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let failed = post_with(&url, CHAT, &[("x-mock-status", "500")]).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock error #1"));
    let limited = post_with(&url, CHAT, &[("x-mock-status", "429")]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let ok = post(&url, CHAT).await;
    assert_eq!((ok.status, ok.cache()), (StatusCode::OK, "miss"));
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn record_errors_true_records_errors() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[store]\nrecord_errors = true\n").await;
    let url = proxy.url("/v1/chat/completions");
    let failed = post_with(&url, CHAT, &[("x-mock-status", "400")]).await;
    let again = post(&url, CHAT).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.cache(), "hit");
    assert_eq!(again.body, failed.body);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_naming_it() {
    let closed = ClosedPort::new();
    let upstream = format!("http://127.0.0.1:{}", closed.addr.port());
    let mut proxy = TestProxy::start(&upstream, "").await;
    let reply = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&upstream));
    proxy.stop().await;
    assert!(SledStore::open(&proxy.store_dir).unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_nothing_is_stored() {
    let mock = MockUpstream::start().await;
    let mut proxy =
        TestProxy::start(&mock.url(), "[upstream]\nfirst_byte_timeout = \"200ms\"\n").await;
    let reply = post_with(
        &proxy.url("/v1/chat/completions"),
        CHAT,
        &[("x-mock-delay-ms", "5000")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&mock.url()));
    proxy.stop().await;
    assert!(SledStore::open(&proxy.store_dir).unwrap().is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_and_never_forwarded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[server]\nmax_body_bytes = 1024\n").await;
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2048)
    );
    let reply = post(&proxy.url("/v1/chat/completions"), &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn invalid_json_is_forwarded_as_is_and_keyed_as_bytes() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let a = post(&url, "{not json").await;
    assert_eq!(&mock.seen()[0].body[..], b"{not json");
    let b = post(&url, "{not json").await;
    assert_eq!((a.cache(), b.cache()), ("miss", "hit"));
    assert_eq!(post(&url, "{not  json").await.cache(), "miss");
}

#[tokio::test]
async fn a_corrupt_entry_is_a_miss_and_is_replaced() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store_dir).await;
    let first = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    let key = RequestKey::from_hex(first.header("x-llmtape-key").unwrap()).unwrap();
    proxy.stop().await;
    {
        let store = SledStore::open(&store_dir).unwrap();
        let raw = store.get(&key).unwrap().unwrap().encode();
        store.put_raw(&key, &raw[..raw.len() / 2]).unwrap();
        store.flush().unwrap();
    }
    let proxy = TestProxy::start_with_store(&mock.url(), "", &store_dir).await;
    let url = proxy.url("/v1/chat/completions");
    let again = post(&url, CHAT).await;
    assert_eq!((again.status, again.cache()), (StatusCode::OK, "miss"));
    assert_ne!(again.body, first.body);
    assert_eq!(
        post(&url, CHAT).await.cache(),
        "hit",
        "the re-recording replaced it"
    );
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn a_lost_or_damaged_replay_tape_loses_no_recording() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let tape = store_dir.join(llmtape::store::response_log::RESPONSE_LOG_FILE);
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store_dir).await;
    let chat = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    let stream = post(&proxy.url("/v1/chat/completions"), STREAM_CHAT).await;
    proxy.stop().await;
    assert!(
        std::fs::metadata(&tape).unwrap().len() > 0,
        "hits are on the tape"
    );

    // Damaged: every byte flipped. Then lost: deleted. Each time the
    // recordings replay byte for byte (from the entries) and the tape heals.
    for damage in ["flip", "delete"] {
        match damage {
            "flip" => {
                let bytes: Vec<u8> = std::fs::read(&tape).unwrap().iter().map(|b| !b).collect();
                std::fs::write(&tape, bytes).unwrap();
            }
            _ => std::fs::remove_file(&tape).unwrap(),
        }
        let mut proxy =
            TestProxy::start_with_store(&mock.url(), "mode = \"replay\"\n", &store_dir).await;
        let url = proxy.url("/v1/chat/completions");
        for (request, recorded) in [(CHAT, &chat), (STREAM_CHAT, &stream)] {
            let hit = post(&url, request).await;
            assert_eq!(
                (hit.status, hit.cache()),
                (StatusCode::OK, "hit"),
                "{damage}"
            );
            assert_eq!(hit.body, recorded.body, "{damage}: byte for byte");
        }
        proxy.stop().await;
    }
    assert_eq!(mock.calls(), 2, "nothing was asked of the upstream again");
    let store = SledStore::open(&store_dir).unwrap();
    let key = RequestKey::from_hex(chat.header("x-llmtape-key").unwrap()).unwrap();
    assert_eq!(
        &store.replayable(&key).unwrap().unwrap().body[..],
        &chat.body[..],
        "the healed tape serves the recording"
    );
}

#[tokio::test]
async fn recordings_survive_a_restart() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store_dir).await;
    let first = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    proxy.stop().await;
    let proxy = TestProxy::start_with_store(&mock.url(), "mode = \"replay\"\n", &store_dir).await;
    let hit = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.body, first.body);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn the_recording_holds_fingerprint_model_request_and_latency() {
    let mock = MockUpstream::start().await;
    mock.set_fingerprint("fp_planted_42");
    let mut proxy = TestProxy::start(&mock.url(), "").await;
    let reply = post(
        &proxy.url("/v1/chat/completions"),
        &CHAT.replace("\"seed\"", "\"user\":\"alice\",\"seed\""),
    )
    .await;
    let key = RequestKey::from_hex(reply.header("x-llmtape-key").unwrap()).unwrap();
    proxy.stop().await;
    let store = SledStore::open(&proxy.store_dir).unwrap();
    let entry = store.get(&key).unwrap().unwrap();
    assert_eq!(
        entry.meta.system_fingerprint.as_deref(),
        Some("fp_planted_42")
    );
    assert_eq!(entry.meta.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(entry.meta.request.path, "/v1/chat/completions");
    assert_eq!(entry.body, reply.body);
    let RequestBody::Json(body) = &entry.meta.request.body else {
        panic!("request body should be JSON");
    };
    assert_eq!(body["seed"], 42);
    assert!(body.get("user").is_none(), "ignored fields are not stored");
    assert!(entry.meta.recorded_at.ends_with('Z'));
    let names: Vec<&str> = entry
        .meta
        .response
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(names.contains(&"x-request-id"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("x-llmtape-") || *n == "set-cookie"),
        "llmtape's own headers and cookies are not part of the recording: {names:?}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_store() {
    const SECRET: &str = concat!("sk-", "test-dummy-DISTINCTIVE-7f3a9c");
    const COOKIE: &str = "session-DISTINCTIVE-c00k1e";
    const EXTRA: &str = "extra-DISTINCTIVE-h3ad3r";
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), "[redact]\nheaders = [\"x-team-token\"]\n").await;
    let bearer = format!("Bearer {SECRET}");
    let cookie = format!("sid={COOKIE}");
    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        let reply = post_with(
            &proxy.url(path),
            r#"{"model":"m","input":"hi","messages":[]}"#,
            &[
                ("authorization", &bearer),
                ("api-key", SECRET),
                ("cookie", &cookie),
                ("x-team-token", EXTRA),
            ],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The upstream got the credential (so the secret really passed through).
    assert_eq!(mock.seen()[0].headers["authorization"], bearer.as_str());
    proxy.stop().await;
    let files = all_files(&proxy.store_dir);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [SECRET, COOKIE, EXTRA, "mock-cookie-secret"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in {}",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn the_health_endpoint_answers_without_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let health = send(Method::GET, &proxy.url("/_llmtape/health"), &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let unknown = send(Method::GET, &proxy.url("/_llmtape/nope"), &[], "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(mock.calls(), 0);
}

/// One request over HTTP/2 with prior knowledge (no TLS, no upgrade) on
/// a connection of its own: (status, x-llmtape-cache, body).
async fn post_h2c(proxy: &TestProxy, body: &'static str) -> (StatusCode, String, bytes::Bytes) {
    use http_body_util::BodyExt;
    let socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(socket),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/v1/chat/completions", proxy.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status();
    let cache = response.headers()["x-llmtape-cache"]
        .to_str()
        .unwrap()
        .to_string();
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    (status, cache, body)
}

#[tokio::test]
async fn http2_with_prior_knowledge_and_http1_share_the_plain_port_and_the_store() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let (status, cache, first) = post_h2c(&proxy, CHAT).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "miss"));
    let (status, cache, second) = post_h2c(&proxy, CHAT).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "hit"));
    assert_eq!(second, first, "the replay is byte for byte");
    // HTTP/1.1 on the same port gets the same recording.
    let third = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(third.cache(), "hit");
    assert_eq!(third.body, first);
    assert_eq!(mock.calls(), 1);
    // A method that starts like the preface ("PR...") is still HTTP/1.
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket
        .write_all(b"PROPFIND /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
}
