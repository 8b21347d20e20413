//! Server-sent-event streams: forwarded live, recorded on the side,
//! committed only when whole, replayed byte for byte (instantly or paced).

use std::time::{Duration, Instant};

use crate::support::*;
use http::StatusCode;

/// Asks llmtape, in replay mode, whether a recording exists for `body`.
async fn is_recorded(proxy: &TestProxy, path: &str, body: &str) -> bool {
    let reply = post_with(&proxy.url(path), body, &[("x-llmtape-mode", "replay")]).await;
    match reply.status {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("unexpected status {other}"),
    }
}

/// The stored entry for `key`, after stopping the proxy.
async fn stored(proxy: &mut TestProxy, key: &str) -> Option<Recording> {
    proxy.stop().await;
    let store = SledStore::open(&proxy.store_dir).unwrap();
    store.get(&RequestKey::from_hex(key).unwrap()).unwrap()
}

#[tokio::test]
async fn events_reach_the_client_before_the_upstream_sends_the_next() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let response = open_stream(&url, STREAM_CHAT, &[("x-mock-stream-gate", "1")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-llmtape-cache"], "miss");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.into_body();
    let mut received = Vec::new();
    // The mock sends each event after the first only when the gate opens,
    // so each chunk read here proves the proxy did not wait for the rest.
    let first = next_chunk(&mut body).await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {\"id\":\"chatcmpl-mock-1\""));
    assert_eq!(
        mock.events_sent(),
        1,
        "the client got event 1 while the upstream had sent only event 1"
    );
    received.extend_from_slice(&first);
    for sent_before in 2..=4 {
        mock.open_gate(1);
        let chunk = next_chunk(&mut body).await.unwrap().unwrap();
        assert_eq!(mock.events_sent(), sent_before);
        received.extend_from_slice(&chunk);
    }
    assert_eq!(next_chunk(&mut body).await.unwrap(), None);
    assert!(received.ends_with(b"data: [DONE]\n\n"));

    let replay = post(&url, STREAM_CHAT).await;
    assert_eq!(replay.cache(), "hit");
    assert_eq!(
        &replay.body[..],
        &received[..],
        "the replay is byte-identical"
    );
    assert!(replay
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(replay.header("x-request-id"), Some("req_mock_1"));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn the_recording_holds_events_offsets_fingerprint_and_usage() {
    let mock = MockUpstream::start().await;
    mock.set_fingerprint("fp_stream_9");
    let mut proxy = TestProxy::start(&mock.url(), "").await;
    let body = STREAM_CHAT.replace(
        "\"stream\":true",
        "\"stream\":true,\"stream_options\":{\"include_usage\":true}",
    );
    let first = post_with(
        &proxy.url("/v1/chat/completions"),
        &body,
        &[("x-mock-stream-events", "4")],
    )
    .await;
    let key = first.header("x-llmtape-key").unwrap().to_string();
    let entry = stored(&mut proxy, &key).await.expect("recorded");
    assert_eq!(entry.body, first.body);
    assert_eq!(
        entry.meta.system_fingerprint.as_deref(),
        Some("fp_stream_9")
    );
    assert_eq!(entry.meta.model.as_deref(), Some("gpt-4o-mini"));
    let events = entry.events();
    assert_eq!(events.len(), 4 + 1 + 1, "4 chunks, the usage chunk, [DONE]");
    assert!(std::str::from_utf8(&events[4].1)
        .unwrap()
        .contains("\"usage\""));
    let offsets: Vec<u64> = events.iter().map(|(o, _)| *o).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
}

#[tokio::test]
async fn events_split_across_reads_are_reassembled() {
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let first = post_with(&url, STREAM_CHAT, &[("x-mock-stream-split", "1")]).await;
    assert_eq!(post(&url, STREAM_CHAT).await.body, first.body);
    let key = first.header("x-llmtape-key").unwrap().to_string();
    let entry = stored(&mut proxy, &key).await.unwrap();
    let events = entry.events();
    assert_eq!(events.len(), 4, "3 chunks and [DONE], each whole");
    for (_, event) in &events {
        assert!(
            event.starts_with(b"data: ") && event.ends_with(b"\n\n"),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn recorded_timing_reproduces_the_gaps_and_instant_does_not_wait() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let gap = 150u64;
    let first = post_with(
        &url,
        STREAM_CHAT,
        &[("x-mock-stream-delay-ms", &gap.to_string())],
    )
    .await;

    let response = open_stream(
        &url,
        STREAM_CHAT,
        &[("x-llmtape-replay-timing", "recorded")],
    )
    .await;
    assert_eq!(response.headers()["x-llmtape-cache"], "hit");
    let start = Instant::now();
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await.unwrap() {
        arrivals.push(start.elapsed());
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(&bytes[..], &first.body[..]);
    assert_eq!(arrivals.len(), 4, "one frame per event");
    // Three gaps of `gap` ms were recorded; pacing can only add delay, so
    // the lower bound is strict and the upper bound generous.
    let span = arrivals[3] - arrivals[0];
    assert!(span >= Duration::from_millis(3 * gap - 30), "{arrivals:?}");
    assert!(span < Duration::from_millis(3 * gap + 2000), "{arrivals:?}");

    let instant = open_stream(&url, STREAM_CHAT, &[]).await;
    let mut body = instant.into_body();
    assert_eq!(&read_all(&mut body).await.unwrap()[..], &first.body[..]);
    let bad = post_with(&url, STREAM_CHAT, &[("x-llmtape-replay-timing", "slowly")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn the_configured_timing_applies_without_the_header() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[replay]\ntiming = \"recorded\"\n").await;
    let url = proxy.url("/v1/chat/completions");
    post_with(&url, STREAM_CHAT, &[("x-mock-stream-delay-ms", "100")]).await;
    let start = Instant::now();
    let replay = post(&url, STREAM_CHAT).await;
    assert_eq!(replay.cache(), "hit");
    assert!(
        start.elapsed() >= Duration::from_millis(270),
        "paced replay took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_cut_stream_is_not_recorded_and_the_client_sees_the_cut() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let response = open_stream(&url, STREAM_CHAT, &[("x-mock-stream-end", "cut")]).await;
    let mut body = response.into_body();
    assert!(
        read_all(&mut body).await.is_err(),
        "the client must see the stream break"
    );
    assert!(!is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await);
}

#[tokio::test]
async fn a_stream_without_its_final_event_is_not_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let reply = post_with(
        &proxy.url("/v1/chat/completions"),
        STREAM_CHAT,
        &[("x-mock-stream-end", "none")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await);
}

#[tokio::test]
async fn an_error_event_spoils_the_recording() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let reply = post_with(
        &proxy.url("/v1/chat/completions"),
        STREAM_CHAT,
        &[("x-mock-stream-end", "error")],
    )
    .await;
    assert!(
        std::str::from_utf8(&reply.body)
            .unwrap()
            .contains("mock overloaded"),
        "forwarded as sent"
    );
    assert!(!is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await);
    // The next call goes upstream again and, ending cleanly, is recorded.
    assert_eq!(
        post(&proxy.url("/v1/chat/completions"), STREAM_CHAT)
            .await
            .cache(),
        "miss"
    );
    assert!(is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await);
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_the_stream_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    {
        let response = open_stream(&url, STREAM_CHAT, &[("x-mock-stream-gate", "1")]).await;
        let mut body = response.into_body();
        next_chunk(&mut body).await.unwrap().unwrap();
        // Dropping the body closes the client's connection mid-stream.
    }
    assert!(
        !is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await,
        "not whole yet"
    );
    mock.open_gate(3);
    let deadline = Instant::now() + WAIT;
    while !is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await {
        assert!(
            Instant::now() < deadline,
            "the drained stream was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replay = post(&url, STREAM_CHAT).await;
    assert!(replay.body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(mock.events_sent(), 4);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout_and_is_not_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[upstream]\nidle_timeout = \"200ms\"\n").await;
    let url = proxy.url("/v1/chat/completions");
    // The gate never opens: the upstream stalls after the first event.
    let response = open_stream(&url, STREAM_CHAT, &[("x-mock-stream-gate", "1")]).await;
    let mut body = response.into_body();
    assert!(next_chunk(&mut body).await.unwrap().is_some());
    assert!(
        read_all(&mut body).await.is_err(),
        "the stall must end the stream with an error"
    );
    assert!(!is_recorded(&proxy, "/v1/chat/completions", STREAM_CHAT).await);
}

#[tokio::test]
async fn responses_api_named_events_round_trip() {
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/responses");
    let body = r#"{"model":"gpt-4.1-mini","input":"Count","stream":true}"#;
    let first = post(&url, body).await;
    let text = std::str::from_utf8(&first.body).unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.contains("event: response.completed\n"), "{text}");
    let second = post(&url, body).await;
    assert_eq!(second.cache(), "hit");
    assert_eq!(second.body, first.body);
    let key = first.header("x-llmtape-key").unwrap().to_string();
    let entry = stored(&mut proxy, &key).await.unwrap();
    assert_eq!(entry.meta.model.as_deref(), Some("gpt-4.1-mini"));
    assert_eq!(entry.events().len(), 5);
}

#[tokio::test]
async fn a_responses_stream_without_completed_is_not_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let body = r#"{"model":"gpt-4.1-mini","input":"Count","stream":true}"#;
    post_with(
        &proxy.url("/v1/responses"),
        body,
        &[("x-mock-stream-end", "none")],
    )
    .await;
    assert!(!is_recorded(&proxy, "/v1/responses", body).await);
}

#[tokio::test]
async fn legacy_completions_and_azure_streams_record_and_replay() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let cases = [
        (
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Count","stream":true}"#,
        ),
        (
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-06-01",
            r#"{"messages":[{"role":"user","content":"Count"}],"stream":true}"#,
        ),
    ];
    for (path, body) in cases {
        let first = post(&proxy.url(path), body).await;
        assert_eq!(first.cache(), "miss", "{path}");
        assert!(first.body.ends_with(b"data: [DONE]\n\n"), "{path}");
        let second = post(&proxy.url(path), body).await;
        assert_eq!(second.cache(), "hit", "{path}");
        assert_eq!(second.body, first.body, "{path}");
    }
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn stream_and_non_stream_requests_have_different_recordings() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let streamed = post(&url, STREAM_CHAT).await;
    let plain = post(&url, &STREAM_CHAT.replace(",\"stream\":true", "")).await;
    assert_eq!(plain.cache(), "miss");
    assert_ne!(
        streamed.header("x-llmtape-key"),
        plain.header("x-llmtape-key")
    );
    assert_eq!(plain.header("content-type"), Some("application/json"));
}
