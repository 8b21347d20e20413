//! Commands while `serve` runs on the same store: they go through the
//! server's command endpoint (authenticated by the token in `serve.json`)
//! and print exactly what they print offline; writes (`rm`, `import`,
//! `prune`, `verify --update`) take effect on the very next request; a
//! stale `serve.json` and a wrong token are one-line errors. Also `rm` and
//! `prune` on their own, on a store and on a fixtures folder.

use std::path::{Path, PathBuf};

use crate::support::*;
use http::{Method, StatusCode};

const CHAT_PATH: &str = "/v1/chat/completions";

/// Every fixture file under `dir`, by path below it, with its text.
fn tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = all_files(dir)
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_path_buf(), text)
        })
        .collect();
    files.sort();
    files
}

/// `llmtape --store store ARGS...` in `dir`.
async fn on_store(dir: &Path, args: &[&str], stdin: Option<&str>) -> Ran {
    let mut all = vec!["--store", "store"];
    all.extend_from_slice(args);
    run_in(dir, &all, stdin).await
}

/// `llmtape --fixtures fx ARGS...` in `dir`.
async fn on_fixtures(dir: &Path, args: &[&str]) -> Ran {
    let mut all = vec!["--fixtures", "fx"];
    all.extend_from_slice(args);
    run_in(dir, &all, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_while_serving_print_what_they_print_offline() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;
    let chat = post(&serve.url(CHAT_PATH), CHAT).await;
    let key = chat.header("x-llmtape-key").unwrap().to_string();
    assert_eq!(
        post(&serve.url(CHAT_PATH), STREAM_CHAT).await.cache(),
        "miss"
    );
    // A re-recording with another fingerprint: history, and a flip to audit.
    mock.set_fingerprint("fp_mock_2");
    let again = post_with(
        &serve.url(CHAT_PATH),
        CHAT,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(again.cache(), "miss");

    let commands: Vec<(Vec<String>, Option<&str>)> = vec![
        (vec!["ls".into()], None),
        (vec!["ls".into(), "--json".into()], None),
        (vec!["show".into(), key[..16].into()], None),
        (vec!["show".into(), key[..8].into(), "--json".into()], None),
        (vec!["show".into(), "ffffffffffff".into()], None),
        (vec!["audit".into()], None),
        (vec!["audit".into(), "--json".into()], None),
        (vec!["key".into(), "explain".into()], Some(CHAT)),
        (vec!["export".into(), "--out".into(), "fx".into()], None),
    ];
    let mut served = Vec::new();
    for (args, stdin) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        served.push(on_store(dir.path(), &args, *stdin).await);
    }
    let served_fixtures = tree(&dir.path().join("fx"));
    std::fs::rename(dir.path().join("fx"), dir.path().join("fx-served")).unwrap();
    // The access log is written in batches: wait (bounded) for the line.
    serve.wait_for_log("/_llmtape/command").await;
    assert!(store.join("serve.json").is_file());

    assert!(serve.terminate().await.success());
    assert!(
        !store.join("serve.json").exists(),
        "a clean stop removes serve.json"
    );
    for ((args, stdin), served) in commands.iter().zip(&served) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let offline = on_store(dir.path(), &args, *stdin).await;
        assert_eq!(
            *served,
            offline,
            "`llmtape {}` prints the same through serve as offline:\nserved:  {}{}\noffline: {}{}",
            args.join(" "),
            served.out(),
            served.err(),
            offline.out(),
            offline.err()
        );
    }
    // What each printed, to be sure the comparison compared something.
    assert_eq!(served[0].code, 0);
    assert_eq!(served[0].out().lines().count(), 2, "{}", served[0].out());
    assert!(served[2]
        .out()
        .contains("history:            1 earlier recording(s)"));
    assert_eq!(served[4].code, 1, "an unknown prefix: exit 1 both ways");
    assert!(served[5].out().contains("fp_mock_1"), "{}", served[5].out());
    assert!(served[7].out().contains(&key), "{}", served[7].out());
    assert_eq!(
        served[8].out(),
        "exported 2 recording(s) to fx: 2 written, 0 unchanged, 0 skipped\n"
    );
    assert_eq!(served_fixtures, tree(&dir.path().join("fx")));
    assert_eq!(served_fixtures.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_server_take_effect_on_the_next_request() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;
    let url = serve.url(CHAT_PATH);
    let content = |reply: &Reply| {
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = post(&url, CHAT).await;
    let key = first.header("x-llmtape-key").unwrap().to_string();
    assert_eq!(
        post(&url, CHAT).await.cache(),
        "hit",
        "now in the hot cache"
    );
    assert_eq!(mock.calls(), 1);

    let rm = on_store(dir.path(), &["rm", &key[..12]], None).await;
    assert_eq!(rm.code, 0, "{}", rm.err());
    assert_eq!(rm.out(), "removed 1 recording(s) from store\n");
    let after_rm = post(&url, CHAT).await;
    assert_eq!(
        after_rm.cache(),
        "miss",
        "a deleted recording is never replayed"
    );
    assert_eq!((mock.calls(), content(&after_rm)), (2, "reply #2".into()));

    let export = on_store(dir.path(), &["export", "--out", "fx"], None).await;
    assert_eq!(export.code, 0, "{}", export.err());
    let fresh = post_with(&url, CHAT, &[("cache-control", "no-cache")]).await;
    assert_eq!(content(&fresh), "reply #3");
    let hit = post(&url, CHAT).await;
    assert_eq!((hit.cache(), content(&hit)), ("hit", "reply #3".into()));

    let import = on_store(dir.path(), &["import", "fx"], None).await;
    assert_eq!(import.code, 0, "{}", import.err());
    assert_eq!(
        import.out(),
        "imported 1 recording(s) from fx: 1 written, 0 unchanged, 0 skipped\n"
    );
    let hit = post(&url, CHAT).await;
    assert_eq!(
        (hit.cache(), content(&hit)),
        ("hit", "reply #2".into()),
        "the imported recording, not the one the hot cache held"
    );
    assert_eq!(mock.calls(), 3);

    let dry = on_store(
        dir.path(),
        &["prune", "--model", "gpt-4o-mini", "--dry-run"],
        None,
    )
    .await;
    assert_eq!(dry.code, 0, "{}", dry.err());
    assert!(dry.out().starts_with(&key), "{}", dry.out());
    assert!(dry
        .out()
        .ends_with("would remove 1 recording(s) from store\n"));
    let young = on_store(dir.path(), &["prune", "--older-than", "1h"], None).await;
    assert_eq!(young.out(), "removed 0 recording(s) from store\n");
    assert_eq!(post(&url, CHAT).await.cache(), "hit");
    let prune = on_store(dir.path(), &["prune", "--route", "chat.completions"], None).await;
    assert_eq!(prune.out(), "removed 1 recording(s) from store\n");
    assert_eq!(post(&url, CHAT).await.cache(), "miss");
    assert_eq!(mock.calls(), 4);

    // verify asks the server's upstream and stores what differs.
    assert_eq!(post(&url, CHAT).await.cache(), "hit", "reply #4 is hot");
    mock.set_fingerprint("fp_mock_2");
    let verify = on_store(dir.path(), &["verify", "--update"], None).await;
    assert_eq!(
        verify.code,
        1,
        "an answer differed: {}{}",
        verify.out(),
        verify.err()
    );
    assert_eq!(mock.calls(), 5);
    let hit = post(&url, CHAT).await;
    assert_eq!(
        (hit.cache(), content(&hit)),
        ("hit", "reply #5".into()),
        "verify's new answer replays at once"
    );
    assert_eq!(hit.json()["system_fingerprint"], "fp_mock_2");
    assert_eq!(mock.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_json_is_private_while_serving_and_gone_after_a_clean_stop() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    let path = store.join("serve.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable by its user only");
    }
    let file = serve_file(&store);
    assert_eq!(file.pid, serve.pid());
    assert_eq!(file.admin, format!("http://{}/_llmtape/", serve.addr));
    assert_eq!(file.token.len(), 64);
    assert!(serve.signal("-INT").await.success());
    assert!(!path.exists(), "SIGINT removes it");

    // A new token at every start.
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    assert_ne!(serve_file(&store).token, file.token);
    assert!(serve.terminate().await.success());
    assert!(!path.exists(), "SIGTERM removes it");

    // Serving fixtures publishes nothing: a folder is not locked, and a
    // JSON file in it would be read as a fixture.
    let fixtures = dir.path().join("fx");
    std::fs::create_dir(&fixtures).unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--fixtures"])
        .arg(&fixtures);
    let mut serve = Serve::start(cmd).await;
    assert!(all_files(&fixtures).is_empty());
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_serve_json_is_named_in_one_line_and_nothing_changes() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;
    let key = post(&serve.url(CHAT_PATH), CHAT)
        .await
        .header("x-llmtape-key")
        .unwrap()
        .to_string();
    // A clean stop makes the recording durable (kill -9 may lose the last
    // half second of recordings, which is not what this test is about).
    assert!(serve.terminate().await.success());
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;

    // The store is held, but serve.json names a server that is not there.
    let closed = ClosedPort::new();
    let real = serve_file(&store);
    edit_serve_file(&store, |f| {
        f.admin = format!("http://{}/_llmtape/", closed.addr)
    });
    let error = on_store(dir.path(), &["ls"], None).await.one_line_error(2);
    assert!(
        error.contains("serve.json is stale: no llmtape serve answers at")
            && error.contains("another process holds the store"),
        "{error}"
    );
    std::fs::write(
        store.join("serve.json"),
        serde_json::to_string(&real).unwrap(),
    )
    .unwrap();

    // kill -9: the lock goes with the process, the file stays.
    let status = serve.signal("-KILL").await;
    assert!(!status.success());
    assert!(store.join("serve.json").exists());
    for args in [
        vec!["ls"],
        vec!["rm", &key[..12]],
        vec!["prune", "--model", "gpt-4o-mini"],
    ] {
        let error = on_store(dir.path(), &args, None).await.one_line_error(2);
        assert!(
            error.starts_with(
                "llmtape: store/serve.json is stale: the llmtape serve that wrote it (pid "
            ) && error.contains("delete store/serve.json and run the command again"),
            "{error}"
        );
    }
    std::fs::remove_file(store.join("serve.json")).unwrap();
    let ls = on_store(dir.path(), &["ls"], None).await;
    assert_eq!(ls.code, 0, "{}", ls.err());
    assert!(
        ls.out().starts_with(&key[..16]),
        "nothing was removed: {}",
        ls.out()
    );

    // A new serve replaces a stale file with its own.
    std::fs::write(
        store.join("serve.json"),
        serde_json::to_string(&real).unwrap(),
    )
    .unwrap();
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;
    assert_ne!(serve_file(&store).token, real.token);
    let ls = on_store(dir.path(), &["ls"], None).await;
    assert_eq!(ls.code, 0, "{}", ls.err());
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_even_from_loopback() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;
    assert_eq!(post(&serve.url(CHAT_PATH), CHAT).await.cache(), "miss");
    let url = serve.url("/_llmtape/command");
    let good = serve_file(&store).token;
    // A key no recording has: the command runs and finds nothing.
    let body = format!(
        r#"{{"llmtape_job":1,"job":{{"rm":{{"key_prefixes":["{}"]}}}},"terminal":{{"interactive":false,"colour":false,"width":100}},"cwd":"/","location":"store"}}"#,
        "0".repeat(64)
    );
    for auth in [
        None,
        Some("Bearer ".to_string() + &"0".repeat(64)),
        Some(good.clone()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = send(Method::POST, &url, &headers, body.to_string()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(reply.json()["error"]["code"], "command_token_required");
    }
    let wrong = "1".repeat(64);
    edit_serve_file(&store, |f| f.token = wrong);
    let error = on_store(dir.path(), &["rm", &"0".repeat(64)], None)
        .await
        .one_line_error(2);
    assert!(
        error.contains("refused the token in store/serve.json"),
        "{error}"
    );
    let reply = send(
        Method::POST,
        &url,
        &[("authorization", &format!("Bearer {good}"))],
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "the real token still works");
    let reply: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply["exit_code"], 1, "{reply}");
    assert_eq!(
        post(&serve.url(CHAT_PATH), CHAT).await.cache(),
        "hit",
        "nothing removed"
    );
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_with_an_ambiguous_or_unknown_prefix_changes_nothing() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), Path::new("store"))).await;
    // Record until two keys share their first hex digit (17 always do).
    let mut keys: Vec<String> = Vec::new();
    let shared = loop {
        let n = keys.len() + 1;
        let reply = post(&serve.url(CHAT_PATH), &question(n)).await;
        let key = reply.header("x-llmtape-key").unwrap().to_string();
        if let Some(other) = keys.iter().find(|k| k[..1] == key[..1]) {
            let shared = other[..1].to_string();
            keys.push(key);
            break shared;
        }
        keys.push(key);
    };
    let calls = mock.calls();
    let unknown = "f".repeat(40);
    let bad = [
        vec!["rm", shared.as_str()],
        vec!["rm", &keys[0][..12], unknown.as_str()],
        vec!["rm", &keys[0][..12], "not-hex"],
    ];
    let mut served = Vec::new();
    for args in &bad {
        served.push(on_store(dir.path(), args, None).await);
    }
    let ambiguous = served[0].one_line_error(1);
    assert!(
        ambiguous.starts_with(&format!(
            "llmtape: nothing removed: {shared} matches 2 recordings ("
        )),
        "{ambiguous}"
    );
    let unknown_error = served[1].one_line_error(1);
    assert!(
        unknown_error.contains(&format!(
            "no recording has a key starting with {unknown} in store"
        )),
        "{unknown_error}"
    );
    assert!(served[2]
        .one_line_error(1)
        .contains("\"not-hex\" is not a key prefix"));
    for (n, key) in keys.iter().enumerate() {
        let reply = post(&serve.url(CHAT_PATH), &question(n + 1)).await;
        assert_eq!(
            (reply.cache(), reply.header("x-llmtape-key")),
            ("hit", Some(key.as_str()))
        );
    }
    assert_eq!(mock.calls(), calls, "every recording is still there");
    assert!(serve.terminate().await.success());

    // Offline, the same refusals, byte for byte.
    for (args, served) in bad.iter().zip(&served) {
        assert_eq!(on_store(dir.path(), args, None).await, *served, "{args:?}");
    }
    let ls = on_store(dir.path(), &["ls"], None).await;
    assert_eq!(ls.out().lines().count(), keys.len());

    // And on a fixtures folder: rm by prefix, prune by filter.
    let export = on_store(dir.path(), &["export", "--out", "fx"], None).await;
    assert_eq!(export.code, 0, "{}", export.err());
    let fx = dir.path().join("fx");
    let files = all_files(&fx).len();
    assert_eq!(files, keys.len());
    let first = keys[0].clone();
    let rm = on_fixtures(dir.path(), &["rm", &first[..12]]).await;
    assert_eq!(rm.out(), "removed 1 recording(s) from fx\n", "{}", rm.err());
    assert_eq!(all_files(&fx).len(), files - 1);
    let refused = on_fixtures(dir.path(), &["rm", &keys[1][..12], &unknown]).await;
    assert_eq!(refused.code, 1, "{}", refused.err());
    assert_eq!(all_files(&fx).len(), files - 1);
    let dry = on_fixtures(dir.path(), &["prune", "--model", "gpt-4o", "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.err());
    assert!(
        dry.out().ends_with(&format!(
            "would remove {} recording(s) from fx\n",
            files - 1
        )),
        "{}",
        dry.out()
    );
    assert_eq!(all_files(&fx).len(), files - 1);
    let prune = on_fixtures(dir.path(), &["prune", "--model", "gpt-4o"]).await;
    assert_eq!(
        prune.out(),
        format!("removed {} recording(s) from fx\n", files - 1)
    );
    assert!(all_files(&fx).is_empty());
    let usage = on_fixtures(dir.path(), &["prune"]).await.one_line_error(2);
    assert!(
        usage.contains("prune needs at least one of --older-than"),
        "{usage}"
    );
    let usage = on_fixtures(dir.path(), &["prune", "--older-than", "soon"])
        .await
        .one_line_error(2);
    assert!(
        usage.contains("--older-than \"soon\" is not a duration"),
        "{usage}"
    );
}
