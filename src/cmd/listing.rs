//! The recordings `ls`, `show` and `audit` read: every recording of a store
//! or a fixtures folder, with its history, in key order.
//!
//! Owns reading them whole, the one-line request target they all print,
//! and finding a recording by key prefix (`show`, `rm`).
//! Opening the store or folder is the dispatcher's ([`crate::app`]); what
//! each command prints is its own.

use std::io::Write;

use crate::error::CommandError;
use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::{Tier, TierError};

/// Hex characters of a key shown in one-line listings: 64 bits, unique in
/// any store a person reads line by line.
pub const SHORT_KEY_CHARS: usize = 16;

/// How many candidates an ambiguous key prefix lists.
const AMBIGUOUS_LISTED: usize = 10;

/// Recordings read for `ls`, `show` and `audit`, from a store or a fixtures
/// folder.
pub struct Listing {
    /// Every readable recording with its history, in key order.
    pub recordings: Vec<(Recording, Vec<Recording>)>,
    /// Where they came from.
    pub location: String,
}

impl Listing {
    /// Reads a store or fixtures folder. Corrupt entries are reported to
    /// `warn` (the caller's stderr, also when a running `serve` runs the
    /// command) and skipped, so the command still has something to show;
    /// history is read only when `with_history`.
    pub fn read(
        store: &dyn Tier,
        with_history: bool,
        warn: &mut dyn Write,
    ) -> Result<Listing, TierError> {
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
                    let _ = writeln!(warn, "llmtape: warning: {error}");
                }
                Err(error) => return Err(error),
            }
        }
        if corrupt > 0 {
            let _ = writeln!(warn, "llmtape: {corrupt} corrupt recording(s) skipped; they replay as misses and are replaced when re-recorded");
        }
        Ok(Listing {
            recordings,
            location: store.location().display().to_string(),
        })
    }
}

/// The one item of `items` whose key starts with `prefix` (any case,
/// surrounding blanks ignored). Not hex, no match, or more than one match is
/// [`CommandError::NotFound`], whose message names the prefix and, when
/// ambiguous, the keys it matches; `location` names where was looked.
pub fn find_by_prefix<'a, T>(
    items: &'a [T],
    key_of: impl Fn(&T) -> &RequestKey,
    prefix: &str,
    location: &str,
) -> Result<&'a T, CommandError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CommandError::NotFound(format!(
            "{prefix:?} is not a key prefix: keys are hex, as `llmtape ls` prints them"
        )));
    }
    let found: Vec<&T> = items
        .iter()
        .filter(|item| key_of(item).to_hex().starts_with(&prefix))
        .collect();
    match found.as_slice() {
        [] => Err(CommandError::NotFound(format!(
            "no recording has a key starting with {prefix} in {location}"
        ))),
        [one] => Ok(one),
        many => {
            let keys: Vec<String> = many
                .iter()
                .take(AMBIGUOUS_LISTED)
                .map(|item| key_of(item).to_hex())
                .collect();
            Err(CommandError::NotFound(format!(
                "{prefix} matches {} recordings ({}{}); give more characters",
                many.len(),
                keys.join(", "),
                if many.len() > AMBIGUOUS_LISTED {
                    ", ..."
                } else {
                    ""
                }
            )))
        }
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
        let with = Listing::read(&store, true, &mut Vec::new()).unwrap();
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
        let mut warnings = Vec::new();
        let without = Listing::read(&store, false, &mut warnings).unwrap();
        assert!(warnings.is_empty());
        assert!(without.recordings.iter().all(|(_, h)| h.is_empty()));
        assert_eq!(without.location, store.path().display().to_string());
    }
}
