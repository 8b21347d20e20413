//! `llmtape rm KEY_PREFIX...`: deletes recordings, history and all, from a
//! store or a fixtures folder, each named by the start of its key.
//!
//! All or nothing: every prefix must name exactly one recording, as `show`
//! wants ([`find_by_prefix`]); when one does not (not hex, unknown,
//! ambiguous), nothing is deleted and the error lists every bad prefix.

use std::io::Write;

use crate::cmd::listing::find_by_prefix;
use crate::error::CommandError;
use crate::key::RequestKey;
use crate::store::{StoreError, Tier, TierError};

/// Which recordings `rm` deletes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// Key prefixes, as `ls` prints them; each must match one recording.
    pub key_prefixes: Vec<String>,
}

/// Deletes the recordings the prefixes name and prints
/// `removed N recording(s) from PLACE`.
pub fn run(tier: &dyn Tier, options: &Options, out: &mut dyn Write) -> Result<(), CommandError> {
    if options.key_prefixes.is_empty() {
        return Err(CommandError::Usage(
            "rm needs at least one key prefix, as `llmtape ls` prints them".into(),
        ));
    }
    let location = tier.location().display().to_string();
    let keys = keys(tier)?;
    let chosen = resolve(&keys, &options.key_prefixes, &location)?;
    let mut removed = 0usize;
    for key in &chosen {
        if tier.remove(key)? {
            removed += 1;
        }
    }
    tier.flush()?;
    writeln!(out, "removed {removed} recording(s) from {location}")?;
    Ok(())
}

/// Every key in the tier, a corrupt entry's included (so it can be
/// deleted too), in the tier's order.
fn keys(tier: &dyn Tier) -> Result<Vec<RequestKey>, CommandError> {
    let mut keys = Vec::new();
    for item in tier.iter() {
        match item {
            Ok(recording) => keys.push(recording.key()),
            Err(TierError::Store(StoreError::Corrupt { key, .. })) => {
                keys.extend(RequestKey::from_hex(&key));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(keys)
}

/// The one key each prefix names, without repeats; any prefix that names
/// none or several makes it an error naming every such prefix.
pub(crate) fn resolve(
    keys: &[RequestKey],
    prefixes: &[String],
    location: &str,
) -> Result<Vec<RequestKey>, CommandError> {
    let mut chosen = Vec::new();
    let mut problems = Vec::new();
    for prefix in prefixes {
        match find_by_prefix(keys, |key| key, prefix, location) {
            Ok(key) if chosen.contains(key) => {}
            Ok(key) => chosen.push(*key),
            Err(error) => problems.push(error.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(chosen)
    } else {
        Err(CommandError::NotFound(format!(
            "nothing removed: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;
    use crate::store::{FixtureDir, SledStore};

    fn key(hex: &str) -> RequestKey {
        RequestKey::from_hex(&hex.repeat(64 / hex.len())).unwrap()
    }

    fn prefixes(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn each_prefix_names_one_key_or_nothing_is_chosen() {
        let keys = [key("ab"), key("abcd"), key("cd")];
        let chosen = resolve(&keys, &prefixes(&["cd", "ABAB", " cdcd "]), "s").unwrap();
        assert_eq!(
            chosen,
            [key("cd"), key("ab")],
            "in the order given, once each"
        );
        let error = resolve(&keys, &prefixes(&["cd", "ab", "ef", "x"]), "s")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("nothing removed: ab matches 2 recordings (abab"),
            "{error}"
        );
        assert!(
            error.contains("; no recording has a key starting with ef in s; "),
            "{error}"
        );
        assert!(
            error.ends_with("\"x\" is not a key prefix: keys are hex, as `llmtape ls` prints them"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn removes_from_either_tier_with_history_and_refuses_a_bad_prefix_whole() {
        let store_dir = tempfile::tempdir().unwrap();
        let fixtures_dir = tempfile::tempdir().unwrap();
        let tiers: Vec<Box<dyn Tier>> = vec![
            Box::new(SledStore::open(store_dir.path()).unwrap()),
            Box::new(FixtureDir::load(fixtures_dir.path()).unwrap()),
        ];
        for tier in &tiers {
            for hex in ["ab", "abcd", "cd"] {
                let entry = test_entry(&key(hex).to_hex(), "{}", "fp_1", Some("m"), "t");
                tier.put(&key(hex), &entry, 5, true).unwrap();
                tier.put(&key(hex), &entry, 5, true).unwrap();
            }
            let remove = |list: &[&str]| {
                let mut out = Vec::new();
                let options = Options {
                    key_prefixes: prefixes(list),
                };
                run(tier.as_ref(), &options, &mut out).map(|()| String::from_utf8(out).unwrap())
            };
            let refused = remove(&["cd", "ab"]).unwrap_err();
            assert!(matches!(refused, CommandError::NotFound(_)));
            assert_eq!(tier.count(), 3, "nothing removed");
            assert!(matches!(remove(&[]), Err(CommandError::Usage(_))));
            let place = tier.location().display().to_string();
            assert_eq!(
                remove(&["cd", "abab"]).unwrap(),
                format!("removed 2 recording(s) from {place}\n")
            );
            assert_eq!(tier.count(), 1);
            assert!(tier.history(&key("cd")).unwrap().is_empty());
            assert!(tier.get(&key("abcd")).unwrap().is_some());
        }
    }

    #[test]
    fn a_corrupt_entry_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.put_raw(&key("ef"), b"LLMTAPE1damaged").unwrap();
        let mut out = Vec::new();
        let options = Options {
            key_prefixes: prefixes(&["ef"]),
        };
        run(&store, &options, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("removed 1 recording(s)"));
        assert!(store.is_empty());
    }
}
