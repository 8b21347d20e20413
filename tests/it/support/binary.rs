//! The real `llmtape` binary as a child process.

use std::path::Path;

use super::WAIT;

/// The llmtape binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_llmtape");

/// A `llmtape` command with a clean environment (no LLMTAPE_* leaking in
/// from the developer's shell) in `cwd`.
pub fn llmtape(cwd: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.current_dir(cwd).kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("LLMTAPE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs a command to completion; returns (exit code, stdout, stderr).
pub async fn run(mut cmd: tokio::process::Command) -> (i32, String, String) {
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
