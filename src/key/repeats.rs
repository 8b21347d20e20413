//! Repeat sequences: the key of the Nth identical request within a run.
//!
//! The first call keeps the plain key, so recordings made without
//! sequences still answer it. Call N > 1 is blake3 `derive_key` of the
//! plain key and N under its own context: a plain key is a hash under
//! another context, so the two can never be the same 32 bytes except by a
//! blake3 collision.

use std::fmt;
use std::str::FromStr;

use crate::key::RequestKey;

/// blake3 `derive_key` context of a sequence call's key; stored keys
/// depend on it, so it never changes.
const SEQUENCE_CONTEXT: &str = "llmtape 2026-12-01 repeat sequence call v1";

/// What an identical request sent again gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Repeats {
    /// The same recording every time.
    #[default]
    Same,
    /// The Nth identical request in a run gets the Nth recording.
    Sequence,
}

impl Repeats {
    /// The word in config and in `x-llmtape-repeats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Repeats::Same => "same",
            Repeats::Sequence => "sequence",
        }
    }
}

impl fmt::Display for Repeats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Repeats {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "same" => Ok(Repeats::Same),
            "sequence" => Ok(Repeats::Sequence),
            other => Err(format!(
                "unknown repeats {other:?}: expected \"same\" or \"sequence\""
            )),
        }
    }
}

/// The key of call `call` (1-based) of the request whose plain key is
/// `plain`: `plain` itself for the first call.
pub fn call_key(plain: &RequestKey, call: u32) -> RequestKey {
    if call <= 1 {
        return *plain;
    }
    let mut hasher = blake3::Hasher::new_derive_key(SEQUENCE_CONTEXT);
    hasher.update(plain.as_bytes());
    hasher.update(&u64::from(call).to_le_bytes());
    RequestKey::from_bytes(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_call_is_the_plain_key_and_later_ones_are_pinned() {
        let plain = RequestKey::from_bytes([7; 32]);
        assert_eq!(call_key(&plain, 1), plain);
        let second = call_key(&plain, 2);
        assert_ne!(second, plain);
        assert_ne!(call_key(&plain, 3), second);
        assert_eq!(call_key(&plain, 2), second, "stable");
        // Stored keys depend on this derivation: it must never change.
        assert_eq!(
            second.to_hex(),
            "6de6bd3d33ef0c5011ab4cfe0b821a44e9f7263bd6acf317e75766e814a8ebe5"
        );
    }

    #[test]
    fn words_parse() {
        assert_eq!("sequence".parse::<Repeats>().unwrap(), Repeats::Sequence);
        assert_eq!(" same ".parse::<Repeats>().unwrap(), Repeats::Same);
        assert!("loop".parse::<Repeats>().is_err());
    }
}
