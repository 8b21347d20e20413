//! Fixtures: store -> files -> store without loss, serving straight from a
//! folder with no store and no upstream, growing a folder in auto mode,
//! misses that explain themselves, `key explain` and `lint`.

use std::path::Path;

use crate::support::*;
use http::{Method, StatusCode};
use llmtape::store::FixtureDir;

/// Requests covering every route, plain and streamed.
fn every_route() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", STREAM_CHAT),
        (
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}"#,
        ),
        (
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi","stream":true}"#,
        ),
        (
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"hi"}"#,
        ),
        ("/v1/responses", r#"{"model":"gpt-4.1-mini","input":"hi"}"#),
        (
            "/v1/responses",
            r#"{"model":"gpt-4.1-mini","input":"hi","stream":true}"#,
        ),
        ("/v1/moderations", r#"{"input":"hi"}"#),
        (
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-06-01",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        ),
    ]
}

/// Records every route into a fresh store (with one re-recording, for
/// history); returns the store directory and the first answers' bodies.
async fn recorded_store(
    mock: &MockUpstream,
    dir: &Path,
) -> (std::path::PathBuf, Vec<(String, bytes::Bytes)>) {
    let store = dir.join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    let mut answers = Vec::new();
    for (path, body) in every_route() {
        let reply = post(&proxy.url(path), body).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        answers.push((
            reply.header("x-llmtape-key").unwrap().to_string(),
            reply.body.clone(),
        ));
    }
    let models = send(Method::GET, &proxy.url("/v1/models"), &[], "").await;
    answers.push((
        models.header("x-llmtape-key").unwrap().to_string(),
        models.body,
    ));
    let again = post_with(
        &proxy.url("/v1/chat/completions"),
        CHAT,
        &[("x-llmtape-mode", "record")],
    )
    .await;
    answers[0].1 = again.body;
    proxy.stop().await;
    (store, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_is_lossless_and_re_export_is_byte_stable() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, answers) = recorded_store(&mock, dir.path()).await;
    let out = dir.path().join("fixtures");

    let mut export = llmtape(dir.path());
    export
        .args(["export", "--out"])
        .arg(&out)
        .arg("--store")
        .arg(&store);
    let (code, stdout, stderr) = run(export).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("10 written, 0 unchanged, 0 skipped"),
        "{stdout}"
    );
    assert!(out.join("chat.completions/gpt-4o-mini").is_dir());
    assert!(out.join("embeddings/text-embedding-3-small").is_dir());

    // A second export over the same folder changes no byte.
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = all_files(&out)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let mut export = llmtape(dir.path());
    export
        .args(["export", "--out"])
        .arg(&out)
        .arg("--store")
        .arg(&store);
    let (_, stdout, _) = run(export).await;
    assert!(stdout.contains("0 written, 10 unchanged"), "{stdout}");
    for (path, bytes) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }

    // Import into a new store: every field, every history item equal.
    let copy = dir.path().join("copy");
    let mut import = llmtape(dir.path());
    import.arg("import").arg(&out).arg("--store").arg(&copy);
    let (code, stdout, stderr) = run(import).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("10 written"), "{stdout}");
    {
        let original = SledStore::open(&store).unwrap();
        let imported = SledStore::open(&copy).unwrap();
        assert_eq!(imported.len(), original.len());
        for entry in original.iter() {
            let entry = entry.unwrap();
            let key = entry.key();
            assert_eq!(imported.get(&key).unwrap().as_ref(), Some(&entry), "{key}");
            assert_eq!(
                imported.history(&key).unwrap(),
                original.history(&key).unwrap(),
                "{key}"
            );
        }
        let chat = RequestKey::from_hex(&answers[0].0).unwrap();
        assert_eq!(imported.history(&chat).unwrap().len(), 1);
    }

    // And the imported store replays the original bytes.
    let mut proxy = TestProxy::start_with_store(&mock.url(), "mode = \"replay\"\n", &copy).await;
    for ((path, body), (_, bytes)) in every_route().into_iter().zip(&answers) {
        let hit = post(&proxy.url(path), body).await;
        assert_eq!(hit.cache(), "hit", "{path}");
        assert_eq!(&hit.body, bytes, "{path}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_fixtures_needs_no_store_and_no_upstream() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, answers) = recorded_store(&mock, dir.path()).await;
    let out = dir.path().join("fixtures");
    let exported = {
        let store = SledStore::open(&store).unwrap();
        llmtape::cmd::export::export(&store, &out, &Default::default()).unwrap()
    };
    assert_eq!(exported.written, 10);

    // An upstream that does not exist: any call to it would fail the test.
    let calls_before = mock.calls();
    let proxy = TestProxy::start_fixtures("http://127.0.0.1:9", "", &out).await;
    for ((path, body), (_, bytes)) in every_route().into_iter().zip(&answers) {
        let hit = post(&proxy.url(path), body).await;
        assert_eq!((hit.status, hit.cache()), (StatusCode::OK, "hit"), "{path}");
        assert_eq!(&hit.body, bytes, "{path}: byte-identical from the fixture");
    }
    let miss = post(
        &proxy.url("/v1/chat/completions"),
        &CHAT.replace("Say hi", "Say bye"),
    )
    .await;
    assert_eq!(
        miss.status,
        StatusCode::NOT_FOUND,
        "replay is the default with fixtures"
    );
    assert_eq!(mock.calls(), calls_before);
    assert!(!proxy.store_dir.exists(), "no store is created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_grows_the_folder_without_touching_existing_files() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: a serve that records makes it.
    let fixtures = dir.path().join("tests/fixtures/llmtape");

    let proxy = TestProxy::start_fixtures(&mock.url(), "mode = \"auto\"\n", &fixtures).await;
    assert!(fixtures.is_dir(), "auto mode made the fixtures folder");
    let url = proxy.url("/v1/chat/completions");
    let first = post(&url, CHAT).await;
    assert_eq!(first.cache(), "miss");
    let files = all_files(&fixtures);
    assert_eq!(files.len(), 1, "one new fixture file");
    let written = std::fs::read(&files[0]).unwrap();
    assert_eq!(post(&url, CHAT).await.body, first.body);
    // no-cache in auto mode forwards but never rewrites a committed file.
    let fresh = post_with(&url, CHAT, &[("cache-control", "no-cache")]).await;
    assert_ne!(fresh.body, first.body);
    assert_eq!(std::fs::read(&files[0]).unwrap(), written);
    post(&url, STREAM_CHAT).await;
    assert_eq!(
        all_files(&fixtures).len(),
        2,
        "a streamed miss adds a file too"
    );

    // record mode rewrites, keeping the old recording in the file's history.
    let proxy = TestProxy::start_fixtures(&mock.url(), "mode = \"record\"\n", &fixtures).await;
    let rerecorded = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    let reloaded = FixtureDir::load(&fixtures).unwrap();
    let key = RequestKey::from_hex(rerecorded.header("x-llmtape-key").unwrap()).unwrap();
    assert_eq!(reloaded.get(&key).unwrap().body, rerecorded.body);
    let (_, history) = reloaded
        .all()
        .into_iter()
        .find(|(e, _)| e.key() == key)
        .unwrap();
    assert_eq!(history[0].body, first.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_fixture_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(fixtures.join("chat.completions")).unwrap();
    std::fs::write(
        fixtures.join("chat.completions/broken.json"),
        "{\"llmtape_fixture\": 1, \"key\": ",
    )
    .unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--fixtures", "fixtures"]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{stdout} {stderr}");
    assert!(stderr.contains("chat.completions/broken.json"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--fixtures", "nowhere"]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(
        code, 2,
        "replay (the default with fixtures) needs the folder"
    );
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(
        !dir.path().join("nowhere").exists(),
        "replay makes no folder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_miss_names_the_nearest_recording_and_what_differs() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let recorded = post(&url, CHAT).await;
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    post(&url, r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Something else entirely"}],"n":3}"#).await;

    let changed = CHAT
        .replace("\"seed\":42", "\"seed\":43")
        .replace("Say hi", "Say hello");
    let miss = post_with(&url, &changed, &[("x-llmtape-mode", "replay")]).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    let nearest = miss.header("x-llmtape-miss-nearest").unwrap();
    assert_eq!(nearest, format!("{key} /messages/0/content,/seed"));
    let message = miss.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&key) && message.contains("/messages/0/content, /seed"),
        "{message}"
    );

    let other_route = post_with(
        &proxy.url("/v1/embeddings"),
        r#"{"input":"x"}"#,
        &[("x-llmtape-mode", "replay")],
    )
    .await;
    assert!(other_route.header("x-llmtape-miss-nearest").is_none());
    assert!(other_route.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no recording exists for this route"));
}

/// The value of `name=VALUE` in a log line, quotes taken off.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

/// The request log line of a replay miss names the nearest recording
/// (`nearest=KEY`, the key the 404 names) so a reader of the log, such as
/// the pytest plugin, can say it even when the client hid the 404; hits,
/// recordings and misses with nothing near carry no such field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_line_of_a_replay_miss_names_the_nearest_recording() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(serve_cmd(
        dir.path(),
        &mock.url(),
        &dir.path().join("store"),
    ))
    .await;
    let url = serve.url("/v1/chat/completions");
    let recorded = post(&url, CHAT).await;
    let key = recorded.header("x-llmtape-key").unwrap().to_string();
    assert_eq!(post(&url, CHAT).await.cache(), "hit");
    let changed = CHAT.replace("\"seed\":42", "\"seed\":43");
    let miss = post_with(&url, &changed, &[("x-llmtape-mode", "replay")]).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert!(miss
        .header("x-llmtape-miss-nearest")
        .unwrap()
        .starts_with(&key));
    let lonely = post_with(
        &serve.url("/v1/embeddings"),
        r#"{"model":"text-embedding-3-small","input":"x"}"#,
        &[("x-llmtape-mode", "replay")],
    )
    .await;
    assert_eq!(lonely.status, StatusCode::NOT_FOUND);
    // A clean stop writes every request line.
    assert!(serve.terminate().await.success());

    let log = serve.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" request ")).collect();
    assert_eq!(lines.len(), 4, "{log}");
    for line in &lines[..2] {
        assert!(!line.contains("nearest="), "a recording or a hit: {line}");
    }
    assert_eq!(field(lines[2], "outcome"), Some("miss"), "{}", lines[2]);
    assert_eq!(
        field(lines[2], "nearest"),
        Some(key.as_str()),
        "the replay miss names {key}: {}",
        lines[2]
    );
    assert_eq!(field(lines[3], "outcome"), Some("miss"), "{}", lines[3]);
    assert!(
        field(lines[3], "nearest").is_none(),
        "nothing recorded on that route: {}",
        lines[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_explain_prints_the_canonical_form_and_the_key_the_proxy_uses() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let body = r#"{"seed": 42, "user": "alice", "model": "gpt-4o-mini", "temperature": 0.0, "messages": [{"role": "user", "content": "Say hi"}]}"#;
    let key = post(&proxy.url("/v1/chat/completions"), body)
        .await
        .header("x-llmtape-key")
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(&request, body).unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["key", "explain"])
        .stdin(std::fs::File::open(&request).unwrap());
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("key:         {key}")), "{stdout}");
    assert!(
        stdout.contains("removed:     /user by key.ignore_fields"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"json {"messages":[{"content":"Say hi","role":"user"}],"model":"gpt-4o-mini","seed":42,"temperature":0}"#),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_and_export_catch_a_planted_key() {
    const PLANTED: &str = concat!("sk-", "proj-PLANTEDabcdefghijklmnopqrstuvwxyz0123");
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store).await;
    post(&proxy.url("/v1/chat/completions"), CHAT).await;
    let leaky = CHAT.replace("Say hi", &format!("my key is {PLANTED}"));
    post(&proxy.url("/v1/chat/completions"), &leaky).await;
    proxy.stop().await;

    let out = dir.path().join("fixtures");
    let mut export = llmtape(dir.path());
    export
        .args(["export", "--out"])
        .arg(&out)
        .arg("--store")
        .arg(&store);
    let (code, stdout, stderr) = run(export).await;
    assert_eq!(
        code, 1,
        "a refused recording makes the export fail: {stdout}"
    );
    assert!(
        stdout.contains("1 written, 0 unchanged, 1 skipped"),
        "{stdout}"
    );
    assert!(
        stderr.contains("/request/body/value/messages/0/content"),
        "{stderr}"
    );
    for file in all_files(&out) {
        assert!(!std::fs::read_to_string(file).unwrap().contains(PLANTED));
    }

    let mut lint = llmtape(dir.path());
    lint.arg("lint").arg(&out);
    let (code, stdout, _) = run(lint).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("1 fixture file(s) checked, 0 problem(s)"),
        "{stdout}"
    );

    // Plant a key and a credential header by hand: lint names file and place.
    let file = all_files(&out).remove(0);
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    value["response"]["headers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(["authorization", "Bearer x"]));
    value["request"]["body"]["value"]["messages"][0]["content"] = PLANTED.into();
    std::fs::write(&file, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    std::fs::write(out.join("not-a-fixture.json"), "{\"hello\": 1}").unwrap();
    let mut lint = llmtape(dir.path());
    lint.arg("lint").arg(&out);
    let (code, stdout, _) = run(lint).await;
    assert_eq!(code, 1, "{stdout}");
    let name = file.display().to_string();
    assert!(
        stdout.contains(&format!(
            "{name}: /request/body/value/messages/0/content: looks like an API key"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("/response/headers/") && stdout.contains("a credential header"),
        "{stdout}"
    );
    assert!(stdout.contains("not-a-fixture.json"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_show_read_a_fixtures_folder() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, answers) = recorded_store(&mock, dir.path()).await;
    let out = dir.path().join("fixtures");
    llmtape::cmd::export::export(&SledStore::open(&store).unwrap(), &out, &Default::default())
        .unwrap();
    let mut ls = llmtape(dir.path());
    ls.args(["ls", "--fixtures"]).arg(&out);
    let (code, stdout, stderr) = run(ls).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
    assert!(stdout.contains("(stream)"), "{stdout}");
    let mut show = llmtape(dir.path());
    show.args(["show", &answers[1].0[..12], "--fixtures"])
        .arg(&out);
    let (code, stdout, _) = run(show).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("response stream (4 events"), "{stdout}");
}

/// A store of `n` synthetic recordings: chat for models m0..m2 in
/// namespaces a/b, and every fifth one an embedding.
fn synthetic_store(path: &Path, n: usize) {
    use llmtape::record::recording::{
        RecordedRequest, RecordedResponse, Recording, RecordingMeta, RequestBody,
    };
    let store = SledStore::open(path).unwrap();
    for i in 0..n {
        let embedding = i % 5 == 0;
        let model = format!("m{}", i % 3);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        key[8] = 0xaa;
        let key = RequestKey::from_bytes(key);
        let entry = Recording {
            meta: RecordingMeta {
                key,
                request: RecordedRequest {
                    method: "POST".into(),
                    path: if embedding {
                        "/v1/embeddings"
                    } else {
                        "/v1/chat/completions"
                    }
                    .into(),
                    query: String::new(),
                    namespace: if i % 2 == 0 { "a" } else { "b" }.into(),
                    headers: Vec::new(),
                    body: RequestBody::Json(serde_json::json!({"model": model, "n": i})),
                },
                response: RecordedResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                },
                system_fingerprint: Some("fp".into()),
                model: Some(model),
                recorded_at: "2026-11-22T00:00:00.000Z".into(),
                latency_ms: 1,
                stream: None,
                call: None,
            },
            body: bytes::Bytes::from(format!("{{\"i\":{i}}}")),
        };
        store.put(&key, &entry, 20).unwrap();
    }
    store.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_filters_and_reports_progress_on_large_stores() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    synthetic_store(&store, 300);

    let out = dir.path().join("all");
    let mut export = llmtape(dir.path());
    export
        .args(["export", "--out"])
        .arg(&out)
        .arg("--store")
        .arg(&store);
    let (code, stdout, stderr) = run(export).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("exporting 300/300"),
        "progress is shown: {stderr}"
    );
    assert!(stdout.contains("300 written"), "{stdout}");
    assert_eq!(all_files(&out).len(), 300);

    let filtered = |args: &'static [&'static str], name: &'static str| {
        let out = dir.path().join(name);
        let mut export = llmtape(dir.path());
        export
            .args(["export", "--out"])
            .arg(&out)
            .arg("--store")
            .arg(&store)
            .args(args);
        async move {
            let (code, stdout, stderr) = run(export).await;
            assert_eq!(code, 0, "{stderr}");
            (stdout, all_files(&out).len())
        }
    };
    let (_, embeddings) = filtered(&["--route", "embeddings"], "emb").await;
    assert_eq!(embeddings, 60);
    let (_, chat_a_m1) = filtered(
        &[
            "--route",
            "/v1/chat/completions",
            "--namespace",
            "a",
            "--model",
            "m1",
        ],
        "mix",
    )
    .await;
    let expected = (0..300)
        .filter(|i| i % 5 != 0 && i % 2 == 0 && i % 3 == 1)
        .count();
    assert_eq!(chat_a_m1, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_fixtures_beside_the_example_config_is_replay_mode() {
    // Regression: the example proxy.toml once set mode = "auto", which beat
    // the replay default of --fixtures and let misses reach the upstream.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(REPO).join("proxy.toml"),
        dir.path().join("proxy.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("fixtures")).unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--fixtures", "fixtures"]);
    let mut serve = Serve::start(cmd).await;
    let ready = serve.ready.clone();
    assert!(
        ready.contains("(mode=replay,") && ready.ends_with("fixtures=fixtures)"),
        "{ready}"
    );
    serve.signal("-KILL").await;
}
