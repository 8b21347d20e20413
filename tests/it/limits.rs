//! Limits and operations: in-flight cap, recording cap, header size,
//! metrics, and admin endpoints closed to non-loopback clients.

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use llmtape::config::Config;
use llmtape::serve::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_in_flight_requests_get_503_with_retry_after() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[server]\nmax_in_flight = 2\n").await;
    let url = proxy.url("/v1/chat/completions");
    let held: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            let body = CHAT.replace("Say hi", &format!("held {i}"));
            // Held by the mock until released below, however slow the
            // machine: both are in flight when the third request comes.
            tokio::spawn(async move { post_with(&url, &body, &[("x-mock-hold", "1")]).await })
        })
        .collect();
    mock.wait_for_calls(2).await;
    let refused = post(&url, CHAT).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["error"]["code"], "too_many_in_flight");
    mock.release(2);
    for task in held {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(post(&url, CHAT).await.status, StatusCode::OK, "room again");
}

#[tokio::test]
async fn answers_over_the_recording_cap_are_forwarded_whole_but_not_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[store]\nmax_recorded_bytes = 100\n").await;
    let url = proxy.url("/v1/chat/completions");
    let big = post(&url, CHAT).await;
    assert_eq!(big.status, StatusCode::OK);
    assert!(big.body.len() > 100);
    assert!(big.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("reply #"));
    assert_eq!(
        big.header("x-llmtape-not-recorded"),
        Some("response larger than store.max_recorded_bytes")
    );
    let stream = post(&url, STREAM_CHAT).await;
    assert!(
        stream.body.ends_with(b"data: [DONE]\n\n"),
        "forwarded whole"
    );
    for body in [CHAT, STREAM_CHAT] {
        let replay = post_with(&url, body, &[("x-llmtape-mode", "replay")]).await;
        assert_eq!(replay.status, StatusCode::NOT_FOUND, "not recorded");
    }
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[server]\nmax_header_bytes = 8192\n").await;
    let huge = "x".repeat(20_000);
    let client = http_client();
    let request = Request::post(proxy.url("/v1/chat/completions"))
        .header("x-big", huge)
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    match tokio::time::timeout(WAIT, client.request(request))
        .await
        .unwrap()
    {
        Ok(response) => assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(error) => panic!("expected a 431 answer, got {error}"),
    }
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn metrics_count_outcomes_recordings_and_latency() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    post(&url, CHAT).await;
    post(&url, CHAT).await;
    post(&url, CHAT).await;
    post_with(
        &url,
        &CHAT.replace("hi", "bye"),
        &[("x-mock-status", "500")],
    )
    .await;
    send(Method::POST, &proxy.url("/v1/files"), &[], "x").await;
    let metrics = send(Method::GET, &proxy.url("/_llmtape/metrics"), &[], "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for line in [
        "llmtape_requests_total{outcome=\"hit\"} 2",
        "llmtape_requests_total{outcome=\"miss\"} 2",
        "llmtape_requests_total{outcome=\"bypass\"} 1",
        "llmtape_recordings_total 1",
        "llmtape_upstream_responses_total{status=\"200\"} 1",
        "llmtape_upstream_responses_total{status=\"500\"} 1",
        "llmtape_hit_seconds_count 2",
        "llmtape_upstream_seconds_count 2",
        "llmtape_store_recordings 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

async fn proxy_in_process(toml: &str, dir: &std::path::Path) -> Proxy {
    let mut config = Config::from_toml(toml).unwrap();
    config.store.path = dir.join("store");
    Proxy::new(
        &config,
        std::sync::Arc::new(SledStore::open(&config.store.path).unwrap()),
    )
    .unwrap()
}

async fn admin_status(proxy: &Proxy, peer: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::get("/_llmtape/health");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(Full::new(Bytes::new())).unwrap();
    // Tagged as the server tags it.
    llmtape::serve::admin::tag_peer(&mut request, peer.parse().unwrap());
    let response = proxy.handle(request).await;
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn admin_endpoints_answer_loopback_only_unless_a_token_is_given() {
    // The token comes from the environment, which only a process of its
    // own may change.
    if ran_in_own_process(
        "limits::admin_endpoints_answer_loopback_only_unless_a_token_is_given",
        &[("LLMTAPE_LIMITS_TEST_ADMIN_TOKEN", "admin-test-dummy-token")],
    )
    .await
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let open = proxy_in_process("", dir.path()).await;
    assert_eq!(
        admin_status(&open, "127.0.0.1:5000", None).await,
        StatusCode::OK
    );
    assert_eq!(
        admin_status(&open, "[::1]:5000", None).await,
        StatusCode::OK
    );
    assert_eq!(
        admin_status(&open, "192.0.2.7:5000", None).await,
        StatusCode::FORBIDDEN
    );
    drop(open);

    let dir = tempfile::tempdir().unwrap();
    let guarded = proxy_in_process(
        "[server]\nadmin_token_env = \"LLMTAPE_LIMITS_TEST_ADMIN_TOKEN\"\n",
        dir.path(),
    )
    .await;
    assert_eq!(
        admin_status(&guarded, "192.0.2.7:5000", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin_status(&guarded, "192.0.2.7:5000", Some("wrong")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin_status(&guarded, "192.0.2.7:5000", Some("admin-test-dummy-token")).await,
        StatusCode::OK
    );
}

#[test]
fn every_limit_is_configurable_and_validated() {
    let config = Config::from_toml(
        "[server]\nmax_in_flight = 7\nmax_header_bytes = 16384\n[store]\nmax_recorded_bytes = 1000\n",
    )
    .unwrap();
    assert_eq!(config.server.max_in_flight, 7);
    assert_eq!(config.server.max_header_bytes, 16384);
    assert_eq!(config.store.max_recorded_bytes, 1000);
    let err = Config::from_toml("[server]\nmax_in_flight = 0\nmax_header_bytes = 100\nadmin_token_env = \"LLMTAPE_SURELY_UNSET_TOKEN\"\n")
        .unwrap_err()
        .to_string();
    for needle in [
        "server.max_in_flight",
        "server.max_header_bytes",
        "LLMTAPE_SURELY_UNSET_TOKEN",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
