//! Audit: history kept and bounded, the fingerprint-changed header, and
//! `llmtape audit` finding exactly the planted flips, in text and JSON,
//! on a store and on a fixtures folder, with the logprob deltas of the
//! tokens that still line up when the text changed.

use crate::support::*;

#[tokio::test]
async fn re_recording_keeps_a_bounded_history_and_flags_a_flipped_fingerprint() {
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), "[store]\nhistory = 2\n").await;
    let url = proxy.url("/v1/chat/completions");
    let body = question(1);
    mock.script(script("Paris is nice", "fp_a", -0.1));
    let first = post(&url, &body).await;
    assert!(first.header("x-llmtape-fingerprint-changed").is_none());
    let same = post_with(&url, &body, &[("x-llmtape-mode", "record")]).await;
    assert!(
        same.header("x-llmtape-fingerprint-changed").is_none(),
        "same fingerprint: no header"
    );
    mock.script(script("Paris is nice", "fp_b", -0.1));
    let flipped = post_with(&url, &body, &[("cache-control", "no-cache")]).await;
    assert_eq!(
        flipped.header("x-llmtape-fingerprint-changed"),
        Some("fp_a -> fp_b")
    );
    post_with(&url, &body, &[("x-llmtape-mode", "record")]).await;
    let key = RequestKey::from_hex(first.header("x-llmtape-key").unwrap()).unwrap();
    proxy.stop().await;
    let store = SledStore::open(&proxy.store_dir).unwrap();
    let history = store.history(&key).unwrap();
    assert_eq!(history.len(), 2, "four recordings, history bounded to 2");
    assert_eq!(history[1].body, flipped.body, "oldest dropped first");
}

/// Plants: a flip with identical content, one with changed text, one with
/// only logprobs moved, and a re-recording without a flip.
async fn planted(mock: &MockUpstream, store: &std::path::Path) {
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", store).await;
    let url = proxy.url("/v1/chat/completions");
    mock.script(script("Paris is nice", "fp_a", -0.1));
    for n in 1..=4 {
        post(&url, &question(n)).await;
    }
    let rerecord = [("x-llmtape-mode", "record")];
    mock.script(script("Paris is nice", "fp_b", -0.1));
    post_with(&url, &question(1), &rerecord).await;
    mock.script(script("Paris is lovely", "fp_b", -0.1));
    post_with(&url, &question(2), &rerecord).await;
    mock.script(script("Paris is nice", "fp_b", -0.3));
    post_with(&url, &question(3), &rerecord).await;
    mock.script(script("Paris is nice", "fp_a", -0.1));
    post_with(&url, &question(4), &rerecord).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_finds_exactly_the_planted_flips() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    planted(&mock, &store).await;

    let mut audit = llmtape(dir.path());
    audit.args(["audit", "--json", "--store"]).arg(&store);
    let (code, stdout, stderr) = run(audit).await;
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["llmtape_audit"], 1);
    let flips = doc["flips"].as_array().unwrap();
    assert_eq!(flips.len(), 3, "{stdout}");
    let mut changes: Vec<&str> = flips
        .iter()
        .map(|f| f["change"].as_str().unwrap())
        .collect();
    changes.sort();
    assert_eq!(changes, vec!["identical", "logprobs", "text"]);
    for flip in flips {
        assert_eq!(flip["old"]["fingerprint"], "fp_a");
        assert_eq!(flip["new"]["fingerprint"], "fp_b");
        assert_eq!(flip["model"], "gpt-4o");
        assert!(
            flip["old"]["recorded_at"].as_str().unwrap()
                <= flip["new"]["recorded_at"].as_str().unwrap()
        );
    }
    let text = flips.iter().find(|f| f["change"] == "text").unwrap();
    assert_eq!(
        text["choices"][0]["text_diff"],
        "Paris is [-nice-]{+lovely+}"
    );
    assert_eq!(text["choices"][0]["aligned_tokens"], 2, "{text}");
    assert_eq!(
        text["deltas"],
        serde_json::json!([]),
        "no aligned logprob moved"
    );
    let logprobs = flips.iter().find(|f| f["change"] == "logprobs").unwrap();
    let delta = &logprobs["deltas"][0];
    assert_eq!(delta["position"], 0);
    assert_eq!(delta["token"], "Paris ");
    assert!(
        (delta["delta"].as_f64().unwrap() + 0.2).abs() < 1e-9,
        "{delta}"
    );
    assert!(
        (delta["old_percent"].as_f64().unwrap() - 90.4837).abs() < 1e-3,
        "{delta}"
    );
    let model = &doc["models"][0];
    assert_eq!(model["model"], "gpt-4o");
    assert_eq!(model["fingerprints"].as_array().unwrap().len(), 2);
    assert_eq!(model["transitions"][0]["flips"], 3);
    assert_eq!(model["transitions"][0]["text"], 1);
    assert_eq!(model["transitions"][0]["logprobs"], 1);
    assert_eq!(model["transitions"][0]["identical"], 1);

    let mut audit = llmtape(dir.path());
    audit.args(["audit", "--store"]).arg(&store);
    let (code, stdout, _) = run(audit).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("3 fingerprint flip(s) in 3 key(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("text changed")
            && stdout.contains("logprobs only")
            && stdout.contains("identical"),
        "{stdout}"
    );
    assert!(
        stdout.contains("choice 0: Paris is [-nice-]{+lovely+}"),
        "plain when piped: {stdout}"
    );
    assert!(!stdout.contains('\x1b'), "no colour when piped");

    for (args, expected) in [
        (vec!["--model", "gpt-3.5"], 0),
        (vec!["--model", "gpt-4o"], 3),
        (vec!["--since", "2999-01-01"], 0),
        (vec!["--since", "2000-01-01T00:00:00Z"], 3),
    ] {
        let mut audit = llmtape(dir.path());
        audit
            .args(["audit", "--json", "--store"])
            .arg(&store)
            .args(&args);
        let (code, stdout, stderr) = run(audit).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(doc["flips"].as_array().unwrap().len(), expected, "{args:?}");
    }
    let mut audit = llmtape(dir.path());
    audit
        .args(["audit", "--since", "last tuesday", "--store"])
        .arg(&store);
    let (code, _, stderr) = run(audit).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--since"), "{stderr}");

    // The same audit over exported fixtures (history travels with them).
    let out = dir.path().join("fixtures");
    llmtape::cmd::export::export(&SledStore::open(&store).unwrap(), &out, &Default::default())
        .unwrap();
    let mut audit = llmtape(dir.path());
    audit.args(["audit", "--json", "--fixtures"]).arg(&out);
    let (code, stdout, _) = run(audit).await;
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["flips"].as_array().unwrap().len(), 3);
}

/// A flip that changed the text and moved the first token's logprob: the
/// deltas of the tokens that still line up are reported beside the diff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_flip_shows_the_aligned_tokens_logprob_deltas() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    let url = proxy.url("/v1/chat/completions");
    // Tokens "Paris ", "is ", then "nice" / "lovely"; the first moves
    // from -0.1 to -0.3, the second stays at the mock's -0.01.
    mock.script(script("Paris is nice", "fp_a", -0.1));
    post(&url, &question(1)).await;
    mock.script(script("Paris is lovely", "fp_b", -0.3));
    post_with(&url, &question(1), &[("x-llmtape-mode", "record")]).await;
    proxy.stop().await;

    let mut audit = llmtape(dir.path());
    audit.args(["audit", "--json", "--store"]).arg(&store);
    let (code, stdout, stderr) = run(audit).await;
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let flips = doc["flips"].as_array().unwrap();
    assert_eq!(flips.len(), 1, "{stdout}");
    let flip = &flips[0];
    assert_eq!(flip["change"], "text");
    assert_eq!(
        flip["choices"][0]["text_diff"],
        "Paris is [-nice-]{+lovely+}"
    );
    assert_eq!(flip["choices"][0]["aligned_tokens"], 2);
    let deltas = flip["deltas"].as_array().unwrap();
    assert_eq!(deltas.len(), 1, "only the first token moved: {stdout}");
    let first = &deltas[0];
    assert_eq!(first["choice"], 0);
    assert_eq!(first["position"], 0);
    assert_eq!(first["token"], "Paris ");
    assert_eq!(first["old_logprob"], -0.1);
    assert_eq!(first["new_logprob"], -0.3);
    assert!(
        (first["delta"].as_f64().unwrap() + 0.2).abs() < 1e-9,
        "{first}"
    );
    assert!((first["old_percent"].as_f64().unwrap() - 90.4837).abs() < 1e-3);
    assert!((first["new_percent"].as_f64().unwrap() - 74.0818).abs() < 1e-3);

    let mut audit = llmtape(dir.path());
    audit.args(["audit", "--store"]).arg(&store);
    let (code, stdout, stderr) = run(audit).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.ends_with("  text changed"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        lines[at + 1..at + 5],
        [
            "    choice 0: Paris is [-nice-]{+lovely+}",
            "    choice 0 logprobs: 2 aligned token(s), 1 moved",
            "    choice   pos  token                  old       new   \u{394} logprob",
            "         0     0  \"Paris \"           90.484%   74.082%    -0.20000",
        ],
        "{stdout}"
    );
    assert_eq!(lines[at + 5], "", "one moved token, one row: {stdout}");
}
