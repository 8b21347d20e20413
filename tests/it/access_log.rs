//! The access log is written in batches (`llmtape::logs`): one write per
//! interval, not one per request. These tests guard what batching must
//! not cost: a clean stop (SIGTERM or SIGINT) loses no request line, and a
//! running server's lines still reach stderr without a stop.

use crate::support::*;

/// Requests per test: enough that many lines wait in a batch together.
const REQUESTS: usize = 300;

/// Lines of serve's log that are request lines.
fn request_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" request ")).count()
}

/// Sends REQUESTS chat requests (the first a miss, the rest hits), stops
/// serve with `signal` and counts its request lines.
async fn no_line_lost_on(signal: &str) {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // The default log level: one info line per request.
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    let url = serve.url("/v1/chat/completions");
    for i in 0..REQUESTS {
        let reply = post(&url, CHAT).await;
        assert_eq!(reply.status, 200, "request {i}");
    }
    assert!(serve.signal(signal).await.success(), "serve stops cleanly");
    let log = serve.log();
    assert_eq!(
        request_lines(&log),
        REQUESTS,
        "one request line per request after {signal}; the log:\n{log}"
    );
    assert!(log.contains("store flushed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_on_sigterm_loses_no_request_line() {
    no_line_lost_on("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_on_sigint_loses_no_request_line() {
    no_line_lost_on("-INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_reach_stderr_while_serving() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    post(&serve.url("/v1/chat/completions"), CHAT).await;
    // Within the flush interval, with no stop to force it.
    serve.wait_for_log(" request ").await;
    assert!(serve.terminate().await.success());
}
