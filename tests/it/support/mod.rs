//! Test support: a mock upstream that answers differently on every call and
//! counts its calls, an in-process llmtape on 127.0.0.1:0, the real binary
//! as a child process, and a small HTTP client. Only loopback traffic.

mod anthropic_mock;
mod binary;
mod client;
mod commands;
mod mock;
mod proxy;
mod redis_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// The library items that many tests name, imported here only.
pub use llmtape::key::RequestKey;
pub use llmtape::record::recording::{Recording, RequestBody};
pub use llmtape::store::SledStore;

pub use anthropic_mock::*;
pub use binary::*;
pub use client::*;
pub use commands::*;
pub use mock::*;
pub use proxy::*;
pub use redis_server::*;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// The repository's root: `fixtures/`, `proxy.toml`, `tests/sdk`,
/// `tests/node`.
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A chat request the mock answers with `reply #N`.
pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"seed":42,"temperature":0}"#;

/// A chat request that streams (three content events and `[DONE]`).
pub const STREAM_CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count"}],"seed":7,"stream":true}"#;

/// Chat request number `n` for a scripted mock, asking for logprobs.
pub fn question(n: usize) -> String {
    format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"question {n}"}}],"seed":1,"temperature":0,"logprobs":true}}"#
    )
}

/// A port of 127.0.0.1 where nothing listens, kept so while this lives:
/// the socket is bound but not listening, so a connection is refused, and
/// no other test can be given the port meanwhile (as it could be a port
/// from a listener bound and dropped).
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        ClosedPort {
            addr,
            _socket: socket,
        }
    }
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The number in the environment variable `name`, when it is set and
/// parses: how a long-running test is made longer from the command line.
pub fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Counts of a key in a map, for readability in asserts.
pub fn count_by<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for item in items {
        *map.entry(item).or_insert(0) += 1;
    }
    map
}
