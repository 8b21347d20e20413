//! End to end with the official `openai` Python SDK: the SDK talks to an
//! in-process llmtape (127.0.0.1:0) in front of the mock upstream in
//! `support`, through `tests/sdk/python_core.py`.
//!
//! The interpreter is `$LLMTAPE_TEST_PYTHON`, else `<repo>/.venv/bin/python`;
//! `scripts/test` creates that venv and installs `openai` into it. Without a
//! usable interpreter these tests skip with a note on stderr, except under CI
//! (`$CI` set), where they fail.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use support::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

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
            let probe = python.clone();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(&probe)
                    .args(["-c", "import openai"])
                    .stdin(Stdio::null())
                    .output()
            })
            .await
            .unwrap();
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

/// Runs `python_core.py SCENARIO` against the proxy's `/v1` without
/// blocking the runtime the proxy runs on; killed after `support::WAIT`.
async fn run_scenario(python: &Path, proxy: &TestProxy, scenario: &str) -> Value {
    let script = Path::new(REPO).join("tests/sdk/python_core.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
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
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let label = format!("{} {scenario}", script.display());
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
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
        panic!("{scenario}: the Python SDK script did not finish within {WAIT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    assert!(
        status.success(),
        "{scenario}: the Python SDK script failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
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
