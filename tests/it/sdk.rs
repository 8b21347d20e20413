//! End to end with the official `openai` SDKs: the SDK talks to an
//! in-process llmtape (127.0.0.1:0) in front of the mock upstream in
//! `support`, through `tests/sdk/python_core.py` (Python) or
//! `tests/node/stream.mjs` (Node).
//!
//! The `fixtures` tests serve the committed `fixtures/` folder (replay mode,
//! no store) with an upstream of 127.0.0.1:9, where nothing listens: each
//! SDK makes the requests of `exchange()` in
//! `scripts/make-example-fixtures.py` and must get every answer from the
//! fixtures, offline.
//!
//! The Python interpreter is `$LLMTAPE_TEST_PYTHON`, else
//! `<repo>/.venv/bin/python`; `scripts/test` creates that venv and installs
//! `openai` into it. The Node binary is `$LLMTAPE_TEST_NODE`, else `node` on
//! `PATH`, with the SDK in `tests/node/node_modules` (`scripts/test` runs
//! `npm ci` there). Without a usable SDK these tests skip with a note on
//! stderr, except under CI (`$CI` set), where they fail.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

/// Runs an SDK probe to its end, killed after `WAIT`; `Err` if it cannot
/// be started.
async fn probe(command: &mut tokio::process::Command) -> std::io::Result<std::process::Output> {
    tokio::time::timeout(WAIT, command.kill_on_drop(true).output())
        .await
        .expect("the SDK probe finishes in time")
}

/// The Python interpreter with `openai` importable, or `None` after saying
/// why on stderr (outside CI; under CI this panics instead).
async fn python() -> Option<PathBuf> {
    let candidate = match std::env::var_os("LLMTAPE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let venv = Path::new(REPO).join(".venv/bin/python");
            venv.exists().then_some(venv)
        }
    };
    let problem = match candidate {
        None => "no $LLMTAPE_TEST_PYTHON and no .venv/bin/python".to_string(),
        Some(python) => {
            let out = probe(
                tokio::process::Command::new(&python)
                    .args(["-c", "import openai"])
                    .stdin(Stdio::null()),
            )
            .await;
            match out {
                Ok(out) if out.status.success() => return Some(python),
                Ok(out) => format!(
                    "`{} -c 'import openai'` failed: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                ),
                Err(e) => format!("cannot run {}: {e}", python.display()),
            }
        }
    };
    if std::env::var_os("CI").is_some() {
        panic!("the Python SDK tests need the openai package: {problem}; run scripts/test (it installs it)");
    }
    eprintln!("skipping: Python SDK test: {problem}; run scripts/test to install it");
    None
}

/// Node with the `openai` package importable from `tests/node`, or `None`
/// after saying why on stderr (outside CI; under CI this panics instead).
async fn node() -> Option<PathBuf> {
    let dir = Path::new(REPO).join("tests/node");
    let node = match std::env::var_os("LLMTAPE_TEST_NODE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("node"),
    };
    let problem = if !dir.join("node_modules/openai").is_dir() {
        "tests/node/node_modules/openai is not installed".to_string()
    } else {
        let out = probe(
            tokio::process::Command::new(&node)
                .args(["--input-type=module", "-e", "import 'openai';"])
                .current_dir(&dir)
                .stdin(Stdio::null()),
        )
        .await;
        match out {
            Ok(out) if out.status.success() => return Some(node),
            Ok(out) => format!(
                "`{}` cannot import openai: {}",
                node.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
            ),
            Err(e) => format!("cannot run {}: {e}", node.display()),
        }
    };
    if std::env::var_os("CI").is_some() {
        panic!("the Node SDK tests need node and tests/node/node_modules/openai: {problem}; run scripts/test (it installs it)");
    }
    eprintln!("skipping: Node SDK test: {problem}; run scripts/test to install it");
    None
}

/// Runs `python_core.py SCENARIO` against the proxy's `/v1`.
async fn run_scenario(python: &Path, proxy: &TestProxy, scenario: &str) -> Value {
    let script = Path::new(REPO).join("tests/sdk/python_core.py");
    run_script(python, &script, proxy, scenario).await
}

/// Runs `node stream.mjs SCENARIO` against the proxy's `/v1`.
async fn run_node_scenario(node: &Path, proxy: &TestProxy, scenario: &str) -> Value {
    let script = Path::new(REPO).join("tests/node/stream.mjs");
    run_script(node, &script, proxy, scenario).await
}

/// Runs `PROGRAM SCRIPT SCENARIO` against the proxy's `/v1` without
/// blocking the runtime the proxy runs on; killed after `support::WAIT`.
/// Its stdout must be one JSON object.
async fn run_script(program: &Path, script: &Path, proxy: &TestProxy, scenario: &str) -> Value {
    let mut command = Command::new(program);
    command
        .arg(script)
        .arg(scenario)
        .env("OPENAI_BASE_URL", proxy.url("/v1"))
        .env("OPENAI_API_KEY", "sk-test-dummy")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
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
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let label = format!("{} {}", program.display(), script.display());
    let start_label = label.clone();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {start_label}: {e}"));
        let mut out_pipe = child.stdout.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out_pipe.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
        (status, stdout, stderr)
    })
    .await
    .unwrap();
    let Some(status) = status else {
        panic!("{scenario}: {label} did not finish within {WAIT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    assert!(
        status.success(),
        "{scenario}: {label} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{scenario}: stdout is not one JSON object ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_chat_repeat_is_an_identical_hit() {
    let Some(python) = python().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;

    let out = run_scenario(&python, &proxy, "chat_twice").await;
    let first = &out["first"];
    assert_eq!(first["object"], "chat.completion", "{out:#}");
    assert_eq!(first["choices"][0]["message"]["content"], "reply #1");
    assert_eq!(first["system_fingerprint"], "fp_mock_1");
    assert_eq!(
        out["second"], *first,
        "the SDK saw a different second answer"
    );
    assert_eq!(out["third"], *first, "the SDK saw a different third answer");
    assert_eq!(out["third_cache"], "hit", "{out:#}");
    assert_eq!(
        mock.calls(),
        1,
        "only the first call may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_embeddings_repeat_is_an_identical_hit() {
    let Some(python) = python().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;

    let out = run_scenario(&python, &proxy, "embeddings_twice").await;
    let first = &out["first"];
    assert_eq!(first["object"], "list", "{out:#}");
    assert_eq!(
        first["data"][0]["embedding"],
        serde_json::json!([0.25, -0.5, 1.0])
    );
    assert_eq!(
        out["second"], *first,
        "the SDK saw a different second answer"
    );
    assert_eq!(
        mock.calls(),
        1,
        "only the first call may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_audio_and_images_repeat_as_byte_identical_hits() {
    let Some(python) = python().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;

    let out = run_scenario(&python, &proxy, "audio_and_images_twice").await;
    for call in ["transcription", "speech", "image"] {
        let result = &out[call];
        assert_eq!(
            result["caches"],
            serde_json::json!(["miss", "hit"]),
            "{call}: {out:#}"
        );
        assert_eq!(result["keys"][0], result["keys"][1], "{call}");
        assert_eq!(result["bodies_hex"][0], result["bodies_hex"][1], "{call}");
    }
    let speech = &out["speech"];
    assert_eq!(speech["types"][1], "audio/mpeg");
    let expected: String = binary_answer(2)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        speech["bodies_hex"][1],
        expected.as_str(),
        "the audio bytes, exactly"
    );
    assert_eq!(
        mock.calls(),
        3,
        "only each first call may reach the upstream"
    );
    let forms: Vec<_> = mock
        .seen()
        .into_iter()
        .filter(|r| r.path_and_query.ends_with("/audio/transcriptions"))
        .collect();
    assert_eq!(forms.len(), 1);
    assert!(
        forms[0]
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("multipart/form-data; boundary=")),
        "the SDK sent a form"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_replay_miss_raises_not_found_naming_llmtape() {
    let Some(python) = python().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "mode = \"replay\"\n").await;

    let out = run_scenario(&python, &proxy, "replay_miss").await;
    assert_eq!(out["raised"], "NotFoundError", "{out:#}");
    assert_eq!(out["status"], 404, "{out:#}");
    let message = out["message"].as_str().unwrap_or_default();
    assert!(message.contains("mode=replay"), "{message}");
    assert!(message.contains("llmtape"), "{message}");
    assert_eq!(
        mock.calls(),
        0,
        "a replay miss must never reach the upstream"
    );
}

/// The chunks a stream scenario printed under `key`, checked against what
/// the mock streams for call #1: three content chunks, then a usage chunk.
fn check_stream_chunks(out: &Value, key: &str) -> Vec<Value> {
    let chunks = out[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not a list: {out:#}"))
        .clone();
    assert!(!chunks.is_empty(), "{key}: no chunks: {out:#}");
    assert_eq!(chunks.len(), 4, "{key}: 3 content chunks + usage: {out:#}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 #1tok1 #1tok2 #1", "{key}: {out:#}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk:#}");
        assert_eq!(chunk["system_fingerprint"], "fp_mock_1", "{chunk:#}");
    }
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["total_tokens"], 8, "{key}: the usage chunk: {out:#}");
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_stream_repeat_is_an_identical_hit() {
    let Some(python) = python().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;

    let out = run_scenario(&python, &proxy, "chat_stream_twice").await;
    let first = check_stream_chunks(&out, "first");
    let second = check_stream_chunks(&out, "second");
    assert_eq!(
        second, first,
        "the SDK saw different chunks the second time"
    );
    assert_eq!(
        mock.calls(),
        1,
        "only the first stream may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_chat_repeat_is_an_identical_hit() {
    let Some(node) = node().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;

    let out = run_node_scenario(&node, &proxy, "chat_twice").await;
    let first = &out["first"];
    assert_eq!(first["object"], "chat.completion", "{out:#}");
    assert_eq!(first["choices"][0]["message"]["content"], "reply #1");
    assert_eq!(first["system_fingerprint"], "fp_mock_1");
    assert_eq!(
        out["second"], *first,
        "the SDK saw a different second answer"
    );
    assert_eq!(
        mock.calls(),
        1,
        "only the first call may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_stream_repeat_is_an_identical_hit() {
    let Some(node) = node().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;

    let out = run_node_scenario(&node, &proxy, "chat_stream_twice").await;
    let first = check_stream_chunks(&out, "first");
    let second = check_stream_chunks(&out, "second");
    assert_eq!(
        second, first,
        "the SDK saw different chunks the second time"
    );
    assert_eq!(
        mock.calls(),
        1,
        "only the first stream may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_replay_miss_raises_not_found_naming_llmtape() {
    let Some(node) = node().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "mode = \"replay\"\n").await;

    let out = run_node_scenario(&node, &proxy, "replay_miss").await;
    assert_eq!(out["raised"], "NotFoundError", "{out:#}");
    assert_eq!(out["notFound"], true, "{out:#}");
    assert_eq!(out["status"], 404, "{out:#}");
    let message = out["message"].as_str().unwrap_or_default();
    assert!(message.contains("mode=replay"), "{message}");
    assert!(message.contains("llmtape"), "{message}");
    assert_eq!(
        mock.calls(),
        0,
        "a replay miss must never reach the upstream"
    );
}

/// The haiku the example Responses API recording streams: the `HAIKU`
/// tokens of `scripts/make-example-fixtures.py`, concatenated.
const HAIKU: &str = "Reels turn in the dark,\nevery word kept twice,\nplay it back again.";

/// Serves the committed `fixtures/` folder in replay mode (the default
/// when serving fixtures) in front of an upstream nobody listens on, so
/// any request that misses the fixtures fails instead of being answered.
async fn fixtures_proxy() -> TestProxy {
    let fixtures = Path::new(REPO).join("fixtures");
    assert!(
        fixtures.join("README.md").is_file(),
        "no fixtures folder at {}",
        fixtures.display()
    );
    TestProxy::start_fixtures("http://127.0.0.1:9", "", &fixtures).await
}

/// Checks what a `fixtures` scenario printed against the committed
/// recordings (see `scripts/make-example-fixtures.py`).
fn check_fixtures(out: &Value, sdk: &str) {
    let chat = &out["chat"];
    assert_eq!(chat["content"], "Paris.", "{sdk}: {out:#}");
    assert_eq!(chat["model"], "gpt-4o-mini-2024-07-18", "{sdk}: {out:#}");
    assert_eq!(
        chat["system_fingerprint"], "fp_0aa8d3e20b",
        "{sdk}: {out:#}"
    );

    let stream = &out["stream"];
    assert_eq!(stream["content"], "Paris.", "{sdk}: {out:#}");
    assert_eq!(
        stream["chunks"], 5,
        "{sdk}: 4 delta chunks + the usage chunk: {out:#}"
    );
    assert_eq!(stream["total_tokens"], 29, "{sdk}: {out:#}");

    assert_eq!(
        out["embedding"],
        serde_json::json!([0.0123, -0.0456, 0.0789, -0.0112, 0.0334, -0.0556, 0.0778, -0.0991]),
        "{sdk}: {out:#}"
    );

    let responses = &out["responses"];
    assert_eq!(responses["text"], HAIKU, "{sdk}: {out:#}");
    assert_eq!(
        responses["last_event"], "response.completed",
        "{sdk}: {out:#}"
    );

    let miss = &out["miss"];
    assert_eq!(miss["raised"], "NotFoundError", "{sdk}: {out:#}");
    assert_eq!(miss["status"], 404, "{sdk}: {out:#}");
    let message = miss["message"].as_str().unwrap_or_default();
    assert!(message.contains("mode=replay"), "{sdk}: {message}");
    assert!(message.contains("llmtape"), "{sdk}: {message}");
    assert!(
        message.contains("nearest recording is 994c6de13fafae29"),
        "{sdk}: the nearest recording is the chat with the other question: {message}"
    );
    assert!(
        message.contains("/messages/1/content"),
        "{sdk}: the miss names the differing field: {message}"
    );
}

/// The llmtape part of an SDK error message: Python prints
/// `Error code: 404 - MESSAGE`, Node `404 MESSAGE`.
fn llmtape_message(message: &Value) -> &str {
    let message = message.as_str().unwrap_or_default();
    message
        .strip_prefix("Error code: 404 - ")
        .or_else(|| message.strip_prefix("404 "))
        .unwrap_or(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_replays_the_committed_fixtures_offline() {
    let Some(python) = python().await else {
        return;
    };
    let proxy = fixtures_proxy().await;
    let out = run_scenario(&python, &proxy, "fixtures").await;
    check_fixtures(&out, "python");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_replays_the_committed_fixtures_offline() {
    let Some(node) = node().await else {
        return;
    };
    let proxy = fixtures_proxy().await;
    let out = run_node_scenario(&node, &proxy, "fixtures").await;
    check_fixtures(&out, "node");
    assert_eq!(out["miss"]["notFound"], true, "{out:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_sdks_see_the_same_fixtures() {
    let Some(python) = python().await else {
        return;
    };
    let Some(node) = node().await else {
        return;
    };
    let proxy = fixtures_proxy().await;
    let py = run_scenario(&python, &proxy, "fixtures").await;
    let js = run_node_scenario(&node, &proxy, "fixtures").await;
    check_fixtures(&py, "python");
    check_fixtures(&js, "node");
    for field in ["chat", "stream", "embedding", "responses"] {
        assert_eq!(
            py[field], js[field],
            "{field}: Python and Node saw different answers\npython: {py:#}\nnode: {js:#}"
        );
    }
    assert_eq!(py["miss"]["raised"], js["miss"]["raised"]);
    assert_eq!(py["miss"]["status"], js["miss"]["status"]);
    assert_eq!(
        llmtape_message(&py["miss"]["message"]),
        llmtape_message(&js["miss"]["message"]),
        "the same request must miss with the same key and nearest recording"
    );
}
