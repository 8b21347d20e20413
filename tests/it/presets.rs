//! Key presets end to end: fields a preset names change no key, and the
//! forwarded request keeps them.

use crate::support::*;
use http::StatusCode;

/// Caches Anthropic Messages even before it is a built-in route.
const MESSAGES_ROUTE: &str = "[routes]\ncache = [\"POST /v1/messages\"]\n";

/// A Claude Code turn as it sends it: the billing block first in
/// `system` (with a `cch` that changes on every request) and a
/// per-session `metadata.user_id`.
fn claude_code_turn(cch: &str, session: &str) -> String {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": format!("x-anthropic-billing-header: cc_version=2.1.177.01c; cc_entrypoint=cli; cch={cch};")},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "list the files"}]}],
        "metadata": {"user_id": format!("user_0f3a_account__session_{session}")},
        "stream": false
    })
    .to_string()
}

#[tokio::test]
async fn two_claude_code_turns_differing_only_in_cch_and_user_id_make_one_upstream_call() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), MESSAGES_ROUTE).await;
    let url = proxy.url("/v1/messages");
    let headers = [
        ("x-api-key", "sk-ant-test-dummy"),
        ("anthropic-version", "2023-06-01"),
    ];

    let first = post_with(&url, &claude_code_turn("36ee5", "a1"), &headers).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.cache(), "miss");
    let second = post_with(&url, &claude_code_turn("9b0c2", "b7"), &headers).await;
    assert_eq!(
        second.cache(),
        "hit",
        "cch and user_id must not split the key"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("x-llmtape-key"),
        first.header("x-llmtape-key")
    );
    assert_eq!(mock.calls(), 1);

    // The preset changed the key only: the upstream got the request as sent.
    let seen = mock.seen();
    let forwarded: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        forwarded["system"][0]["text"],
        "x-anthropic-billing-header: cc_version=2.1.177.01c; cc_entrypoint=cli; cch=36ee5;"
    );
    assert_eq!(
        forwarded["metadata"]["user_id"],
        "user_0f3a_account__session_a1"
    );

    // Another prompt is another key.
    let other = claude_code_turn("36ee5", "a1").replace("list the files", "run the tests");
    assert_eq!(post_with(&url, &other, &headers).await.cache(), "miss");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn without_presets_every_claude_code_turn_is_a_miss() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(
        &mock.url(),
        &format!("[key]\npresets = []\n{MESSAGES_ROUTE}"),
    )
    .await;
    let url = proxy.url("/v1/messages");
    assert_eq!(
        post(&url, &claude_code_turn("1", "a")).await.cache(),
        "miss"
    );
    assert_eq!(
        post(&url, &claude_code_turn("2", "a")).await.cache(),
        "miss"
    );
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn claude_code_leaves_openai_requests_alone_and_openai_presets_are_opt_in() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let with_user_id = |id: &str| {
        CHAT.replace(
            "\"seed\"",
            &format!("\"metadata\":{{\"user_id\":\"{id}\"}},\"seed\""),
        )
    };
    assert_eq!(post(&url, &with_user_id("a")).await.cache(), "miss");
    assert_eq!(post(&url, &with_user_id("b")).await.cache(), "miss");
    // openai-defaults is off by default: "stream": false is another key.
    let sent_default = CHAT.replace("\"seed\"", "\"stream\":false,\"seed\"");
    assert_eq!(post(&url, CHAT).await.cache(), "miss");
    assert_eq!(post(&url, &sent_default).await.cache(), "miss");
    assert_eq!(mock.calls(), 4);

    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(
        &mock.url(),
        "[key]\npresets = [\"openai-identity\", \"openai-defaults\"]\n",
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(post(&url, CHAT).await.cache(), "miss");
    let agents_sdk = CHAT.replace(
        "\"seed\"",
        "\"stream\":false,\"n\":1,\"tools\":[],\"include\":[],\"logprobs\":false,\"safety_identifier\":\"s\",\"prompt_cache_key\":\"k\",\"metadata\":{\"run\":\"7\"},\"seed\"",
    );
    let hit = post(&url, &agents_sdk).await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(mock.calls(), 1);
    // A non-default value still counts.
    let two = CHAT.replace("\"seed\"", "\"n\":2,\"seed\"");
    assert_eq!(post(&url, &two).await.cache(), "miss");
}

#[tokio::test]
async fn key_explain_names_what_each_preset_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run_in(
        dir.path(),
        &["key", "explain", "--path", "/v1/messages"],
        Some(&claude_code_turn("36ee5", "a1")),
    )
    .await;
    let out = ran.out();
    assert!(out.contains("\npresets:     claude-code\n"), "{out}");
    assert!(
        out.contains("\nremoved:     /system/0 by preset claude-code\n             /metadata/user_id by preset claude-code\n"),
        "{out}"
    );
    assert!(!out.contains("cch="), "{out}");
}

#[tokio::test]
async fn rekey_merges_recordings_made_before_the_preset_and_they_hit_after() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let without = format!("[key]\npresets = []\n{MESSAGES_ROUTE}");
    let mut proxy = TestProxy::start_with_store(&mock.url(), &without, &store).await;
    let url = proxy.url("/v1/messages");
    let _older = post(&url, &claude_code_turn("1", "a")).await;
    let newer = post(&url, &claude_code_turn("2", "b")).await;
    assert_eq!(newer.cache(), "miss");
    proxy.stop().await;

    // The user turns the default preset back on.
    std::fs::write(dir.path().join("proxy.toml"), MESSAGES_ROUTE).unwrap();
    let dry = run_in(
        dir.path(),
        &["--store", "store", "rekey", "--dry-run"],
        None,
    )
    .await;
    assert_eq!(dry.code, 0, "{}", dry.err());
    assert!(dry.out().contains("would merge"), "{}", dry.out());
    assert!(
        dry.out().contains("2 key(s) would change, 1 merge(s)"),
        "{}",
        dry.out()
    );
    let rekey = run_in(dir.path(), &["--store", "store", "rekey"], None).await;
    assert_eq!(rekey.code, 0, "{}", rekey.err());
    assert!(
        rekey.out().contains("2 key(s) changed, 1 merge(s)"),
        "{}",
        rekey.out()
    );

    let mut proxy = TestProxy::start_with_store(
        &mock.url(),
        &format!("mode = \"replay\"\n{MESSAGES_ROUTE}"),
        &store,
    )
    .await;
    let hit = post(&proxy.url("/v1/messages"), &claude_code_turn("3", "c")).await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.body, newer.body, "the newer recording wins the merge");
    assert_eq!(mock.calls(), 2);
    proxy.stop().await;
    let again = run_in(dir.path(), &["--store", "store", "rekey"], None).await;
    assert!(
        again.out().contains("0 key(s) changed, 0 merge(s)"),
        "{}",
        again.out()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_through_a_running_serve_takes_effect_on_its_next_request() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let without = format!("[key]\npresets = []\n{MESSAGES_ROUTE}");
    let mut proxy = TestProxy::start_with_store(&mock.url(), &without, &store).await;
    let url = proxy.url("/v1/messages");
    let older = post(&url, &claude_code_turn("1", "a")).await;
    let _newer = post(&url, &claude_code_turn("2", "b")).await;
    proxy.stop().await;

    std::fs::write(dir.path().join("proxy.toml"), MESSAGES_ROUTE).unwrap();
    let mut cmd = serve_cmd(dir.path(), &mock.url(), std::path::Path::new("store"));
    // `/v1/messages` is Anthropic's: its upstream is the same mock here.
    cmd.args(["--anthropic-upstream", &mock.url()]);
    let mut serve = Serve::start(cmd).await;
    let url = serve.url("/v1/messages");
    // Before: under the preset the recordings' old keys are not found.
    let replay = [("x-llmtape-mode", "replay")];
    let before = post_with(&url, &claude_code_turn("1", "a"), &replay).await;
    assert_eq!(before.status, http::StatusCode::NOT_FOUND);
    assert_ne!(
        before.header("x-llmtape-key"),
        older.header("x-llmtape-key")
    );
    let rekey = run_in(dir.path(), &["--store", "store", "rekey"], None).await;
    assert_eq!(rekey.code, 0, "{}", rekey.err());
    assert!(rekey.out().contains("1 merge(s)"), "{}", rekey.out());
    assert!(
        rekey.out().contains("rekeyed 2 recording(s) in store"),
        "{}",
        rekey.out()
    );
    let after = post_with(&url, &claude_code_turn("3", "c"), &replay).await;
    assert_eq!(after.cache(), "hit");
    assert_eq!(
        after.header("x-llmtape-key"),
        before.header("x-llmtape-key")
    );
    assert_eq!(mock.calls(), 2);
    serve.terminate().await;
}
