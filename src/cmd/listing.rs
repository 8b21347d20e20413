//! The recordings `ls`, `show` and `audit` read: every recording of a store
//! or a fixtures folder, with its history, in key order.
//!
//! Owns reading them whole and the one-line request target they all print.
//! Opening the store or folder is the dispatcher's ([`crate::app`]); what
//! each command prints is its own.

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::{Tier, TierError};

/// Hex characters of a key shown in one-line listings: 64 bits, unique in
/// any store a person reads line by line.
pub const SHORT_KEY_CHARS: usize = 16;

/// Recordings read for `ls`, `show` and `audit`, from a store or a fixtures
/// folder.
pub struct Listing {
    /// Every readable recording with its history, in key order.
    pub recordings: Vec<(Recording, Vec<Recording>)>,
    /// Where they came from.
    pub location: String,
}

impl Listing {
    /// Reads a store or fixtures folder. Corrupt entries are reported on
    /// stderr and skipped (the command still has something to show);
    /// history is read only when `with_history`.
    pub fn from_tier(store: &dyn Tier, with_history: bool) -> Result<Listing, TierError> {
        let mut recordings = Vec::new();
        let mut corrupt = 0usize;
        for item in store.iter() {
            match item {
                Ok(entry) => {
                    let history = match with_history {
                        true => store.history(&entry.key())?,
                        false => Vec::new(),
                    };
                    recordings.push((entry, history));
                }
                Err(error) if error.is_corrupt() => {
                    corrupt += 1;
                    eprintln!("llmtape: warning: {error}");
                }
                Err(error) => return Err(error),
            }
        }
        if corrupt > 0 {
            eprintln!("llmtape: {corrupt} corrupt recording(s) skipped; they replay as misses and are replaced when re-recorded");
        }
        Ok(Listing {
            recordings,
            location: store.location().display().to_string(),
        })
    }
}

/// The request's path, with `?query` when it has one.
pub fn request_target(entry: &Recording) -> String {
    let r = &entry.meta.request;
    if r.query.is_empty() {
        r.path.clone()
    } else {
        format!("{}?{}", r.path, r.query)
    }
}

/// At most the first 16 characters of a hex key: what `ls` prints and what
/// `show` accepts as a prefix.
pub fn short_key(key: &RequestKey) -> String {
    let mut hex = key.to_hex();
    hex.truncate(SHORT_KEY_CHARS);
    hex
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::key::RequestKey;
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    /// A listing of `(key hex, fingerprint, model, recorded_at)` recordings
    /// with plain JSON bodies and no history.
    pub(crate) fn listing(rows: &[(&str, &str, Option<&str>, &str)]) -> Listing {
        Listing {
            recordings: rows
                .iter()
                .map(|(key, fp, model, at)| {
                    (test_entry(key, r#"{"id":"x"}"#, fp, *model, at), Vec::new())
                })
                .collect(),
            location: "test-store".into(),
        }
    }

    #[test]
    fn targets_carry_the_query_and_short_keys_are_sixteen_hex() {
        let mut entry = test_entry(&"ab".repeat(32), "{}", "fp", None, "t");
        assert_eq!(request_target(&entry), "/v1/chat/completions");
        entry.meta.request.query = "api-version=1".into();
        assert_eq!(request_target(&entry), "/v1/chat/completions?api-version=1");
        assert_eq!(short_key(&entry.key()), "abababababababab");
    }

    #[test]
    fn a_store_is_read_in_key_order_with_history_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        for (hex, fp) in [("bb", "fp_1"), ("aa", "fp_1"), ("aa", "fp_2")] {
            let key = RequestKey::from_hex(&hex.repeat(32)).unwrap();
            let entry = test_entry(&key.to_hex(), "{}", fp, Some("m"), "t");
            store.put(&key, &entry, 5).unwrap();
        }
        let with = Listing::from_tier(&store, true).unwrap();
        let keys: Vec<String> = with
            .recordings
            .iter()
            .map(|(e, _)| short_key(&e.meta.key))
            .collect();
        assert_eq!(keys, ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]);
        assert_eq!(with.recordings[0].1.len(), 1, "fp_1 went to history");
        assert_eq!(
            with.recordings[0].0.meta.system_fingerprint.as_deref(),
            Some("fp_2")
        );
        let without = Listing::from_tier(&store, false).unwrap();
        assert!(without.recordings.iter().all(|(_, h)| h.is_empty()));
        assert_eq!(without.location, store.path().display().to_string());
    }
}
