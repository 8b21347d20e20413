//! The web view (`/_llmtape/ui`) and the `probe --html` report, checked in
//! a real headless Chromium by `tests/ui/check.mjs` (playwright-core, with
//! Debian's `/usr/bin/chromium`, or `$LLMTAPE_TEST_CHROMIUM`): against a
//! real `serve` binary with recordings made through the mock upstream and
//! fingerprint flips, the table lists them, filters narrow them, one opens
//! whole, the audit shows the diff and a chart, and the counters move after
//! a request; the report opens from file:// with its chart drawn. No
//! request may leave 127.0.0.1 (the script refuses and reports any).
//! Screenshots go to `target/ui-screenshots/`.
//!
//! Node is `$LLMTAPE_TEST_NODE`, else `node`; `scripts/test` installs
//! Chromium and runs `npm ci` in `tests/ui`. Without them the browser
//! checks skip with a note, except under CI (`$CI` set), where they fail.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::*;

/// Node and the browser, or `None` after saying why (a panic under CI).
async fn browser() -> Option<PathBuf> {
    let node = match std::env::var_os("LLMTAPE_TEST_NODE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("node"),
    };
    let chromium =
        std::env::var("LLMTAPE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let problem = if !Path::new(REPO)
        .join("tests/ui/node_modules/playwright-core")
        .is_dir()
    {
        "tests/ui/node_modules/playwright-core is not installed".to_string()
    } else if !Path::new(&chromium).exists() {
        format!("no Chromium at {chromium}")
    } else {
        let version = tokio::process::Command::new(&node)
            .arg("--version")
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(WAIT, version).await {
            Ok(Ok(out)) if out.status.success() => return Some(node),
            Ok(Ok(out)) => format!("`{} --version` exited {}", node.display(), out.status),
            Ok(Err(e)) => format!("cannot run {}: {e}", node.display()),
            Err(_) => format!("`{} --version` did not finish", node.display()),
        }
    };
    if std::env::var_os("CI").is_some() {
        panic!("the web view tests need Chromium, node and tests/ui/node_modules: {problem}; run scripts/test (it installs them)");
    }
    eprintln!("skipping: browser check: {problem}; run scripts/test to install it");
    None
}

/// Runs `check.mjs MODE TARGET EXPECT` to its end (bounded).
async fn run_check(node: &Path, mode: &str, target: &str, expect: &Value) -> std::process::Output {
    let shots = Path::new(REPO).join("target/ui-screenshots");
    let run = tokio::process::Command::new(node)
        .arg(Path::new(REPO).join("tests/ui/check.mjs"))
        .args([mode, target, &expect.to_string()])
        .arg(&shots)
        .current_dir(Path::new(REPO).join("tests/ui"))
        // Loopback only: no proxy from the environment may get in the way.
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .kill_on_drop(true)
        .output();
    // Chromium's start and a dozen page loads on a busy 2-core machine.
    tokio::time::timeout(WAIT * 6, run)
        .await
        .expect("the browser check finishes in time")
        .expect("node starts")
}

/// Runs the check and returns its report, after asserting it passed and
/// asked nothing of another host.
async fn check(node: &Path, mode: &str, target: &str, expect: &Value) -> Value {
    let out = run_check(node, mode, target, expect).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{mode} check failed: {stderr}{stdout}"
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("check.mjs printed {stdout:?}: {e}"));
    assert_eq!(report["ok"], true, "{report}");
    let requests = report["requests"].as_array().unwrap();
    assert!(!requests.is_empty(), "the page made requests: {report}");
    for url in requests {
        let url = url.as_str().unwrap();
        let local = if mode == "page" {
            url.starts_with("http://127.0.0.1:")
        } else {
            url.starts_with("file://")
        };
        assert!(local, "{mode} asked {url}");
    }
    for shot in report["screenshots"].as_array().unwrap() {
        let size = std::fs::metadata(shot.as_str().unwrap()).unwrap().len();
        assert!(size > 1000, "{shot} is an image");
    }
    report
}

/// Recordings beyond the six the checks look at, so the table has two pages.
const BULK: usize = 55;

async fn get_json(url: &str) -> Value {
    let reply = send(http::Method::GET, url, &[], "").await;
    assert_eq!(
        reply.status,
        200,
        "{url}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_recordings_flips_and_live_counters_in_chromium() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // gpt-4o-mini is priced, so the hit the page sees saves money.
    std::fs::write(
        dir.path().join("proxy.toml"),
        "[prices]\n\"gpt-4o-mini\" = { input = 0.15, output = 0.60 }\n",
    )
    .unwrap();
    let serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    let chat = serve.url("/v1/chat/completions");

    // The page itself, whatever the browser: served from the binary, with
    // its CSP; an unknown asset is a 404.
    let page = send(http::Method::GET, &serve.url("/_llmtape/ui"), &[], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'self';"));
    let missing = send(http::Method::GET, &serve.url("/_llmtape/ui/x.js"), &[], "").await;
    assert_eq!(missing.status, 404);

    // Two gpt-4o-mini recordings (one a stream), a page of gpt-4.1-nano
    // ones, then four gpt-4o ones,
    // three of them re-recorded under a new fingerprint: a flip with the
    // same answer, one with changed text, one with moved logprobs.
    assert_eq!(post(&chat, CHAT).await.cache(), "miss");
    let stream = post(&chat, STREAM_CHAT).await;
    // More than a page of rows (the page shows 50), of another model.
    for n in 0..BULK {
        let body = format!(
            r#"{{"model":"gpt-4.1-nano","messages":[{{"role":"user","content":"bulk {n}"}}]}}"#
        );
        assert_eq!(post(&chat, &body).await.cache(), "miss");
    }
    mock.script(script("Paris is nice", "fp_a", -0.1));
    let mut keys = Vec::new();
    for n in 1..=4 {
        keys.push(
            post(&chat, &question(n))
                .await
                .header("x-llmtape-key")
                .unwrap()
                .to_string(),
        );
    }
    let rerecord = [("x-llmtape-mode", "record")];
    mock.script(script("Paris is nice", "fp_b", -0.1));
    post_with(&chat, &question(1), &rerecord).await;
    mock.script(script("Paris is lovely", "fp_b", -0.1));
    post_with(&chat, &question(2), &rerecord).await;
    mock.script(script("Paris is nice", "fp_b", -0.3));
    post_with(&chat, &question(3), &rerecord).await;

    // What the page must show, from the API it reads (the API's own
    // counts are the ui-api tests' business) and from what was planted.
    let stream_key = stream.header("x-llmtape-key").unwrap().to_string();
    let detail = get_json(&serve.url(&format!("/_llmtape/api/recordings/{stream_key}"))).await;
    let events = detail["events"].as_array().unwrap().len();
    assert!(events >= 4, "three content events and [DONE]: {detail}");
    let fingerprints = get_json(&serve.url("/_llmtape/api/fingerprints")).await;
    let bars: usize = fingerprints["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["fingerprints"].as_array().unwrap().len())
        .sum();
    let expect = json!({
        "total": 6 + BULK,
        "page": 50,
        "filter": {"model": "gpt-4o-mini", "rows": 2},
        "text": {"q": "question 2", "rows": 1, "key": keys[1]},
        "stream": {"key": stream_key, "request_contains": "\"Count\"", "events": events},
        "plain": {"key": keys[1], "answer_contains": "Paris is lovely", "history": 1},
        "fingerprints": bars,
        "audit": {"flips": 3, "deleted": "nice", "inserted": "lovely", "delta_bars": 1},
        "hit": {"path": "/v1/chat/completions", "body": CHAT},
    });
    assert!(
        bars >= 3,
        "fp_a and fp_b of gpt-4o, and gpt-4o-mini's: {fingerprints}"
    );
    let Some(node) = browser().await else { return };
    let calls = mock.calls();
    check(&node, "page", &serve.url(""), &expect).await;
    assert_eq!(mock.calls(), calls, "the page's request was a hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_html_writes_one_self_contained_report_that_draws_its_chart() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probe.toml");
    std::fs::write(&config, format!("[upstream]\nurl = {:?}\n", mock.url())).unwrap();
    mock.script(Script {
        contents: vec![
            "Paris is nice".into(),
            "Paris is nice".into(),
            "Paris is nice".into(),
            "Paris is lovely <b>&</b>".into(),
        ],
        fingerprints: vec!["fp_a".into(), "fp_b".into(), "fp_a".into(), "fp_a".into()],
        first_logprobs: vec![-0.1, -0.1, -0.2, -0.3],
    });
    let report = dir.path().join("report.html");
    let ran = run_in(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "probe",
            "--n",
            "8",
            "--json",
            "--html",
            report.to_str().unwrap(),
        ],
        Some(&question(1)),
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.err());
    assert!(ran.err().contains("report written to"), "{}", ran.err());
    let doc: Value = serde_json::from_str(&ran.out()).unwrap();
    let html = std::fs::read_to_string(&report).unwrap();
    // One file: nothing linked, every script and style inline, the data in it.
    for linked in ["src=", "href=", "<link", "@import", "url("] {
        assert!(!html.contains(linked), "the report has {linked}");
    }
    assert!(
        !html.contains("<b>&</b>"),
        "an answer is data, never markup"
    );
    let start = html.find(r#"id="probe-data">"#).unwrap() + 16;
    let end = start + html[start..].find("</script>").unwrap();
    let embedded: Value = serde_json::from_str(&html[start..end]).unwrap();
    assert_eq!(embedded, doc, "the report holds the --json document");

    // A path that cannot be written fails before any request is sent.
    let calls = mock.calls();
    let bad = dir.path().join("no/such/dir/report.html");
    let ran = run_in(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "probe",
            "--n",
            "2",
            "--html",
            bad.to_str().unwrap(),
        ],
        Some(&question(1)),
    )
    .await;
    assert_eq!(ran.code, 2);
    assert!(
        ran.err().contains("cannot write the --html report"),
        "{}",
        ran.err()
    );
    assert_eq!(mock.calls(), calls, "no request sent");

    let Some(node) = browser().await else { return };
    let expect = json!({
        "clusters": 3,
        "outputs": ["Paris is nice", "Paris is lovely <b>&</b>"],
        "fingerprints": ["fp_a", "fp_b"],
    });
    check(&node, "report", report.to_str().unwrap(), &expect).await;

    // The guard itself: the same report without its CSP and with an image
    // from another host fails the check (the request is refused, not sent).
    let leaky = dir.path().join("leaky.html");
    let html: String = html
        .lines()
        .filter(|l| !l.contains("Content-Security-Policy"))
        .map(|l| format!("{l}\n"))
        .collect();
    let html = html.replace(
        "</main>",
        r#"</main><img alt="" src="http://198.51.100.7/pixel.png">"#,
    );
    std::fs::write(&leaky, html).unwrap();
    let out = run_check(&node, "report", leaky.to_str().unwrap(), &expect).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a leaking report must fail the check"
    );
    assert!(
        stderr.contains("asked other origins: http://198.51.100.7/pixel.png"),
        "{stderr}"
    );
}
