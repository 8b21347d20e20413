//! The real `llmtape` binary as a child process: one-shot commands, a
//! running `serve` with its ready line, and a test of this binary run
//! again in a process of its own.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::WAIT;

/// How often [`Serve::wait_for_log`] reads the log: a file gives no
/// notice of a write.
const LOG_POLL: Duration = Duration::from_millis(10);

/// The llmtape binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_llmtape");

/// A `llmtape` command with a clean environment (no LLMTAPE_* leaking in
/// from the developer's shell) in `cwd`.
pub fn llmtape(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("LLMTAPE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs a command to completion; returns (exit code, stdout, stderr).
pub async fn run(mut cmd: Command) -> (i32, String, String) {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("command finishes in time")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `llmtape serve` on a free port of 127.0.0.1 in front of `upstream`,
/// with its store at `store`.
pub fn serve_cmd(cwd: &Path, upstream: &str, store: &Path) -> Command {
    let mut cmd = llmtape(cwd);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--store",
    ])
    .arg(store);
    cmd
}

/// A running `llmtape serve` child and the address from its ready line.
///
/// Its stderr goes to a file, read with [`Serve::log`]: a pipe that nobody
/// drains while a load runs would fill and stall the child.
pub struct Serve {
    pub child: Child,
    /// The ready line, `llmtape listening on http://ADDR (...)`.
    pub ready: String,
    pub addr: String,
    log: tempfile::NamedTempFile,
    /// Held so the child never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Serve {
    /// Spawns `cmd` (a `serve` command) and waits for its ready line
    /// (`http://` or, with TLS, `https://`; [`Serve::url`] is for plain
    /// HTTP only).
    pub async fn start(mut cmd: Command) -> Serve {
        let log = tempfile::NamedTempFile::new().unwrap();
        cmd.stdout(Stdio::piped()).stderr(log.reopen().unwrap());
        let mut child = cmd.spawn().expect("llmtape starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("ready line in time")
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "serve exited before its ready line: {}",
                    read_log(log.path())
                )
            });
        let addr = ready
            .strip_prefix("llmtape listening on http://")
            .or_else(|| ready.strip_prefix("llmtape listening on https://"))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected ready line: {ready}"))
            .to_string();
        Serve {
            child,
            ready,
            addr,
            log,
            _stdout: lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// What the child wrote to stderr so far.
    pub fn log(&self) -> String {
        read_log(self.log.path())
    }

    /// Waits (at most [`WAIT`]) until the child's stderr holds `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{needle:?} in serve's log within {WAIT:?}; its log: {}",
                self.log()
            );
            tokio::time::sleep(LOG_POLL).await;
        }
    }

    /// Sends `signal` (as `kill` takes it, e.g. `-TERM`) and returns at once.
    pub async fn send_signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill {signal} works");
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("serve exits in time; its log: {}", self.log()))
            .unwrap()
    }

    /// Sends `signal` and waits for the child to exit.
    pub async fn signal(&mut self, signal: &str) -> ExitStatus {
        self.send_signal(signal).await;
        self.wait().await
    }

    /// SIGTERM, and the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM").await
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Set in a child run by [`ran_in_own_process`]: the one test it runs.
const OWN_PROCESS: &str = "LLMTAPE_IT_OWN_PROCESS";

/// Runs the test `name` (its path in this binary, `module::test`) again,
/// alone, in a child process of this test binary with `env` added to its
/// environment. True once that child passed; false in the child itself,
/// which goes on to run the test's body:
///
/// ```ignore
/// if ran_in_own_process("module::test", &[("NAME", "value")]).await {
///     return;
/// }
/// ```
///
/// For a test that needs an environment variable set: the tests of this
/// binary are threads of one process, where `std::env::set_var` races with
/// every thread that reads the environment (C code such as getaddrinfo
/// reads it without Rust's lock).
pub async fn ran_in_own_process(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var(OWN_PROCESS).as_deref() == Ok(name) {
        return false;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary's path"));
    cmd.args([name, "--exact", "--test-threads", "1"])
        .env(OWN_PROCESS, name)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let (code, stdout, stderr) = run(cmd).await;
    assert!(
        code == 0 && stdout.contains("test result: ok. 1 passed"),
        "{name} in a process of its own (exit {code}):\n{stdout}\n{stderr}"
    );
    true
}
