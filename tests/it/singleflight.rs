//! Single-flight: identical concurrent misses go upstream once.

use crate::support::*;
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_concurrent_misses_make_one_upstream_call() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    // The delay makes the requests overlap; the count below holds however
    // they interleave, because a flight lands only after its recording is
    // committed, so a late request finds the recording instead.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post_with(&url, CHAT, &[("x-mock-delay-ms", "300")]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    assert_eq!(
        mock.calls(),
        1,
        "one upstream call for 50 identical requests"
    );
    let misses = replies.iter().filter(|r| r.cache() == "miss").count();
    assert_eq!(misses, 1);
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, replies[0].body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_of_a_stream_get_the_events_so_far_then_the_rest() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let leader = open_stream(&url, STREAM_CHAT, &[("x-mock-stream-gate", "1")]).await;
    assert_eq!(leader.headers()["x-llmtape-cache"], "miss");
    let mut leader_body = leader.into_body();
    let first = next_chunk(&mut leader_body).await.unwrap().unwrap();
    // The upstream is now held after its first event: these requests can
    // only be answered by joining the leader's flight.
    let mut followers = Vec::new();
    for _ in 0..9 {
        let response = open_stream(&url, STREAM_CHAT, &[]).await;
        assert_eq!(response.headers()["x-llmtape-cache"], "hit");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        followers.push(response.into_body());
    }
    let mut follower_first = Vec::new();
    for body in &mut followers {
        follower_first.push(next_chunk(body).await.unwrap().unwrap());
    }
    assert!(
        follower_first.iter().all(|c| *c == first),
        "joiners get the events so far"
    );
    mock.open_gate(3);
    let mut expected = first.to_vec();
    expected.extend(read_all(&mut leader_body).await.unwrap());
    for (mut body, first) in followers.into_iter().zip(follower_first) {
        let mut got = first.to_vec();
        got.extend(read_all(&mut body).await.unwrap());
        assert_eq!(got, expected);
    }
    assert_eq!(mock.calls(), 1);
    assert_eq!(
        post(&url, STREAM_CHAT).await.body,
        expected,
        "and it was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_share_the_leaders_error_and_nothing_is_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                post_with(
                    &url,
                    CHAT,
                    &[("x-mock-delay-ms", "300"), ("x-mock-status", "503")],
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let calls = mock.calls();
    assert!((1..=5).contains(&calls), "{calls}");
    let replay = post_with(&url, CHAT, &[("x-llmtape-mode", "replay")]).await;
    assert_eq!(
        replay.status,
        StatusCode::NOT_FOUND,
        "errors are never recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_mode_and_no_cache_requests_are_not_shared() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            let header = if i % 2 == 0 {
                ("x-llmtape-mode", "record")
            } else {
                ("cache-control", "no-cache")
            };
            tokio::spawn(async move {
                post_with(&url, CHAT, &[("x-mock-delay-ms", "200"), header]).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().cache(), "miss");
    }
    assert_eq!(mock.calls(), 6, "each asked for a fresh answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_namespaces_are_not_coalesced() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[key]\nsampling_namespaces = [\"probe\"]\n").await;
    let url = proxy.url("/v1/chat/completions");
    let headers = [
        ("x-mock-stream-gate", "1"),
        ("x-llmtape-namespace", "probe"),
    ];
    // The first stream is held after its first event, so it is neither
    // recorded nor finished: a coalescing proxy would make the second a
    // follower. In a sampling namespace it must go upstream itself.
    let first = open_stream(&url, STREAM_CHAT, &headers).await;
    let second = open_stream(&url, STREAM_CHAT, &headers).await;
    assert_eq!(second.headers()["x-llmtape-cache"], "miss");
    assert_eq!(mock.calls(), 2);
    mock.open_gate(6);
    for response in [first, second] {
        let mut body = response.into_body();
        assert!(read_all(&mut body)
            .await
            .unwrap()
            .ends_with(b"data: [DONE]\n\n"));
    }
}
