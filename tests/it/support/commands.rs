//! One-shot commands of the real binary, their output kept as bytes (to
//! compare a command run through a `serve` with the same command run
//! offline), and the `serve.json` a running `serve` publishes.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

pub use llmtape::remote::ServeFile;

use super::{llmtape, WAIT};

/// What a command printed and how it ended, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Asserts exit code `code` and one line on stderr; returns that line.
    pub fn one_line_error(&self, code: i32) -> String {
        let err = self.err();
        assert_eq!(self.code, code, "exit {code}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    }
}

/// `llmtape ARGS...` in `cwd` with `stdin` (none: empty), no API key in
/// its environment.
pub async fn run_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Ran {
    let mut cmd = llmtape(cwd);
    cmd.args(args)
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("llmtape starts");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("llmtape {args:?} finishes within {WAIT:?}"))
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// The `serve.json` in the store at `store`, read and checked.
pub fn serve_file(store: &Path) -> ServeFile {
    let text = std::fs::read_to_string(store.join("serve.json")).expect("serve.json exists");
    ServeFile::parse(&text).unwrap_or_else(|e| panic!("serve.json parses ({e}): {text}"))
}

/// Rewrites the store's `serve.json` with `change` applied.
pub fn edit_serve_file(store: &Path, change: impl FnOnce(&mut ServeFile)) {
    let mut file = serve_file(store);
    change(&mut file);
    std::fs::write(
        store.join("serve.json"),
        serde_json::to_string(&file).unwrap(),
    )
    .unwrap();
}
