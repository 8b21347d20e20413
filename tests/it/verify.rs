//! `llmtape verify` and `llmtape probe`, driven through the binary against
//! the mock upstream: verdicts and exit codes, `--update`, `--sample`, 429
//! backoff with `retry-after`, and probe's exact counts on a known
//! distribution.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

/// A temp dir with a store of `count` chat recordings ("Paris is nice",
/// fp_a, first logprob -0.1) and a config file pointing at the mock.
struct Setup {
    dir: tempfile::TempDir,
    store: PathBuf,
    config: PathBuf,
    keys: Vec<RequestKey>,
}

async fn recorded(mock: &MockUpstream, count: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    mock.script(script("Paris is nice", "fp_a", -0.1));
    let mut keys = Vec::new();
    for n in 1..=count {
        let reply = post(&proxy.url("/v1/chat/completions"), &question(n)).await;
        assert_eq!(reply.cache(), "miss");
        keys.push(RequestKey::from_hex(reply.header("x-llmtape-key").unwrap()).unwrap());
    }
    proxy.stop().await;
    let config = write_config(dir.path(), &mock.url());
    Setup {
        dir,
        store,
        config,
        keys,
    }
}

fn write_config(dir: &Path, upstream: &str) -> PathBuf {
    let config = dir.join("verify.toml");
    std::fs::write(&config, format!("[upstream]\nurl = {upstream:?}\n")).unwrap();
    config
}

/// `llmtape --config CFG --store STORE verify ARGS...`
async fn verify(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let mut cmd = llmtape(setup.dir.path());
    cmd.arg("--config")
        .arg(&setup.config)
        .arg("--store")
        .arg(&setup.store)
        .arg("verify")
        .args(args)
        .env_remove("OPENAI_API_KEY");
    run(cmd).await
}

async fn verify_json(setup: &Setup, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = verify(setup, &all).await;
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify --json is not JSON ({e}): {stdout}\n{stderr}"));
    (code, doc, stderr)
}

fn verdicts(doc: &Value) -> Vec<&str> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_answers_verify_clean_with_exit_0() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 3).await;
    let before = mock.calls();
    let (code, stdout, stderr) = verify(&setup, &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(mock.calls() - before, 3, "every recording re-sent once");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "one line per key plus the summary: {stdout}"
    );
    let mut keys = setup.keys.clone();
    keys.sort();
    for (line, key) in lines.iter().zip(&keys) {
        assert!(line.starts_with(&key.to_hex()[..16]), "{line}");
        assert!(line.ends_with("  same"), "{line}");
        assert!(
            line.contains("POST /v1/chat/completions  gpt-4o  "),
            "{line}"
        );
    }
    assert!(
        lines[3].contains("verified 3 recording(s) against http://127.0.0.1:")
            && lines[3].contains(
                "3 same, 0 logprobs drifted, 0 different text, 0 different fingerprint, 0 error(s)"
            ),
        "{}",
        lines[3]
    );
    let seen = mock.seen();
    let resent: Value = serde_json::from_slice(&seen[seen.len() - 1].body).unwrap();
    assert_eq!(resent["logprobs"], true, "the recorded request is re-sent");

    let (code, doc, _) = verify_json(&setup, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(doc["llmtape_verify"], 1);
    assert_eq!(doc["summary"]["checked"], 3);
    assert_eq!(doc["summary"]["differ"], 0);
    assert_eq!(verdicts(&doc), vec!["same"; 3]);
    let first = &doc["results"][0];
    assert_eq!(first["key"], keys[0].to_hex(), "sorted by key");
    assert_eq!(first["change"]["change"], "identical");
    assert_eq!(first["old_fingerprint"], "fp_a");
    assert_eq!(first["new_fingerprint"], "fp_a");
    assert_eq!(first["differs"], false);
    assert_eq!(first["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_logprobs_drift_unless_within_the_tolerance() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 2).await;
    mock.script(script("Paris is nice", "fp_a", -0.35));

    let (code, doc, stderr) = verify_json(&setup, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("some answers differ"), "{stderr}");
    assert_eq!(verdicts(&doc), vec!["logprobs_drifted"; 2]);
    let result = &doc["results"][0];
    let delta = result["max_logprob_delta"].as_f64().unwrap();
    assert!((delta - 0.25).abs() < 1e-9, "largest delta {delta}");
    assert_eq!(result["change"]["change"], "logprobs");
    assert_eq!(result["change"]["deltas"][0]["position"], 0);
    assert_eq!(result["fingerprint_changed"], false);
    assert_eq!(doc["summary"]["logprobs_drifted"], 2);

    let (code, stdout, _) = verify(&setup, &[]).await;
    assert_eq!(code, 1);
    assert!(
        stdout.contains("logprobs drifted (largest \u{394} 0.250000)"),
        "{stdout}"
    );

    let (code, doc, stderr) = verify_json(&setup, &["--logprob-tolerance", "0.3"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(verdicts(&doc), vec!["same"; 2]);
    assert_eq!(doc["logprob_tolerance"], 0.3);
    let (code, _, _) = verify_json(&setup, &["--logprob-tolerance", "0.2"]).await;
    assert_eq!(code, 1, "a tolerance below the delta still fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_text_and_a_flipped_fingerprint_are_reported() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 2).await;

    mock.script(script("Paris is lovely", "fp_a", -0.1));
    let (code, stdout, _) = verify(&setup, &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(stdout.matches("  different text\n").count(), 2, "{stdout}");
    assert!(stdout.contains("2 different text"), "{stdout}");
    let (_, doc, _) = verify_json(&setup, &[]).await;
    assert_eq!(verdicts(&doc), vec!["different_text"; 2]);
    assert_eq!(
        doc["results"][0]["change"]["choices"][0]["text_diff"],
        "Paris is [-nice-]{+lovely+}"
    );

    mock.script(script("Paris is nice", "fp_b", -0.1));
    let (code, stdout, _) = verify(&setup, &[]).await;
    assert_eq!(code, 1, "a fingerprint change alone counts as a difference");
    assert_eq!(
        stdout
            .matches("  different fingerprint fp_a -> fp_b\n")
            .count(),
        2,
        "{stdout}"
    );
    let (_, doc, _) = verify_json(&setup, &[]).await;
    let result = &doc["results"][1];
    assert_eq!(result["verdict"], "same");
    assert_eq!(result["fingerprint_changed"], true);
    assert_eq!(result["differs"], true);
    assert_eq!(result["new_fingerprint"], "fp_b");

    mock.script(script("Paris is lovely", "fp_b", -0.1));
    let (_, stdout, _) = verify(&setup, &[]).await;
    assert!(
        stdout.contains("  different text, different fingerprint fp_a -> fp_b\n"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_re_records_and_keeps_the_old_answer_in_history() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 2).await;
    let before: Vec<_> = {
        let store = SledStore::open(&setup.store).unwrap();
        setup
            .keys
            .iter()
            .map(|k| store.get(k).unwrap().unwrap())
            .collect()
    };

    mock.script(script("Paris is lovely", "fp_b", -0.1));
    let (code, stdout, stderr) = verify(&setup, &["--update"]).await;
    assert_eq!(code, 1, "the run still reports the difference: {stderr}");
    assert_eq!(stdout.matches("; updated\n").count(), 2, "{stdout}");
    assert!(stdout.contains("; 2 updated"), "{stdout}");

    {
        let store = SledStore::open(&setup.store).unwrap();
        for (key, old) in setup.keys.iter().zip(&before) {
            let current = store.get(key).unwrap().unwrap();
            assert_eq!(current.meta.system_fingerprint.as_deref(), Some("fp_b"));
            assert!(String::from_utf8_lossy(&current.body).contains("Paris is lovely"));
            assert_eq!(current.meta.request, old.meta.request, "same request");
            assert_eq!(current.meta.key, *key);
            let history = store.history(key).unwrap();
            assert_eq!(history.len(), 1);
            assert_eq!(&history[0], old, "the old recording is kept whole");
        }
    }

    let (code, doc, stderr) = verify_json(&setup, &["--update"]).await;
    assert_eq!(code, 0, "now the recordings match: {stderr}");
    assert_eq!(
        doc["summary"]["updated"], 0,
        "same answers are not re-stored"
    );
    let store = SledStore::open(&setup.store).unwrap();
    assert_eq!(store.history(&setup.keys[0]).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_and_filters_pick_what_is_re_sent() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 4).await;
    let before = mock.calls();
    let (code, doc, stderr) = verify_json(&setup, &["--sample", "1"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mock.calls() - before, 1, "exactly one request re-sent");
    assert_eq!(doc["results"].as_array().unwrap().len(), 1);
    let key = doc["results"][0]["key"].as_str().unwrap();
    assert!(setup.keys.iter().any(|k| k.to_hex() == key));

    let before = mock.calls();
    let (code, _, _) = verify_json(&setup, &["--model", "gpt-4o", "--sample", "9"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        mock.calls() - before,
        4,
        "a sample larger than the store is all of it"
    );

    let (code, _, stderr) = verify(&setup, &["--model", "no-such-model"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("nothing to verify"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_with_retry_after() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 2).await;
    let first_new = mock.seen().len();
    mock.rate_limit_next(2);
    let (code, doc, stderr) = verify_json(&setup, &["--concurrency", "1"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(verdicts(&doc), vec!["same"; 2]);
    let attempts: Vec<u64> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts.iter().sum::<u64>(),
        4,
        "two 429s, then two answers"
    );
    let seen = &mock.seen()[first_new..];
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen[0].body, seen[1].body,
        "the rate-limited request is retried"
    );
    assert_eq!(seen[1].body, seen[2].body);
    for (limited, retry) in [(&seen[0], &seen[1]), (&seen[1], &seen[2])] {
        let waited = retry.at.duration_since(limited.at);
        assert!(
            waited >= Duration::from_millis(1000),
            "retry-after: 1 was honoured, waited {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_an_error_per_key_not_a_crash() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 2).await;
    let closed = ClosedPort::new();
    write_config(setup.dir.path(), &format!("http://{}", closed.addr));
    let (code, stdout, stderr) = verify(&setup, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout.matches("  error: ").count(), 2, "{stdout}");
    assert!(stdout.contains("could not reach the upstream"), "{stdout}");
    assert!(stdout.contains("2 error(s)"), "{stdout}");
    assert!(
        stderr.contains("2 of 2 recording(s) could not be verified"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_recording_is_compared_by_its_text() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"stream":true}"#;
    let reply = post(&proxy.url("/v1/chat/completions"), body).await;
    assert_eq!(reply.cache(), "miss");
    proxy.stop().await;
    let setup = Setup {
        config: write_config(dir.path(), &mock.url()),
        dir,
        store,
        keys: vec![],
    };
    // The mock's stream text carries the call number, so a re-sent stream
    // always reads differently: proof that both streams were read whole.
    let (code, doc, stderr) = verify_json(&setup, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(verdicts(&doc), vec!["different_text"]);
    let diff = doc["results"][0]["change"]["choices"][0]["text_diff"]
        .as_str()
        .unwrap();
    assert!(diff.contains("[-#1") && diff.contains("{+#2"), "{diff}");
    assert_eq!(doc["results"][0]["fingerprint_changed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_api_key_is_sent_upstream_and_never_printed() {
    const KEY: &str = concat!("sk-", "test-verify-dummy-0123456789");
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 1).await;
    let mut cmd = llmtape(setup.dir.path());
    cmd.arg("--config")
        .arg(&setup.config)
        .arg("--store")
        .arg(&setup.store)
        .args(["verify", "--json"])
        .env("OPENAI_API_KEY", KEY);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let seen = mock.seen();
    assert_eq!(
        seen.last().unwrap().headers["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
}

/// `llmtape --config CFG probe ARGS...` with `body` on stdin.
async fn probe(dir: &Path, config: &Path, body: &str, args: &[&str]) -> (i32, String, String) {
    let request = dir.join("request.json");
    std::fs::write(&request, body).unwrap();
    let mut cmd = llmtape(dir);
    cmd.arg("--config")
        .arg(config)
        .arg("probe")
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .stdin(std::fs::File::open(&request).unwrap());
    run(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_counts_a_known_distribution_exactly() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url());
    // Cycled per call: any 8 consecutive calls see each position twice.
    mock.script(Script {
        contents: vec![
            "Paris is nice".into(),
            "Paris is nice".into(),
            "Paris is nice".into(),
            "Paris is lovely".into(),
        ],
        fingerprints: vec!["fp_a".into(), "fp_b".into(), "fp_a".into(), "fp_a".into()],
        first_logprobs: vec![-0.1, -0.1, -0.2, -0.3],
    });
    let (code, stdout, stderr) = probe(
        dir.path(),
        &config,
        &question(1),
        &["--n", "8", "--concurrency", "3", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mock.calls(), 8);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["llmtape_probe"], 1);
    assert_eq!(
        (doc["requests"].as_u64(), doc["answered"].as_u64()),
        (Some(8), Some(8))
    );
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["logprobs_requested"], true);
    let clusters: Vec<(String, f64, u64)> = doc["first_token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["token"].as_str().unwrap().to_string(),
                c["logprob"].as_f64().unwrap(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        clusters,
        vec![
            ("Paris ".to_string(), -0.1, 4),
            ("Paris ".to_string(), -0.2, 2),
            ("Paris ".to_string(), -0.3, 2)
        ]
    );
    assert_eq!(doc["first_token_logprobs"][0]["share_percent"], 50.0);
    let counted = |list: &str, field: &str| -> Vec<(String, u64)> {
        doc[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x[field].as_str().unwrap().to_string(),
                    x["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        counted("fingerprints", "fingerprint"),
        vec![("fp_a".to_string(), 6), ("fp_b".to_string(), 2)]
    );
    assert_eq!(
        counted("outputs", "text"),
        vec![
            ("Paris is nice".to_string(), 6),
            ("Paris is lovely".to_string(), 2)
        ]
    );
    assert_eq!(doc["errors"], serde_json::json!([]));

    // A coarse tolerance merges -0.2 into -0.3's cluster (anchored at -0.3).
    let (code, stdout, _) = probe(
        dir.path(),
        &config,
        &question(1),
        &["--n", "8", "--tolerance", "0.15", "--json"],
    )
    .await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let counts: Vec<u64> = doc["first_token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![4, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_tables_and_says_when_logprobs_were_not_asked_for() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url());
    mock.script(Script {
        contents: vec!["Paris is nice".into()],
        fingerprints: vec!["fp_a".into(), "fp_b".into()],
        first_logprobs: vec![-0.1, -0.2],
    });
    let (code, stdout, stderr) = probe(dir.path(), &config, &question(1), &["--n", "4"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": 4 answered, 0 failed"), "{stdout}");
    assert!(stdout.contains("outputs: 1 distinct"), "{stdout}");
    assert!(
        stdout.contains("        4  100.0%  \"Paris is nice\""),
        "{stdout}"
    );
    assert!(stdout.contains("fingerprints: 2 distinct"), "{stdout}");
    assert!(stdout.contains("        2   50.0%  fp_a"), "{stdout}");
    assert!(
        stdout.contains("first-token logprobs: 2 distinct"),
        "{stdout}"
    );
    assert!(stdout.contains("90.4837%"), "{stdout}");

    let no_logprobs = CHAT;
    let (code, stdout, _) = probe(dir.path(), &config, no_logprobs, &["--n", "2"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("the request did not ask for logprobs; add \"logprobs\": true"),
        "{stdout}"
    );
    let (_, stdout, _) = probe(dir.path(), &config, no_logprobs, &["--n", "2", "--json"]).await;
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["logprobs_requested"], false);
    assert_eq!(doc["without_logprobs"], 2);
    assert_eq!(doc["first_token_logprobs"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_fails_only_when_every_request_fails_and_refuses_bad_input() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url());
    mock.script(script("Paris is nice", "fp_a", -0.1));
    // Partial failures are counted by `probe::tally` (unit tests); here
    // every request fails, which is the one case that fails the command.
    let closed = ClosedPort::new();
    let dead_dir = dir.path().join("dead");
    std::fs::create_dir(&dead_dir).unwrap();
    let dead = write_config(&dead_dir, &format!("http://{}", closed.addr));
    let (code, _, stderr) = probe(dir.path(), &dead, &question(1), &["--n", "3"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("all 3 requests failed: 3\u{d7} llmtape could not reach the upstream"),
        "{stderr}"
    );

    let (code, _, stderr) = probe(dir.path(), &config, "not json", &["--n", "3"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    let (code, _, stderr) = probe(dir.path(), &config, "", &["--n", "3"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("stdin was empty"), "{stderr}");
    assert_eq!(mock.calls(), 0, "bad input sends nothing");
}

/// `llmtape ARGS...` in `dir` with no `--config`, so `./proxy.toml` is the
/// file; `env` is added to the child's environment only (the caller's
/// `OPENAI_API_KEY` is removed unless `env` sets it), `stdin` is its input.
async fn in_dir(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut cmd = llmtape(dir);
    cmd.args(args)
        .env_remove("OPENAI_API_KEY")
        .envs(env.iter().copied());
    if let Some(body) = stdin {
        let request = dir.join("request.json");
        std::fs::write(&request, body).unwrap();
        cmd.stdin(std::fs::File::open(&request).unwrap());
    }
    run(cmd).await
}

/// Runs `command` (verify or probe, sending `calls` requests a run) in
/// `dir` with the upstream given each way `serve` takes it, and checks
/// each run reached the mock, which only the winning way names: every way
/// below the one under test points at a closed port. Then
/// `upstream.api_key_env`: the configured key goes upstream, the caller's
/// does not, and neither is printed.
async fn resolves_the_upstream_as_serve_does(
    mock: &MockUpstream,
    dir: &Path,
    command: &[&str],
    stdin: Option<&str>,
    calls: usize,
) {
    const UPSTREAM_KEY: &str = concat!("sk-", "test-upstream-dummy-5f1c");
    const CALLER_KEY: &str = concat!("sk-", "test-caller-dummy-77a0");
    let closed = ClosedPort::new();
    let dead = format!("http://{}", closed.addr);
    let live = mock.url();
    let proxy_toml = |url: &str, extra: &str| {
        std::fs::write(
            dir.join("proxy.toml"),
            format!("[upstream]\nurl = {url:?}\n{extra}"),
        )
        .unwrap()
    };
    let mut flagged = command.to_vec();
    flagged.extend(["--upstream", live.as_str()]);
    // (what is checked, upstream.url in the file, LLMTAPE_UPSTREAM, args)
    let none: &[(&str, &str)] = &[];
    let cases = [
        ("upstream.url in ./proxy.toml", &live, none, command),
        (
            "LLMTAPE_UPSTREAM over the file",
            &dead,
            &[("LLMTAPE_UPSTREAM", live.as_str())][..],
            command,
        ),
        (
            "--upstream over LLMTAPE_UPSTREAM",
            &dead,
            &[("LLMTAPE_UPSTREAM", dead.as_str())][..],
            &flagged[..],
        ),
    ];
    for (case, file_url, env, args) in cases {
        proxy_toml(file_url, "");
        let before = mock.calls();
        let (code, stdout, stderr) = in_dir(dir, args, env, stdin).await;
        assert_eq!(code, 0, "{case}: {stdout}\n{stderr}");
        assert_eq!(
            mock.calls() - before,
            calls,
            "{case}: every request reached the mock"
        );
        assert!(
            stdout.contains(&live),
            "{case}: the report names it: {stdout}"
        );
    }

    proxy_toml(&live, "api_key_env = \"MOCK_UPSTREAM_KEY\"\n");
    let before = mock.seen().len();
    let (code, stdout, stderr) = in_dir(
        dir,
        command,
        &[
            ("MOCK_UPSTREAM_KEY", UPSTREAM_KEY),
            ("OPENAI_API_KEY", CALLER_KEY),
        ],
        stdin,
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let seen = mock.seen();
    assert_eq!(seen.len() - before, calls);
    for request in &seen[before..] {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {UPSTREAM_KEY}").as_str(),
            "the key from upstream.api_key_env is sent"
        );
        for value in request.headers.values() {
            assert!(
                !value.to_str().unwrap_or_default().contains(CALLER_KEY),
                "the caller's key is not sent: {:?}",
                request.headers
            );
        }
    }
    for key in [UPSTREAM_KEY, CALLER_KEY] {
        assert!(!stdout.contains(key) && !stderr.contains(key));
    }

    // The variable unset: a configuration error before anything is sent.
    let before = mock.calls();
    let (code, _, stderr) = in_dir(dir, command, &[], stdin).await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MOCK_UPSTREAM_KEY"), "{stderr}");
    assert_eq!(mock.calls(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_resolves_the_upstream_and_its_key_as_serve_does() {
    let mock = MockUpstream::start().await;
    let setup = recorded(&mock, 2).await;
    let store = setup.store.display().to_string();
    resolves_the_upstream_as_serve_does(
        &mock,
        setup.dir.path(),
        &["--store", &store, "verify"],
        None,
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_resolves_the_upstream_and_its_key_as_serve_does() {
    let mock = MockUpstream::start().await;
    mock.script(script("Paris is nice", "fp_a", -0.1));
    let dir = tempfile::tempdir().unwrap();
    resolves_the_upstream_as_serve_does(
        &mock,
        dir.path(),
        &["probe", "--n", "3", "--concurrency", "2"],
        Some(&question(1)),
        3,
    )
    .await;
}
