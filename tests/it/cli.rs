//! The `llmtape` binary: ready line, precedence, exit codes, graceful
//! shutdown, `ls` and `show`.

use crate::support::*;
use http::StatusCode;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_records_then_ls_and_show_read_the_store() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    assert!(
        serve.ready.contains("(mode=auto, upstream="),
        "{}",
        serve.ready
    );
    assert!(
        serve.ready.contains(&format!("store={}", store.display())),
        "{}",
        serve.ready
    );
    assert!(
        !serve.addr.ends_with(":0"),
        "the real port is shown: {}",
        serve.ready
    );

    let reply = post(&serve.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(reply.status, StatusCode::OK);
    let key = reply.header("x-llmtape-key").unwrap().to_string();
    assert_eq!(
        post(&serve.url("/v1/chat/completions"), CHAT).await.cache(),
        "hit"
    );

    // While serve runs, another command on the same store goes through it
    // (the whole contract is in `serving`).
    let mut ls = llmtape(dir.path());
    ls.arg("ls").arg("--store").arg(&store);
    let (code, stdout, stderr) = run(ls).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&key[..16]), "{stdout}");

    let status = serve.terminate().await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let mut ls = llmtape(dir.path());
    ls.arg("ls").arg("--store").arg(&store);
    let (code, stdout, stderr) = run(ls).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with(&key[..16]), "{stdout}");
    assert!(
        lines[0].contains("POST /v1/chat/completions") && lines[0].contains("fp_mock_1"),
        "{stdout}"
    );

    let mut ls = llmtape(dir.path());
    ls.args(["ls", "--json"]).env("LLMTAPE_STORE", &store);
    let (code, stdout, _) = run(ls).await;
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list[0]["key"], key.as_str());
    assert_eq!(list[0]["model"], "gpt-4o-mini");

    let mut show = llmtape(dir.path());
    show.args(["show", &key[..10]]).arg("--store").arg(&store);
    let (code, stdout, stderr) = run(show).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&key)
            && stdout.contains("reply #1")
            && stdout.contains("system_fingerprint: fp_mock_1"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-test-dummy"), "no credential is shown");

    let mut show = llmtape(dir.path());
    show.args(["show", &key[..6], "--json"])
        .arg("--store")
        .arg(&store);
    let (code, stdout, _) = run(show).await;
    assert_eq!(code, 0);
    let one: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(one["key"], key.as_str());
    assert_eq!(one["response"]["status"], 200);
    assert_eq!(
        one["response"]["body"]["value"]["choices"][0]["message"]["content"],
        "reply #1"
    );
    assert_eq!(one["request"]["body"]["value"]["seed"], 42);

    let mut missing = llmtape(dir.path());
    missing
        .args(["show", "ffffffffffff"])
        .arg("--store")
        .arg(&store);
    let (code, _, stderr) = run(missing).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no recording"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_keeps_their_recordings() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    let url = serve.url("/v1/chat/completions");
    // The mock holds the request until it is released below: it is in
    // flight when the signal lands, however slow the machine.
    let in_flight =
        tokio::spawn(async move { post_with(&url, CHAT, &[("x-mock-hold", "1")]).await });
    mock.wait_for_calls(1).await;
    serve.send_signal("-TERM").await;
    serve
        .wait_for_log("shutting down: waiting for in-flight requests")
        .await;
    mock.release(1);
    let status = serve.wait().await;
    assert!(status.success());
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request was answered"
    );

    let mut ls = llmtape(dir.path());
    ls.arg("ls").arg("--store").arg(&store);
    let (code, stdout, _) = run(ls).await;
    assert_eq!(code, 0);
    assert_eq!(
        stdout.lines().count(),
        1,
        "the in-flight recording was flushed: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_is_flag_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Defaults, with nothing but a free port.
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let mut serve = Serve::start(cmd).await;
    assert!(
        serve
            .ready
            .ends_with("(mode=auto, upstream=https://api.openai.com, store=.llmtape/store)"),
        "{}",
        serve.ready
    );
    assert!(serve.terminate().await.success());

    // ./proxy.toml is picked up.
    std::fs::write(
        dir.path().join("proxy.toml"),
        "mode = \"replay\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(&store);
    let mut serve = Serve::start(cmd).await;
    assert!(
        serve
            .ready
            .contains("mode=replay, upstream=http://127.0.0.1:9"),
        "{}",
        serve.ready
    );
    assert!(serve.terminate().await.success());

    // --config beats ./proxy.toml.
    std::fs::write(dir.path().join("other.toml"), "mode = \"passthrough\"\n").unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        "other.toml",
        "--store",
    ])
    .arg(&store);
    let mut serve = Serve::start(cmd).await;
    assert!(
        serve
            .ready
            .contains("mode=passthrough, upstream=https://api.openai.com"),
        "{}",
        serve.ready
    );
    assert!(serve.terminate().await.success());

    // Environment beats the file.
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--store"])
        .arg(&store)
        .env("LLMTAPE_MODE", "record")
        .env("LLMTAPE_LISTEN", "127.0.0.1:0")
        .env("LLMTAPE_UPSTREAM", "http://127.0.0.1:7");
    let mut serve = Serve::start(cmd).await;
    assert!(
        serve
            .ready
            .contains("mode=record, upstream=http://127.0.0.1:7"),
        "{}",
        serve.ready
    );
    assert!(serve.terminate().await.success());

    // A flag beats the environment.
    let mut cmd = llmtape(dir.path());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--mode",
        "auto",
        "--store",
    ])
    .arg(&store)
    .env("LLMTAPE_MODE", "record");
    let mut serve = Serve::start(cmd).await;
    assert!(serve.ready.contains("mode=auto"), "{}", serve.ready);
    assert!(serve.terminate().await.success());
}

/// Runs `serve` expecting it to refuse to start: exit 2, one line on stderr.
async fn refuses(cmd: Command) -> String {
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.is_empty(), "no ready line: {stdout}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nport = 1\n",
    )
    .unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--config", "bad.toml"]);
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("unknown key `server.port`"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    std::fs::write(
        dir.path().join("renamed.toml"),
        "upstream_url = \"http://x\"\n",
    )
    .unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--config", "renamed.toml"]);
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("it is now `upstream.url`"), "{stderr}");

    std::fs::write(dir.path().join("syntax.toml"), "mode = \n").unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--config", "syntax.toml"]);
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("syntax.toml"), "{stderr}");

    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--config", "missing.toml"]);
    let stderr = refuses(cmd).await;
    assert!(
        stderr.contains("cannot read config file missing.toml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_modes_and_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--mode", "sometimes"]);
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("sometimes"), "{stderr}");

    let mut cmd = llmtape(dir.path());
    cmd.args(["serve"]).env("LLMTAPE_MODE", "sometimes");
    refuses(cmd).await;

    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--frobnicate"]);
    refuses(cmd).await;

    std::fs::write(dir.path().join("proxy.toml"), "mode = \"fast\"\n").unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve"]);
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("unknown mode \"fast\""), "{stderr}");
}

/// Runs `llmtape ARGS...` (with `env` on the child only) expecting a usage
/// error: exit 2, nothing on stdout, exactly one line on stderr; returns it.
async fn usage_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(args).envs(env.iter().copied());
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(
        stderr.starts_with("llmtape: ") && stderr.ends_with('\n'),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Usage:") && !stderr.contains("tip:"),
        "{stderr}"
    );
    stderr.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_usage_error_is_one_line_naming_what_is_accepted() {
    // A bad value: the flag and the accepted values.
    assert_eq!(
        usage_error(&["serve", "--mode", "sometimes"], &[]).await,
        "llmtape: invalid value 'sometimes' for '--mode <MODE>': expected one of auto, record, replay, passthrough"
    );
    // ... from the environment, which is named.
    assert_eq!(
        usage_error(&["serve"], &[("LLMTAPE_MODE", "sometimes")]).await,
        "llmtape: invalid value 'sometimes' for '--mode <MODE>' (from LLMTAPE_MODE): expected one of auto, record, replay, passthrough"
    );
    // A value its parser refuses: why.
    assert_eq!(
        usage_error(&["verify", "--concurrency", "0"], &[]).await,
        "llmtape: invalid value '0' for '--concurrency <CONCURRENCY>': 0 is not in 1..=256"
    );
    // A flag without its value.
    assert_eq!(
        usage_error(&["probe", "--upstream"], &[]).await,
        "llmtape: '--upstream <URL>' needs a value"
    );
    // An unknown flag: the command's flags, and a near miss.
    let unknown = usage_error(&["verify", "--frobnicate"], &[]).await;
    assert!(
        unknown.starts_with(
            "llmtape: unknown flag '--frobnicate' for 'llmtape verify': expected one of --sample, "
        ) && unknown.contains(" --upstream, ")
            && unknown.ends_with(" (see 'llmtape verify --help')"),
        "{unknown}"
    );
    let near = usage_error(&["ls", "--jsn"], &[]).await;
    assert!(near.contains("; did you mean '--json'?"), "{near}");
    // A missing argument.
    assert_eq!(
        usage_error(&["show"], &[]).await,
        "llmtape: 'llmtape show' needs <KEY_PREFIX> (see 'llmtape show --help')"
    );
    assert_eq!(
        usage_error(&["export"], &[]).await,
        "llmtape: 'llmtape export' needs --out <DIR> (see 'llmtape export --help')"
    );
    // An unknown command, and none at all.
    let commands =
        "serve, ls, show, export, import, rm, prune, rekey, lint, key, audit, verify, probe";
    let unknown = usage_error(&["frobnicate"], &[]).await;
    assert!(
        unknown.starts_with(&format!(
            "llmtape: unknown command 'frobnicate' for 'llmtape': expected one of {commands}"
        )),
        "{unknown}"
    );
    assert!(usage_error(&["verfy"], &[])
        .await
        .ends_with("; did you mean 'verify'?"));
    assert!(usage_error(&[], &[]).await.starts_with(&format!(
        "llmtape: 'llmtape' needs a command: one of {commands}"
    )),);
    assert_eq!(
        usage_error(&["key"], &[]).await,
        "llmtape: 'llmtape key' needs a command: one of explain (see 'llmtape key --help')"
    );
    // A rarer kind falls back on clap's own summary line.
    assert_eq!(
        usage_error(&["ls", "--json=yes"], &[]).await,
        "llmtape: unexpected value 'yes' for '--json' found; no more were expected (see 'llmtape ls --help')"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_version_stay_clap_s_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["-h"],
        &["verify", "--help"],
        &["help", "probe"],
    ] {
        let mut cmd = llmtape(dir.path());
        cmd.args(args);
        let (code, stdout, stderr) = run(cmd).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(
            stdout.lines().count() > 5
                && stdout.contains("Usage: llmtape")
                && stdout.contains("Options:"),
            "{args:?}: the full help: {stdout}"
        );
    }
    let mut cmd = llmtape(dir.path());
    cmd.args(["verify", "--help"]);
    let (_, stdout, _) = run(cmd).await;
    assert!(
        stdout.contains("--upstream <URL>") && stdout.contains("[env: LLMTAPE_UPSTREAM="),
        "{stdout}"
    );
    let mut cmd = llmtape(dir.path());
    cmd.arg("--version");
    let (code, stdout, _) = run(cmd).await;
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("llmtape {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_exits_2_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", &addr]);
    let stderr = refuses(cmd).await;
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_store_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(file.join("store"));
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("cannot open store"), "{stderr}");

    let mut cmd = llmtape(dir.path());
    cmd.args(["ls", "--store"])
        .arg(dir.path().join("never-recorded"));
    let stderr = refuses(cmd).await;
    assert!(stderr.contains("no store at"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_names_every_command_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--help"]);
    let (code, stdout, _) = run(cmd).await;
    assert_eq!(code, 0);
    for needle in [
        "--listen",
        "LLMTAPE_LISTEN",
        "--mode",
        "LLMTAPE_MODE",
        "--store",
        "LLMTAPE_STORE",
        "--config",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    const SECRET: &str = concat!("sk-", "test-dummy-LOGGED-9b1e");
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut cmd = serve_cmd(dir.path(), &mock.url(), &store);
    cmd.env("LLMTAPE_LOG", "trace");
    let mut serve = Serve::start(cmd).await;
    let bearer = format!("Bearer {SECRET}");
    let url = serve.url("/v1/chat/completions");
    for extra in [
        None,
        Some(("x-mock-status", "500")),
        Some(("x-llmtape-mode", "bogus")),
    ] {
        let mut headers = vec![("authorization", bearer.as_str()), ("api-key", SECRET)];
        headers.extend(extra);
        post_with(&url, CHAT, &headers).await;
    }
    assert!(serve.terminate().await.success());
    let logs = serve.log();
    assert!(
        logs.contains("/v1/chat/completions"),
        "requests are logged: {logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "a credential reached the logs:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_key_and_outcome_per_request() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut cmd = serve_cmd(dir.path(), &mock.url(), &store);
    cmd.args(["--log-format", "json"]);
    let mut serve = Serve::start(cmd).await;
    let reply = post(&serve.url("/v1/chat/completions"), CHAT).await;
    post(&serve.url("/v1/chat/completions"), CHAT).await;
    let key = reply.header("x-llmtape-key").unwrap().to_string();
    assert!(serve.terminate().await.success());
    let logs = serve.log();
    let requests: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["fields"]["message"] == "request")
        .collect();
    assert_eq!(requests.len(), 2, "{logs}");
    assert_eq!(requests[0]["fields"]["outcome"], "miss");
    assert_eq!(requests[1]["fields"]["outcome"], "hit");
    assert_eq!(requests[1]["fields"]["key"], key.as_str());
}
