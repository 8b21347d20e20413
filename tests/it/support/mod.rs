//! Test support: a mock upstream that answers differently on every call and
//! counts its calls, an in-process llmtape on 127.0.0.1:0, the real binary
//! as a child process, and a small HTTP client. Only loopback traffic.

#![allow(dead_code)]

mod binary;
mod client;
mod mock;
mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use binary::*;
pub use client::*;
pub use mock::*;
pub use proxy::*;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"seed":42,"temperature":0}"#;

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

/// Counts of a key in a map, for readability in asserts.
pub fn count_by<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for item in items {
        *map.entry(item).or_insert(0) += 1;
    }
    map
}
