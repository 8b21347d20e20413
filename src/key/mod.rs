//! The request key: a versioned canonical form of a request, hashed.
//!
//! Owns what makes two requests "the same": method, path, sorted query,
//! the body in canonical form, the namespace, (with `scope = "api-key"`)
//! a hash of the caller's credential, and the request headers that change
//! an answer (`anthropic-version`, `anthropic-beta`; only when sent, so a
//! request without them keys as it always did). It does not know about HTTP types,
//! the store or the mode; callers hand it plain strings and bytes.
//!
//! The hash is blake3 `derive_key` with a context that names the version of
//! the canonical form, over length-prefixed parts, so a field can never bleed
//! into its neighbour. Changing anything about canonicalisation means a new
//! [`CANONICAL_VERSION`] and context; the golden tests in `canonical`
//! pin today's.
//!
//! This file holds the key and what a request is reduced to; `canonical`
//! holds the canonical form, its JSON and its hash; `multipart` splits form
//! bodies; `cache` remembers the keys of repeated raw requests; `sharded`
//! is the map every key-addressed cache is built on.

pub(crate) mod cache;
mod canonical;
mod multipart;
mod presets;
mod repeats;
pub(crate) mod sharded;
mod spread;

use std::fmt;

pub use canonical::{canonical_json, remove_fields, remove_pointer, Canonical, CanonicalBody};
pub use multipart::FormPart;
pub use presets::{By, Preset, Removed, BILLING_HEADER_PREFIX, DEFAULT_PRESETS};
pub use repeats::{call_key, Repeats};

/// Version of the canonical form; part of the hash context.
pub const CANONICAL_VERSION: u32 = 1;

/// A request's key: 32 bytes, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey([u8; 32]);

impl RequestKey {
    /// Wraps raw bytes (e.g. read back from the store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RequestKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(RequestKey(out))
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

/// Stored and exported as its 64 hex characters, so recordings and
/// fixture files read the same as before the key was typed; anything else
/// is a decode error (a damaged value), never a key.
impl serde::Serialize for RequestKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RequestKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        RequestKey::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a request key is 64 hex characters"))
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written into a stack buffer in one go: the key is formatted for
        // every request's log line, where 32 `{:02x}` calls showed up in
        // the profile.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[(b >> 4) as usize];
            out[2 * i + 1] = DIGITS[(b & 0x0f) as usize];
        }
        f.write_str(std::str::from_utf8(&out).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestKey({self})")
    }
}

/// What a request is reduced to before hashing.
#[derive(Debug, Clone)]
pub struct RequestParts<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path without query, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    /// Raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The request's `content-type`, if any (for multipart boundaries).
    pub content_type: Option<&'a str>,
    /// The body as received.
    pub body: &'a [u8],
    /// `x-llmtape-namespace`, if given.
    pub namespace: Option<&'a str>,
    /// The caller's credential; only used with `scope = "api-key"`.
    pub credential: Option<&'a [u8]>,
    /// The `anthropic-version` request header, if given: it changes the
    /// answer, so it is part of the key.
    pub anthropic_version: Option<&'a str>,
    /// Every `anthropic-beta` request header value, as sent (each may
    /// list several betas, comma-separated).
    pub anthropic_beta: Vec<&'a str>,
}

/// The settings that shape a key.
#[derive(Debug, Clone, Default)]
pub struct KeyRules {
    /// Named sets of fields removed before hashing, applied first.
    pub presets: Vec<Preset>,
    /// JSON pointers removed before hashing.
    pub ignore_fields: Vec<String>,
    /// Mix a hash of the caller's credential into the key.
    pub per_credential: bool,
}
