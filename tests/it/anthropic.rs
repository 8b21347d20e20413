//! Anthropic Messages end to end: `/v1/messages` and `count_tokens`
//! recorded and replayed byte for byte (streams with thinking blocks,
//! signatures and tool calls included), stored only after `message_stop`,
//! keyed by `anthropic-version` and `anthropic-beta`, sent to
//! `upstream.anthropic_url` (the OpenAI upstream is a closed port here, so
//! any request sent there would fail), `x-api-key` never stored, and
//! llmtape's own errors shaped like Anthropic's.

use http::Method;

use crate::support::*;

const MESSAGES: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Say hi"}]}"#;

const STREAM_THINKING_TOOLS: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":2048,"stream":true,"thinking":{"type":"enabled","budget_tokens":1024},"tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],"messages":[{"role":"user","content":"Weather in Paris?"}]}"#;

// Assembled so secret scanners do not flag a dummy that looks like a key.
const API_KEY: &str = concat!("sk-ant-", "api03-test-dummy-secret");

/// llmtape in front of `mock` for Anthropic, and of nothing for OpenAI.
async fn proxy_for(mock: &AnthropicMock, closed: &ClosedPort, extra: &str) -> TestProxy {
    let toml = format!("{extra}\n[upstream]\nanthropic_url = \"{}\"\n", mock.url());
    TestProxy::start(&format!("http://{}", closed.addr), &toml).await
}

/// The headers the Anthropic SDKs send, plus `more`.
fn headers<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        ("content-type", "application/json"),
        ("x-api-key", API_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    all.retain(|(n, _)| !more.iter().any(|(m, _)| m.eq_ignore_ascii_case(n)));
    all.extend_from_slice(more);
    all
}

async fn messages(proxy: &TestProxy, body: &str, more: &[(&str, &str)]) -> Reply {
    send(
        Method::POST,
        &proxy.url("/v1/messages"),
        &headers(more),
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn messages_are_recorded_once_and_replayed_byte_for_byte() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let first = messages(&proxy, MESSAGES, &[]).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.cache(), "miss");
    assert_eq!(first.json()["content"][0]["text"], "reply #1");
    assert_eq!(first.json()["id"], "msg_mock_1");
    let second = messages(&proxy, MESSAGES, &[]).await;
    assert_eq!(second.cache(), "hit");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("request-id"), Some("req_mock_1"));
    assert_eq!(mock.calls(), 1);
    // The mock saw the caller's credential and version, and nothing of ours.
    let seen = &mock.seen()[0];
    assert_eq!(seen.path_and_query, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], API_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(!seen
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("x-llmtape-")));
}

#[tokio::test]
async fn count_tokens_is_cached_too() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let url = proxy.url("/v1/messages/count_tokens");
    let body = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Say hi"}]}"#;
    let first = send(Method::POST, &url, &headers(&[]), body).await;
    assert_eq!(first.json()["input_tokens"], 101);
    let second = send(Method::POST, &url, &headers(&[]), body).await;
    assert_eq!((second.cache(), second.body.clone()), ("hit", first.body));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_stream_with_thinking_and_tools_is_stored_only_after_message_stop_and_replays_exactly() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let url = proxy.url("/v1/messages");
    let mut gated = headers(&[("x-mock-stream-gate", "1")]);
    gated.retain(|(n, _)| *n != "content-type");
    let response = open_stream(&url, STREAM_THINKING_TOOLS, &gated).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmtape-cache"], "miss");
    let mut body = response.into_body();
    // The first event arrives while the upstream holds the rest back:
    // forwarded as it comes, and nothing recorded yet.
    let first = next_chunk(&mut body).await.unwrap().unwrap();
    assert!(first.starts_with(b"event: message_start\n"), "{first:?}");
    assert_eq!(
        mock.events_sent(),
        1,
        "the upstream is held after one event"
    );
    let early = messages(
        &proxy,
        STREAM_THINKING_TOOLS,
        &[("x-llmtape-mode", "replay")],
    )
    .await;
    assert_eq!(early.status, 404, "not recorded before message_stop");
    mock.open_gate(1000);
    let mut streamed = first.to_vec();
    streamed.extend(read_all(&mut body).await.unwrap());
    let text = String::from_utf8(streamed.clone()).unwrap();
    for needle in [
        "event: content_block_start",
        "\"type\":\"thinking_delta\"",
        "\"type\":\"signature_delta\"",
        "\"signature\":\"EqQBCkYIARgCIkB1sigmock",
        "\"type\":\"tool_use\"",
        "\"type\":\"input_json_delta\"",
        "event: ping",
        "event: message_delta",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    let replayed = messages(&proxy, STREAM_THINKING_TOOLS, &[]).await;
    assert_eq!(replayed.cache(), "hit");
    assert_eq!(replayed.body.to_vec(), streamed, "byte for byte");
    assert!(replayed
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_stream_with_an_error_event_or_cut_or_without_message_stop_is_never_stored() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let mut calls = 0;
    for end in ["error", "cut", "none"] {
        let body = STREAM_THINKING_TOOLS.replace("Paris", end);
        let url = proxy.url("/v1/messages");
        // Gated, so that each event (and the cut) leaves the upstream only
        // once the client has the one before.
        let response = open_stream(
            &url,
            &body,
            &headers(&[("x-mock-stream-end", end), ("x-mock-stream-gate", "1")]),
        )
        .await;
        let mut stream = response.into_body();
        let mut read = Ok(Vec::new());
        loop {
            match next_chunk(&mut stream).await {
                Ok(Some(chunk)) => {
                    if let Ok(all) = &mut read {
                        all.extend_from_slice(&chunk);
                    }
                    mock.open_gate(1);
                }
                Ok(None) => break,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            }
        }
        if end == "cut" {
            assert!(read.is_err(), "a cut reaches the client as a cut");
        } else {
            let text = String::from_utf8(read.unwrap()).unwrap();
            assert_eq!(text.contains("event: error"), end == "error", "{text}");
        }
        calls += 1;
        let again = messages(&proxy, &body, &[("x-mock-stream-end", "done")]).await;
        calls += 1;
        assert_eq!(again.cache(), "miss", "{end}: not recorded");
        assert_eq!(mock.calls(), calls, "{end}");
        let third = messages(&proxy, &body, &[]).await;
        assert_eq!(third.cache(), "hit", "{end}: the clean answer was recorded");
    }
}

#[tokio::test]
async fn anthropic_version_and_beta_are_in_the_key_and_no_other_header_is() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let base = messages(&proxy, MESSAGES, &[]).await;
    assert_eq!(base.cache(), "miss");
    let version = messages(&proxy, MESSAGES, &[("anthropic-version", "2024-01-01")]).await;
    assert_eq!(version.cache(), "miss", "another anthropic-version");
    let beta = messages(
        &proxy,
        MESSAGES,
        &[(
            "anthropic-beta",
            "prompt-caching-2024-07-31,tools-2024-04-04",
        )],
    )
    .await;
    assert_eq!(beta.cache(), "miss", "an anthropic-beta");
    let same_betas = messages(
        &proxy,
        MESSAGES,
        &[(
            "anthropic-beta",
            "tools-2024-04-04, prompt-caching-2024-07-31",
        )],
    )
    .await;
    assert_eq!(same_betas.cache(), "hit", "the same betas in another order");
    assert_eq!(same_betas.body, beta.body);
    let other_headers = messages(
        &proxy,
        MESSAGES,
        &[
            ("user-agent", "Anthropic/Python 0.50.0"),
            ("x-stainless-retry-count", "1"),
            ("x-api-key", "sk-ant-another-dummy"),
        ],
    )
    .await;
    assert_eq!(other_headers.cache(), "hit", "other headers are not keyed");
    assert_eq!(other_headers.body, base.body);
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn with_api_key_scope_x_api_key_partitions_the_cache() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "[key]\nscope = \"api-key\"\n").await;
    messages(&proxy, MESSAGES, &[]).await;
    let other = messages(&proxy, MESSAGES, &[("x-api-key", "sk-ant-other-dummy")]).await;
    assert_eq!(other.cache(), "miss");
    let again = messages(&proxy, MESSAGES, &[]).await;
    assert_eq!(again.cache(), "hit");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn x_api_key_never_reaches_the_store() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let mut proxy = proxy_for(&mock, &closed, "").await;
    messages(&proxy, MESSAGES, &[]).await;
    let url = proxy.url("/v1/messages");
    let mut stream = open_stream(&url, STREAM_THINKING_TOOLS, &headers(&[]))
        .await
        .into_body();
    read_all(&mut stream).await.unwrap();
    assert_eq!(messages(&proxy, MESSAGES, &[]).await.cache(), "hit");
    proxy.stop().await;
    let files = all_files(&proxy.store_dir);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes()),
            "the key is in {}",
            file.display()
        );
    }
}

#[tokio::test]
async fn a_replay_miss_is_shaped_like_anthropics_errors_and_names_the_differing_header() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    messages(&proxy, MESSAGES, &[]).await;
    let miss = messages(
        &proxy,
        MESSAGES,
        &[
            ("x-llmtape-mode", "replay"),
            ("anthropic-version", "2024-01-01"),
        ],
    )
    .await;
    assert_eq!(miss.status, 404);
    let body = miss.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["llmtape_code"], "replay_miss");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("(header anthropic-version)"), "{message}");
    assert!(miss
        .header("x-llmtape-miss-nearest")
        .unwrap()
        .contains("(header anthropic-version)"));
    assert_eq!(mock.calls(), 1);
    // An OpenAI route keeps OpenAI's shape.
    let openai = post_with(
        &proxy.url("/v1/chat/completions"),
        CHAT,
        &[("x-llmtape-mode", "replay")],
    )
    .await;
    assert_eq!(openai.json()["error"]["type"], "llmtape_miss");
}

#[tokio::test]
async fn an_unreachable_anthropic_upstream_is_an_anthropic_shaped_502() {
    let closed = ClosedPort::new();
    let anthropic = ClosedPort::new();
    let toml = format!(
        "[upstream]\nanthropic_url = \"http://{}\"\n",
        anthropic.addr
    );
    let proxy = TestProxy::start(&format!("http://{}", closed.addr), &toml).await;
    let reply = messages(&proxy, MESSAGES, &[]).await;
    assert_eq!(reply.status, 502);
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&anthropic.addr.to_string()), "{message}");
}

#[tokio::test]
async fn upstream_errors_pass_through_unrecorded() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let overloaded = messages(&proxy, MESSAGES, &[("x-mock-status", "529")]).await;
    assert_eq!(overloaded.status.as_u16(), 529);
    assert_eq!(overloaded.json()["error"]["message"], "mock error #1");
    let missing = messages(&proxy, MESSAGES, &[]).await;
    assert_eq!(missing.cache(), "miss");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn other_anthropic_requests_pass_through_to_the_anthropic_upstream() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let batches = send(
        Method::POST,
        &proxy.url("/v1/messages/batches"),
        &headers(&[]),
        "{}",
    )
    .await;
    assert_eq!(batches.cache(), "bypass");
    assert_eq!(batches.json()["error"]["type"], "not_found_error");
    // `/v1/models` with `anthropic-version` is Anthropic's (and cached).
    let models = send(Method::GET, &proxy.url("/v1/models"), &headers(&[]), "").await;
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["data"][0]["type"], "model");
    let again = send(Method::GET, &proxy.url("/v1/models"), &headers(&[]), "").await;
    assert_eq!(again.cache(), "hit");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn the_model_is_the_fingerprint_of_an_anthropic_answer() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let mut proxy = proxy_for(&mock, &closed, "").await;
    mock.set_model("claude-sonnet-4-5-20250929");
    let first = messages(&proxy, MESSAGES, &[]).await;
    assert!(first.header("x-llmtape-fingerprint-changed").is_none());
    mock.set_model("claude-sonnet-4-5-20251201");
    let again = messages(&proxy, MESSAGES, &[("x-llmtape-mode", "record")]).await;
    assert_eq!(again.cache(), "miss");
    assert_eq!(
        again.header("x-llmtape-fingerprint-changed"),
        Some("claude-sonnet-4-5-20250929 -> claude-sonnet-4-5-20251201")
    );
    proxy.stop().await;
    let store = proxy.store_dir.to_str().unwrap().to_string();
    let audit = run_in(
        &proxy.store_dir,
        &["--store", &store, "audit", "--json"],
        None,
    )
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&audit.stdout)
        .unwrap_or_else(|e| panic!("audit --json is not JSON ({e}): {}", audit.err()));
    let text = doc.to_string();
    for model in ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20251201"] {
        assert!(text.contains(model), "{model} in {doc:#}");
    }
    let ls = run_in(&proxy.store_dir, &["--store", &store, "ls", "--json"], None).await;
    let list: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(
        list[0]["fingerprint"], "claude-sonnet-4-5-20251201",
        "{list:#}"
    );
    assert_eq!(list[0]["route"], "messages", "{list:#}");
}

/// The official SDKs, `ANTHROPIC_BASE_URL` at llmtape: the Python
/// interpreter is `$LLMTAPE_TEST_PYTHON`, else `<repo>/.venv/bin/python`,
/// with `anthropic` importable; Node is `$LLMTAPE_TEST_NODE`, else `node`,
/// with `@anthropic-ai/sdk` in `tests/node/node_modules` (`scripts/test`
/// installs both). Without them these tests skip with a note on stderr,
/// except under CI (`$CI` set), where they fail.
mod sdk {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;

    use serde_json::Value;

    use super::*;

    /// Runs `program args` (killed after `WAIT`) and returns its output,
    /// or why it could not run.
    async fn run(
        program: &Path,
        args: &[&str],
        dir: &Path,
        envs: &[(&str, String)],
    ) -> Result<std::process::Output, String> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .env("ANTHROPIC_API_KEY", API_KEY)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // Loopback only: no proxy from the environment may get in the way.
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .env_remove("NODE_OPTIONS")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in envs {
            command.env(name, value);
        }
        match tokio::time::timeout(WAIT, command.output()).await {
            Err(_) => Err(format!(
                "{} did not finish within {WAIT:?}",
                program.display()
            )),
            Ok(Err(e)) => Err(format!("cannot run {}: {e}", program.display())),
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// `None` after saying why the SDK is missing (outside CI; under CI
    /// this panics instead).
    fn missing(what: &str, problem: String) -> Option<PathBuf> {
        if std::env::var_os("CI").is_some() {
            panic!("the {what} SDK tests need it installed: {problem}; run scripts/test (it installs it)");
        }
        eprintln!("skipping: {what} SDK test: {problem}; run scripts/test to install it");
        None
    }

    async fn python() -> Option<PathBuf> {
        let python = match std::env::var_os("LLMTAPE_TEST_PYTHON") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => Path::new(REPO).join(".venv/bin/python"),
        };
        match run(&python, &["-c", "import anthropic"], Path::new(REPO), &[]).await {
            Ok(out) if out.status.success() => Some(python),
            Ok(out) => missing(
                "anthropic Python",
                format!(
                    "`{} -c 'import anthropic'` failed: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                ),
            ),
            Err(e) => missing("anthropic Python", e),
        }
    }

    async fn node() -> Option<PathBuf> {
        let node = match std::env::var_os("LLMTAPE_TEST_NODE") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("node"),
        };
        let dir = Path::new(REPO).join("tests/node");
        if !dir.join("node_modules/@anthropic-ai/sdk").is_dir() {
            return missing(
                "@anthropic-ai/sdk Node",
                "tests/node/node_modules/@anthropic-ai/sdk is not installed".into(),
            );
        }
        let import = ["--input-type=module", "-e", "import '@anthropic-ai/sdk';"];
        match run(&node, &import, &dir, &[]).await {
            Ok(out) if out.status.success() => Some(node),
            Ok(out) => missing(
                "@anthropic-ai/sdk Node",
                format!(
                    "cannot import @anthropic-ai/sdk: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ),
            Err(e) => missing("@anthropic-ai/sdk Node", e),
        }
    }

    /// Runs an SDK script against llmtape; its stdout is one JSON object.
    async fn script(program: &Path, script: &str, dir: &str, proxy: &TestProxy) -> Value {
        let path = Path::new(REPO).join(script);
        let path = path.to_str().unwrap();
        let envs = [("ANTHROPIC_BASE_URL", proxy.url(""))];
        let out = run(program, &[path], &Path::new(REPO).join(dir), &envs)
            .await
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{script} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("{script}: stdout is not one JSON object ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}")
        })
    }

    /// What both SDKs must have seen: every second answer the same as the
    /// first, one upstream call each, and a replay miss as `NotFoundError`.
    fn check(out: &Value, mock: &AnthropicMock) {
        for call in ["plain", "stream", "tools", "thinking"] {
            assert_eq!(out[call]["first"], out[call]["second"], "{call}: {out:#}");
        }
        assert_eq!(out["plain"]["first"]["content"][0]["text"], "reply #1");
        let events = out["stream"]["first"].as_array().unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types.first(), Some(&"message_start"), "{types:?}");
        assert_eq!(types.last(), Some(&"message_stop"), "{types:?}");
        assert!(types.contains(&"content_block_delta"), "{types:?}");
        let tool = &out["tools"]["first"]["content"][0];
        assert_eq!(tool["type"], "tool_use", "{out:#}");
        assert_eq!(tool["name"], "get_weather");
        assert_eq!(out["tools"]["first"]["stop_reason"], "tool_use");
        let thinking = &out["thinking"]["first"]["content"];
        assert_eq!(thinking[0]["type"], "thinking", "{out:#}");
        assert!(thinking[0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("EqQBCkYIARgCIkB"));
        assert_eq!(thinking[1]["type"], "tool_use");
        assert_eq!(
            thinking[1]["input"]["city"]
                .as_str()
                .map(|c| c.starts_with("Paris #")),
            Some(true)
        );
        let miss = &out["replay_miss"];
        assert_eq!(miss["raised"], "NotFoundError", "{out:#}");
        assert_eq!(miss["status"], 404);
        assert!(
            miss["message"].as_str().unwrap().contains("mode=replay"),
            "{miss}"
        );
        assert_eq!(miss["body"]["type"], "error", "{miss}");
        assert_eq!(miss["body"]["error"]["type"], "not_found_error", "{miss}");
        assert_eq!(mock.calls(), 4, "one upstream call per distinct request");
        // The SDK's key reached the upstream, as `x-api-key` or (newer
        // SDKs) as a bearer token.
        let bearer = format!("Bearer {API_KEY}");
        for seen in mock.seen() {
            let header = |name| seen.headers.get(name).and_then(|v| v.to_str().ok());
            assert!(
                header("x-api-key") == Some(API_KEY) || header("authorization") == Some(&bearer),
                "{:?} {:?}",
                seen.path_and_query,
                seen.headers.keys().collect::<Vec<_>>()
            );
            assert!(seen.headers.contains_key("anthropic-version"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_python_sdk_gets_every_repeat_from_the_tape() {
        let Some(python) = python().await else {
            return;
        };
        let mock = AnthropicMock::start().await;
        let closed = ClosedPort::new();
        let proxy = proxy_for(&mock, &closed, "").await;
        let out = script(
            &python,
            "tests/sdk/python_anthropic.py",
            "tests/sdk",
            &proxy,
        )
        .await;
        assert_eq!(out["plain"]["caches"][1], "hit", "{out:#}");
        check(&out, &mock);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_node_sdk_gets_every_repeat_from_the_tape() {
        let Some(node) = node().await else {
            return;
        };
        let mock = AnthropicMock::start().await;
        let closed = ClosedPort::new();
        let proxy = proxy_for(&mock, &closed, "").await;
        let out = script(&node, "tests/node/anthropic.mjs", "tests/node", &proxy).await;
        assert_eq!(out["plain"]["third_cache"], "hit", "{out:#}");
        check(&out, &mock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_re_asks_the_anthropic_upstream_with_the_recorded_headers() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let toml = format!("[upstream]\nanthropic_url = \"{}\"\n", mock.url());
    let mut proxy =
        TestProxy::start_with_store(&format!("http://{}", closed.addr), &toml, &store).await;
    let keyed = [
        ("anthropic-version", "2024-01-01"),
        ("anthropic-beta", "tools-2024-04-04"),
    ];
    assert_eq!(messages(&proxy, MESSAGES, &keyed).await.cache(), "miss");
    proxy.stop().await;
    let config = dir.path().join("verify.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://{}\"\nanthropic_url = \"{}\"\n",
            closed.addr,
            mock.url()
        ),
    )
    .unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(&store)
        .args(["verify", "--json"])
        .env_remove("OPENAI_API_KEY")
        .env("ANTHROPIC_API_KEY", "sk-ant-verify-dummy");
    let (_, stdout, stderr) = run(cmd).await;
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify --json is not JSON ({e}): {stdout}\n{stderr}"));
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{doc:#}");
    assert_eq!(
        results[0]["verdict"], "different_text",
        "reply #2 is not reply #1: {doc:#}"
    );
    assert_eq!(mock.calls(), 2);
    let asked = &mock.seen()[1];
    assert_eq!(asked.path_and_query, "/v1/messages");
    assert_eq!(asked.headers["anthropic-version"], "2024-01-01");
    assert_eq!(asked.headers["anthropic-beta"], "tools-2024-04-04");
    assert_eq!(asked.headers["x-api-key"], "sk-ant-verify-dummy");
    assert!(!asked.headers.contains_key("authorization"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_keep_anthropic_streams_and_their_keyed_headers_for_offline_replay() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let toml = format!("[upstream]\nanthropic_url = \"{}\"\n", mock.url());
    let mut proxy =
        TestProxy::start_with_store(&format!("http://{}", closed.addr), &toml, &store).await;
    let beta = [("anthropic-beta", "interleaved-thinking-2025-05-14")];
    let streamed = messages(&proxy, STREAM_THINKING_TOOLS, &beta).await;
    let plain = messages(&proxy, MESSAGES, &[]).await;
    proxy.stop().await;
    let out = dir.path().join("fixtures");
    let store_arg = store.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let ran = run_in(
        dir.path(),
        &["--store", store_arg, "export", "--out", out_arg],
        None,
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.err());
    let files = all_files(&out);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|f| f.starts_with(out.join("messages"))),
        "files under the route's name: {files:?}"
    );
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(texts
        .iter()
        .any(|t| t.contains("interleaved-thinking-2025-05-14")));
    assert!(texts.iter().all(|t| !t.contains(API_KEY)));
    let ran = run_in(dir.path(), &["lint", out_arg], None).await;
    assert_eq!(ran.code, 0, "{}", ran.err());
    // Offline: nothing listens on either upstream.
    let nowhere = ClosedPort::new();
    let toml = format!("[upstream]\nanthropic_url = \"http://{}\"\n", nowhere.addr);
    let offline = TestProxy::start_fixtures(&format!("http://{}", closed.addr), &toml, &out).await;
    let replayed = messages(&offline, STREAM_THINKING_TOOLS, &beta).await;
    assert_eq!(replayed.cache(), "hit");
    assert_eq!(
        replayed.body, streamed.body,
        "byte for byte from the fixture"
    );
    let replayed = messages(&offline, MESSAGES, &[]).await;
    assert_eq!(replayed.body, plain.body);
    let miss = messages(&offline, STREAM_THINKING_TOOLS, &[]).await;
    assert_eq!(miss.status, 404, "without the beta it is another request");
    assert_eq!(miss.json()["error"]["type"], "not_found_error");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_anthropic_streams_share_one_upstream_call() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let url = proxy.url("/v1/messages");
    let gated = headers(&[("x-mock-stream-gate", "1")]);
    let leader = open_stream(&url, STREAM_THINKING_TOOLS, &gated).await;
    let mut leader = leader.into_body();
    let first = next_chunk(&mut leader).await.unwrap().unwrap();
    // The upstream holds the rest back and nothing is recorded yet, so a
    // second request that gets its head now has joined the flight.
    let follower = open_stream(&url, STREAM_THINKING_TOOLS, &gated).await;
    let cache = follower.headers()["x-llmtape-cache"]
        .to_str()
        .unwrap()
        .to_string();
    let mut follower = follower.into_body();
    mock.open_gate(1000);
    let mut all = first.to_vec();
    all.extend(read_all(&mut leader).await.unwrap());
    let followed = read_all(&mut follower).await.unwrap();
    assert_eq!(cache, "hit");
    assert_eq!(followed, all);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_api_key_never_reaches_the_logs_and_the_flag_sets_the_upstream() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut cmd = serve_cmd(dir.path(), &format!("http://{}", closed.addr), &store);
    cmd.args(["--anthropic-upstream", &mock.url()])
        .env("LLMTAPE_LOG", "trace");
    let mut serve = Serve::start(cmd).await;
    let url = serve.url("/v1/messages");
    for extra in [
        None,
        Some(("x-mock-status", "500")),
        Some(("x-llmtape-mode", "bogus")),
    ] {
        let mut all = headers(&[]);
        all.extend(extra);
        send(Method::POST, &url, &all, MESSAGES).await;
    }
    let mut stream = open_stream(&url, STREAM_THINKING_TOOLS, &headers(&[]))
        .await
        .into_body();
    read_all(&mut stream).await.unwrap();
    assert!(serve.terminate().await.success());
    // The plain request and the stream; the others were a hit and a 400.
    assert_eq!(mock.calls(), 2, "--anthropic-upstream is where they went");
    let logs = serve.log();
    assert!(logs.contains("/v1/messages"), "requests are logged: {logs}");
    assert!(
        !logs.contains(API_KEY),
        "x-api-key reached the logs:\n{logs}"
    );
}

#[tokio::test]
async fn health_names_both_upstreams() {
    let mock = AnthropicMock::start().await;
    let closed = ClosedPort::new();
    let proxy = proxy_for(&mock, &closed, "").await;
    let health = send(Method::GET, &proxy.url("/_llmtape/health"), &[], "").await;
    assert_eq!(health.json()["upstream"], format!("http://{}", closed.addr));
    assert_eq!(health.json()["anthropic_upstream"], mock.url());
}
