//! Repeat sequences end to end, in front of the mock whose answer changes
//! on every call: the Nth identical request in a run replays the Nth
//! recording.

use crate::support::*;
use http::{Method, StatusCode};

const SEQUENCE: (&str, &str) = ("x-llmtape-repeats", "sequence");

fn content(reply: &Reply) -> String {
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn record_three_replay_three_in_order_and_the_fourth_is_a_miss() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    let url = proxy.url("/v1/chat/completions");
    let mut recorded = Vec::new();
    for call in 1..=3 {
        let reply = post_with(&url, CHAT, &[SEQUENCE]).await;
        assert_eq!(reply.cache(), "miss");
        assert_eq!(
            reply.header("x-llmtape-call"),
            Some(call.to_string().as_str())
        );
        recorded.push(reply);
    }
    assert_eq!(mock.calls(), 3, "identical sequence calls each go upstream");
    let answers: Vec<String> = recorded.iter().map(content).collect();
    assert_eq!(answers, ["reply #1", "reply #2", "reply #3"]);
    // The first call has the plain key; the others their own.
    let plain = post(&url, CHAT).await;
    assert_eq!(plain.cache(), "hit");
    assert_eq!(plain.body, recorded[0].body);
    assert_eq!(
        plain.header("x-llmtape-key"),
        recorded[0].header("x-llmtape-key")
    );
    assert_ne!(
        recorded[1].header("x-llmtape-key"),
        recorded[0].header("x-llmtape-key")
    );
    proxy.stop().await;

    let mut proxy = TestProxy::start_with_store(&mock.url(), "mode = \"replay\"\n", &store).await;
    let url = proxy.url("/v1/chat/completions");
    for (call, original) in recorded.iter().enumerate() {
        let reply = post_with(&url, CHAT, &[SEQUENCE]).await;
        assert_eq!(reply.cache(), "hit");
        assert_eq!(reply.body, original.body, "call {}", call + 1);
        assert_eq!(
            reply.header("x-llmtape-call"),
            Some((call + 1).to_string().as_str())
        );
    }
    let fourth = post_with(&url, CHAT, &[SEQUENCE]).await;
    assert_eq!(fourth.status, StatusCode::NOT_FOUND);
    assert_eq!(fourth.cache(), "miss");
    assert_eq!(fourth.header("x-llmtape-call"), Some("4"));
    let error = &fourth.json()["error"];
    assert_eq!(error["type"], "llmtape_miss");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("call 4 of this request"), "{message}");
    assert!(message.contains("3 of its calls are recorded"), "{message}");
    assert!(message.contains("/_llmtape/runs/ID/reset"), "{message}");
    assert_eq!(mock.calls(), 3, "replay never calls the upstream");

    // Resetting the default run starts the count again.
    let reset = send(
        Method::POST,
        &proxy.url("/_llmtape/runs/default/reset"),
        &[],
        "",
    )
    .await;
    assert_eq!(reset.status, StatusCode::OK);
    let again = post_with(&url, CHAT, &[SEQUENCE]).await;
    assert_eq!(again.header("x-llmtape-call"), Some("1"));
    assert_eq!(again.body, recorded[0].body);
    proxy.stop().await;
}

#[tokio::test]
async fn runs_count_apart_and_auto_records_a_call_beyond_those_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[key]\nrepeats = \"sequence\"\n").await;
    let url = proxy.url("/v1/chat/completions");
    let run = |id: &'static str| [("x-llmtape-run", id)];
    let a1 = post_with(&url, CHAT, &run("a")).await;
    let a2 = post_with(&url, CHAT, &run("a")).await;
    assert_eq!((a1.cache(), a2.cache()), ("miss", "miss"));
    // Run b replays run a's recordings in order, then records a third.
    let b1 = post_with(&url, CHAT, &run("b")).await;
    let b2 = post_with(&url, CHAT, &run("b")).await;
    let b3 = post_with(&url, CHAT, &run("b")).await;
    assert_eq!((b1.cache(), b2.cache(), b3.cache()), ("hit", "hit", "miss"));
    assert_eq!(
        (b1.body.clone(), b2.body.clone()),
        (a1.body.clone(), a2.body.clone())
    );
    assert_eq!(content(&b3), "reply #3");
    assert_eq!(mock.calls(), 3);
    // `same` for one request overrides the config: always the first.
    let same = post_with(&url, CHAT, &[("x-llmtape-repeats", "same")]).await;
    assert_eq!(same.body, a1.body);
    assert!(same.header("x-llmtape-call").is_none());
    let bad = post_with(&url, CHAT, &[("x-llmtape-repeats", "twice")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Reset is POST only.
    let get = send(Method::GET, &proxy.url("/_llmtape/runs/b/reset"), &[], "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_plain_recording_answers_the_first_call_of_a_sequence() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let plain = post(&url, CHAT).await;
    let first = post_with(&url, CHAT, &[SEQUENCE, ("x-llmtape-run", "r")]).await;
    assert_eq!(first.cache(), "hit");
    assert_eq!(first.body, plain.body);
    let second = post_with(
        &url,
        CHAT,
        &[
            SEQUENCE,
            ("x-llmtape-run", "r"),
            ("x-llmtape-mode", "replay"),
        ],
    )
    .await;
    assert_eq!(second.status, StatusCode::NOT_FOUND);
    let message = second.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("call 2 of this request") && message.contains("1 of its calls"),
        "{message}"
    );
    assert!(message.contains("run \"r\""), "{message}");
    // A request never recorded at all gets the usual miss, nearest named.
    let never = CHAT.replace("Say hi", "Say bye");
    let first = post_with(&url, &never, &[SEQUENCE, ("x-llmtape-mode", "replay")]).await;
    assert_eq!(first.status, StatusCode::NOT_FOUND);
    assert_eq!(first.header("x-llmtape-call"), Some("1"));
    let message = first.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("the nearest recording is"), "{message}");
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn identical_concurrent_sequence_calls_are_never_coalesced() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let headers = [SEQUENCE, ("x-mock-hold", "1")];
    let a = tokio::spawn({
        let url = url.clone();
        async move { post_with(&url, CHAT, &headers).await }
    });
    let b = tokio::spawn({
        let url = url.clone();
        async move { post_with(&url, CHAT, &headers).await }
    });
    // Both reach the upstream before either is answered.
    mock.wait_for_calls(2).await;
    mock.release(2);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.cache(), b.cache()), ("miss", "miss"));
    assert_ne!(a.body, b.body);
    let mut calls = [a.header("x-llmtape-call"), b.header("x-llmtape-call")];
    calls.sort();
    assert_eq!(calls, [Some("1"), Some("2")]);
}

#[tokio::test]
async fn fixtures_keep_the_order_and_the_call_number() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    let mut proxy = TestProxy::start_fixtures(&mock.url(), "mode = \"auto\"\n", &fixtures).await;
    let url = proxy.url("/v1/chat/completions");
    let recorded: Vec<Reply> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(post_with(&url, CHAT, &[SEQUENCE]).await);
        }
        out
    };
    proxy.stop().await;
    let files = all_files(&fixtures);
    assert_eq!(files.len(), 3);
    let calls: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(f).unwrap()).unwrap()
                ["call"]
                .clone()
        })
        .collect();
    for n in 1..=3 {
        assert!(calls.contains(&serde_json::json!(n)), "{calls:?}");
    }

    let mut proxy = TestProxy::start_fixtures(&mock.url(), "", &fixtures).await;
    let url = proxy.url("/v1/chat/completions");
    for original in &recorded {
        let reply = post_with(&url, CHAT, &[SEQUENCE]).await;
        assert_eq!(reply.cache(), "hit");
        assert_eq!(reply.body, original.body);
    }
    assert_eq!(
        post_with(&url, CHAT, &[SEQUENCE]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(mock.calls(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn export_and_import_keep_the_order() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &dir.path().join("store")).await;
    let url = proxy.url("/v1/chat/completions");
    let mut recorded = Vec::new();
    for _ in 0..3 {
        recorded.push(post_with(&url, CHAT, &[SEQUENCE]).await);
    }
    proxy.stop().await;
    let export = run_in(
        dir.path(),
        &["--store", "store", "export", "--out", "fx"],
        None,
    )
    .await;
    assert_eq!(export.code, 0, "{}", export.err());
    let import = run_in(dir.path(), &["--store", "copy", "import", "fx"], None).await;
    assert_eq!(import.code, 0, "{}", import.err());
    let ls = run_in(dir.path(), &["--store", "copy", "ls"], None).await;
    assert!(ls.out().contains("(call 3)"), "{}", ls.out());

    let mut proxy =
        TestProxy::start_with_store(&mock.url(), "mode = \"replay\"\n", &dir.path().join("copy"))
            .await;
    let url = proxy.url("/v1/chat/completions");
    for original in &recorded {
        let reply = post_with(&url, CHAT, &[SEQUENCE]).await;
        assert_eq!(reply.cache(), "hit");
        assert_eq!(reply.body, original.body);
    }
    assert_eq!(mock.calls(), 3);
    proxy.stop().await;
}
