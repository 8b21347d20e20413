//! Which routes are cached, end to end: the audio and image routes (under
//! `/v1/` and Azure's deployment form), multipart forms keyed by their
//! parts, binary answers replayed byte for byte and kept in fixtures as
//! base64, `[routes]` adding and removing routes, and every answer on a
//! cached route (a 502 or 504 included) labelled and counted. The mock
//! upstream counts its calls, so a replay is proven to come from the store.

use std::path::Path;

use http::{Method, StatusCode};

use crate::support::*;

/// A multipart form as an SDK sends it: `model`, then a `file` part with a
/// filename and content type, under `boundary`.
fn form(boundary: &str, filename: &str, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Bytes of a (fake) WAV file: not UTF-8, with CRLFs and dashes inside,
/// which a form splitter must not mistake for a boundary.
fn wav() -> Vec<u8> {
    let mut bytes = b"RIFF\x24\x00\x00\x00WAVEfmt \r\n--\r\n".to_vec();
    bytes.extend((0..=255u8).rev());
    bytes
}

/// POSTs a multipart form under `boundary`.
async fn post_form(url: &str, boundary: &str, body: Vec<u8>) -> Reply {
    let content_type = format!("multipart/form-data; boundary={boundary}");
    send(
        Method::POST,
        url,
        &[
            ("content-type", content_type.as_str()),
            ("authorization", "Bearer sk-test-dummy"),
        ],
        body,
    )
    .await
}

/// The body of a request on a cached route: JSON, or a form.
enum Payload {
    Json(&'static str),
    Form,
}

async fn call(url: &str, payload: &Payload) -> Reply {
    match payload {
        Payload::Json(body) => post(url, body).await,
        Payload::Form => {
            post_form(
                url,
                "sdk-boundary-1",
                form("sdk-boundary-1", "a.wav", &wav()),
            )
            .await
        }
    }
}

const SPEECH: &str =
    r#"{"model":"tts-1","voice":"alloy","input":"Say hi","response_format":"mp3"}"#;
const IMAGE: &str =
    r#"{"model":"dall-e-3","prompt":"a lighthouse","n":1,"response_format":"b64_json"}"#;

#[tokio::test]
async fn every_audio_and_image_route_records_then_replays_without_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let deployment = "/openai/deployments/my-deployment";
    let version = "?api-version=2024-10-21";
    let mut routes = Vec::new();
    for (op, payload) in [
        ("audio/transcriptions", Payload::Form),
        ("audio/translations", Payload::Form),
        ("audio/speech", Payload::Json(SPEECH)),
        ("images/generations", Payload::Json(IMAGE)),
        ("images/edits", Payload::Form),
        ("images/variations", Payload::Form),
    ] {
        routes.push((format!("/v1/{op}"), op, payload));
    }
    let azure: Vec<_> = routes
        .iter()
        .map(|(_, op, payload)| {
            let payload = match payload {
                Payload::Json(body) => Payload::Json(body),
                Payload::Form => Payload::Form,
            };
            (format!("{deployment}/{op}{version}"), *op, payload)
        })
        .collect();
    routes.extend(azure);
    for (path, op, payload) in &routes {
        let calls = mock.calls();
        let first = call(&proxy.url(path), payload).await;
        assert_eq!(first.status, StatusCode::OK, "{path}");
        assert_eq!(first.cache(), "miss", "{path}");
        assert_eq!(
            mock.calls(),
            calls + 1,
            "{path}: the miss asked the upstream"
        );
        let second = call(&proxy.url(path), payload).await;
        assert_eq!(second.cache(), "hit", "{path}");
        assert_eq!(second.body, first.body, "{path}: byte for byte");
        assert_eq!(
            second.header("x-llmtape-key"),
            first.header("x-llmtape-key"),
            "{path}"
        );
        assert_eq!(
            second.header("content-type"),
            first.header("content-type"),
            "{path}"
        );
        assert_eq!(
            mock.calls(),
            calls + 1,
            "{path}: the hit came from the store"
        );
        if *op == "audio/speech" {
            assert_eq!(first.header("content-type"), Some("audio/mpeg"));
            assert!(std::str::from_utf8(&first.body).is_err(), "binary audio");
            assert_eq!(first.body, binary_answer(calls + 1), "the mock's bytes");
        }
    }
    assert_eq!(
        mock.calls_to("/audio/speech"),
        2,
        "one per form of the route"
    );
}

#[tokio::test]
async fn a_form_under_another_boundary_is_the_same_key_and_a_changed_part_is_not() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/audio/transcriptions");
    let first = post_form(&url, "aaaa", form("aaaa", "a.wav", &wav())).await;
    assert_eq!(first.cache(), "miss");
    let other = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    let second = post_form(&url, other, form(other, "a.wav", &wav())).await;
    assert_eq!(second.cache(), "hit", "the boundary is not part of the key");
    assert_eq!(
        second.header("x-llmtape-key"),
        first.header("x-llmtape-key")
    );
    assert_eq!(second.body, first.body);
    assert_eq!(mock.calls(), 1);

    let renamed = post_form(&url, "aaaa", form("aaaa", "b.wav", &wav())).await;
    assert_eq!(renamed.cache(), "miss", "the filename is part of the key");
    let mut changed = wav();
    changed[40] ^= 1;
    let other_bytes = post_form(&url, "aaaa", form("aaaa", "a.wav", &changed)).await;
    assert_eq!(
        other_bytes.cache(),
        "miss",
        "the file's bytes are part of the key"
    );
    let keys =
        [&first, &renamed, &other_bytes].map(|r| r.header("x-llmtape-key").unwrap().to_string());
    assert_eq!(count_by(keys.iter()).len(), 3);
    assert_eq!(mock.calls(), 3);
    // What the upstream received is the form as sent, boundary and all.
    let seen = mock.seen();
    assert!(seen[0].body.starts_with(b"--aaaa\r\n"));
    assert_eq!(seen[0].body, form("aaaa", "a.wav", &wav()));
}

#[tokio::test]
async fn a_binary_answer_replays_byte_exact_from_the_store_from_fixtures_and_after_import() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    let speech = post(&proxy.url("/v1/audio/speech"), SPEECH).await;
    assert_eq!(speech.cache(), "miss");
    let png = post_with(
        &proxy.url("/v1/images/generations"),
        IMAGE,
        &[("x-mock-content-type", "image/png")],
    )
    .await;
    assert_eq!(png.header("content-type"), Some("image/png"));
    proxy.stop().await;

    // Export: the binary bodies are base64 in the fixture files.
    let fixtures = dir.path().join("fixtures");
    let (code, _, stderr) = run({
        let mut cmd = llmtape(dir.path());
        cmd.args(["export", "--out"])
            .arg(&fixtures)
            .arg("--store")
            .arg(&store);
        cmd
    })
    .await;
    assert_eq!(code, 0, "{stderr}");
    let files = all_files(&fixtures);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(
            doc["response"]["body"]["kind"],
            "base64",
            "{}",
            file.display()
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(fixtures.join("audio.speech/tts-1"))),
        "{files:?}"
    );

    // Served from the fixtures folder, offline: the same bytes.
    let closed = ClosedPort::new();
    let offline = format!("http://{}", closed.addr);
    let mut from_fixtures = TestProxy::start_fixtures(&offline, "", &fixtures).await;
    for (path, body, recorded) in [
        ("/v1/audio/speech", SPEECH, &speech),
        ("/v1/images/generations", IMAGE, &png),
    ] {
        let replay = post(&from_fixtures.url(path), body).await;
        assert_eq!(replay.cache(), "hit", "{path}");
        assert_eq!(replay.body, recorded.body, "{path}");
        assert_eq!(
            replay.header("content-type"),
            recorded.header("content-type")
        );
    }
    from_fixtures.stop().await;

    // Imported into a new store, offline: the same bytes again.
    let copy = dir.path().join("copy");
    let (code, _, stderr) = run({
        let mut cmd = llmtape(dir.path());
        cmd.arg("import").arg(&fixtures).arg("--store").arg(&copy);
        cmd
    })
    .await;
    assert_eq!(code, 0, "{stderr}");
    let from_copy = TestProxy::start_with_store(&offline, "mode = \"replay\"\n", &copy).await;
    let replay = post(&from_copy.url("/v1/audio/speech"), SPEECH).await;
    assert_eq!(replay.cache(), "hit");
    assert_eq!(replay.body, speech.body);
    assert_eq!(replay.header("content-type"), Some("audio/mpeg"));
    assert_eq!(
        mock.calls(),
        2,
        "nothing after the recording reached the upstream"
    );
}

#[tokio::test]
async fn routes_cache_records_custom_routes_and_prefixes_and_leaves_others_alone() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(
        &mock.url(),
        "[routes]\ncache = [\"POST /v1/rerank\", \"POST /v2/*\"]\n",
    )
    .await;
    let rerank = r#"{"model":"rerank-1","query":"q","documents":["a","b"]}"#;
    for path in ["/v1/rerank", "/v2/score", "/v2/vendor/deep/path"] {
        let calls = mock.calls();
        let first = post(&proxy.url(path), rerank).await;
        assert_eq!(first.cache(), "miss", "{path}");
        assert_eq!(first.header("x-llmtape-key").map(str::len), Some(64));
        let second = post(&proxy.url(path), rerank).await;
        assert_eq!(second.cache(), "hit", "{path}");
        assert_eq!(second.body, first.body, "{path}");
        assert_eq!(mock.calls(), calls + 1, "{path}");
    }
    // A binary answer on a custom route replays byte for byte too.
    let headers = [("x-mock-content-type", "image/png")];
    let png = post_with(&proxy.url("/v2/render"), rerank, &headers).await;
    let again = post_with(&proxy.url("/v2/render"), rerank, &headers).await;
    assert_eq!(again.cache(), "hit");
    assert_eq!(again.body, png.body);
    assert_eq!(again.header("content-type"), Some("image/png"));

    // Not listed: passed through every time.
    let calls = mock.calls();
    for path in ["/v1/rerank/extra", "/v3/score", "/v2"] {
        let reply = post(&proxy.url(path), rerank).await;
        assert_eq!(reply.cache(), "bypass", "{path}");
    }
    let get = send(Method::GET, &proxy.url("/v1/rerank"), &[], "").await;
    assert_eq!(get.cache(), "bypass", "the method is part of the route");
    assert_eq!(mock.calls(), calls + 4);
}

#[tokio::test]
async fn routes_bypass_passes_a_default_route_through_every_time() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(
        &mock.url(),
        "[routes]\nbypass = [\"POST /v1/moderations\", \"POST /openai/deployments/*\"]\n",
    )
    .await;
    let moderation = r#"{"input":"hi"}"#;
    for n in 1..=2 {
        let reply = post(&proxy.url("/v1/moderations"), moderation).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.cache(), "bypass");
        assert!(reply.header("x-llmtape-key").is_none());
        assert_eq!(
            mock.calls_to("/v1/moderations"),
            n,
            "the upstream is asked each time"
        );
    }
    let azure = "/openai/deployments/d/audio/speech?api-version=2024-10-21";
    post(&proxy.url(azure), SPEECH).await;
    assert_eq!(post(&proxy.url(azure), SPEECH).await.cache(), "bypass");
    // The other default routes are still cached.
    post(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(
        post(&proxy.url("/v1/chat/completions"), CHAT).await.cache(),
        "hit"
    );
    assert_eq!(mock.calls(), 5);
}

/// Writes `toml` to `dir/proxy-test.toml` and returns its path.
fn config_file(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("proxy-test.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test]
async fn a_bad_routes_entry_fails_serve_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (entry, needle) in [
        ("/v1/rerank", "has no method"),
        ("FETCH /v1/rerank", "is not a method"),
        ("POST v1/rerank", "must start with /"),
        ("POST /v2/*/score", "* may only end the path"),
    ] {
        let config = config_file(dir.path(), &format!("[routes]\ncache = [{entry:?}]\n"));
        let mut cmd = serve_cmd(dir.path(), "http://127.0.0.1:9", &dir.path().join("store"));
        cmd.arg("--config").arg(&config);
        let (code, stdout, stderr) = run(cmd).await;
        assert_eq!(code, 2, "{entry}: {stderr}");
        assert!(stdout.is_empty(), "no ready line: {stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{entry}: {stderr}");
        assert!(
            stderr.contains(&format!("routes.cache: {entry:?}")),
            "{stderr}"
        );
        assert!(stderr.contains(needle), "{needle} in {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_is_named_in_the_log_line_ls_and_key_explain() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = config_file(dir.path(), "[routes]\ncache = [\"POST /v1/rerank\"]\n");
    let mut cmd = serve_cmd(dir.path(), &mock.url(), &store);
    cmd.arg("--config").arg(&config);
    let mut serve = Serve::start(cmd).await;
    let speech = post(&serve.url("/v1/audio/speech"), SPEECH).await;
    post(&serve.url("/v1/audio/speech"), SPEECH).await;
    post(&serve.url("/v1/rerank"), r#"{"query":"q"}"#).await;
    post(&serve.url("/v1/files"), "x").await;
    assert!(serve.terminate().await.success());
    let logs = serve.log();
    let requests: Vec<&str> = logs.lines().filter(|l| l.contains(" request ")).collect();
    assert_eq!(requests.len(), 4, "{logs}");
    for (line, words) in requests.iter().zip([
        [r#"route="audio.speech""#, r#"outcome="miss""#],
        [r#"route="audio.speech""#, r#"outcome="hit""#],
        [r#"route="/v1/rerank""#, r#"outcome="miss""#],
        [r#"route="-""#, r#"outcome="bypass""#],
    ]) {
        for word in words {
            assert!(
                line.split_whitespace().any(|w| w == word),
                "{word} in {line}"
            );
        }
    }

    let mut ls = llmtape(dir.path());
    ls.arg("ls")
        .arg("--store")
        .arg(&store)
        .arg("--config")
        .arg(&config);
    let (code, stdout, stderr) = run(ls).await;
    assert_eq!(code, 0, "{stderr}");
    let speech_line = stdout
        .lines()
        .find(|l| l.contains("/v1/audio/speech"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let size = speech.body.len().to_string();
    let words: Vec<&str> = speech_line.split_whitespace().collect();
    assert_eq!(words[3], "audio.speech", "{speech_line}");
    assert_eq!(words[words.len() - 2], size, "{speech_line}");
    assert_eq!(words[words.len() - 1], "audio/mpeg", "{speech_line}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some("/v1/rerank")),
        "{stdout}"
    );

    let mut explain = llmtape(dir.path());
    explain
        .args(["key", "explain", "--path", "/v1/rerank", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null());
    let (code, stdout, stderr) = run(explain).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("\nroute:       /v1/rerank (cached)\n"),
        "{stdout}"
    );
}

async fn metric(proxy: &TestProxy, line_start: &str) -> String {
    let metrics = send(Method::GET, &proxy.url("/_llmtape/metrics"), &[], "").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("{line_start} in {text}"))
        .to_string()
}

#[tokio::test]
async fn an_unreachable_upstream_502_is_a_labelled_counted_miss() {
    let closed = ClosedPort::new();
    let upstream = format!("http://{}", closed.addr);
    let proxy = TestProxy::start(&upstream, "").await;
    for (path, body) in [("/v1/chat/completions", CHAT), ("/v1/audio/speech", SPEECH)] {
        let reply = post(&proxy.url(path), body).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(reply.cache(), "miss", "{path}");
        assert_eq!(
            reply.header("x-llmtape-key").map(str::len),
            Some(64),
            "{path}"
        );
        assert_eq!(reply.json()["error"]["code"], "upstream_unreachable");
    }
    assert_eq!(
        metric(&proxy, "llmtape_requests_total{outcome=\"miss\"}").await,
        "llmtape_requests_total{outcome=\"miss\"} 2"
    );
    // A passthrough route's 502 is no miss: it is not cached.
    let files = post(&proxy.url("/v1/files"), "{}").await;
    assert_eq!(files.status, StatusCode::BAD_GATEWAY);
    assert!(files.header("x-llmtape-key").is_none());
}

#[tokio::test]
async fn a_slow_upstream_504_is_a_labelled_counted_miss_for_the_leader_and_its_follower() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "[upstream]\nfirst_byte_timeout = \"1s\"\n").await;
    let url = proxy.url("/v1/audio/speech");
    let slow = [("x-mock-delay-ms", "5000")];
    let leader = tokio::spawn({
        let url = url.clone();
        async move { post_with(&url, SPEECH, &slow).await }
    });
    // The follower joins once the leader's call is at the upstream.
    mock.wait_for_calls(1).await;
    let follower = post_with(&url, SPEECH, &slow).await;
    let leader = leader.await.unwrap();
    for (who, reply) in [("leader", &leader), ("follower", &follower)] {
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{who}");
        assert_eq!(reply.cache(), "miss", "{who}");
        assert_eq!(reply.json()["error"]["code"], "upstream_timeout", "{who}");
    }
    assert_eq!(leader.header("x-llmtape-key").map(str::len), Some(64));
    assert_eq!(
        follower.header("x-llmtape-key"),
        leader.header("x-llmtape-key")
    );
    assert_eq!(mock.calls(), 1, "the follower shared the leader's call");
    assert_eq!(
        metric(&proxy, "llmtape_requests_total{outcome=\"miss\"}").await,
        "llmtape_requests_total{outcome=\"miss\"} 2"
    );
    assert_eq!(
        metric(&proxy, "llmtape_requests_total{outcome=\"hit\"}").await,
        "llmtape_requests_total{outcome=\"hit\"} 0"
    );
}
