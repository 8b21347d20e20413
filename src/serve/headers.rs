//! llmtape's own headers and the outcome words they carry.
//!
//! A leaf: the proxy, replay, single flight and the admin endpoints all
//! name these headers, and none of them owns the others.

use http::header::{HeaderMap, HeaderValue};

use crate::key::RequestKey;

/// `hit`, `miss` or `bypass`.
pub const CACHE_HEADER: &str = "x-llmtape-cache";
/// The request key, 64 hex characters.
pub const KEY_HEADER: &str = "x-llmtape-key";
/// When a replayed recording was made (RFC 3339).
pub const RECORDED_AT_HEADER: &str = "x-llmtape-recorded-at";
/// Per-request mode override.
pub const MODE_HEADER: &str = "x-llmtape-mode";
/// Isolates suites sharing one store.
pub const NAMESPACE_HEADER: &str = "x-llmtape-namespace";
/// On a replay miss: the nearest recording's key and the paths that differ.
pub const MISS_NEAREST_HEADER: &str = "x-llmtape-miss-nearest";
/// On a re-recording whose fingerprint differs: `old -> new`.
pub const FINGERPRINT_CHANGED_HEADER: &str = "x-llmtape-fingerprint-changed";
/// Set when an answer was forwarded but not recorded, with the reason.
pub const NOT_RECORDED_HEADER: &str = "x-llmtape-not-recorded";
/// On a hit with a shared store configured: `local` or `remote`, the tier
/// that held the recording.
pub const TIER_HEADER: &str = "x-llmtape-tier";
/// Per-request override of `replay.timing`.
pub const REPLAY_TIMING_HEADER: &str = "x-llmtape-replay-timing";
/// Per-request override of `key.repeats`: `same` or `sequence`.
pub const REPEATS_HEADER: &str = "x-llmtape-repeats";
/// The run a sequence request counts in (default: the serve's lifetime).
pub const RUN_HEADER: &str = "x-llmtape-run";
/// On a sequence answer: which call of its request in the run it is.
pub const CALL_HEADER: &str = "x-llmtape-call";

/// What happened to a request; the same words in headers, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the store (or from another request's upstream call).
    Hit,
    /// Sent upstream (and recorded if it succeeded).
    Miss,
    /// Sent upstream without looking at the store.
    Bypass,
}

impl Outcome {
    /// The word used in `x-llmtape-cache`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

/// Marks an answer with its outcome and, when there is one, its key.
pub fn mark(headers: &mut HeaderMap, outcome: Outcome, key: Option<&RequestKey>) {
    headers.insert(CACHE_HEADER, HeaderValue::from_static(outcome.as_str()));
    if let Some(key) = key {
        headers.insert(KEY_HEADER, hex_value(key));
    }
}

/// A key as a header value.
pub fn hex_value(key: &RequestKey) -> HeaderValue {
    HeaderValue::from_str(&key.to_hex()).expect("hex is a valid header value")
}
