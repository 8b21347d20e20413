//! `llmtape export`: the store's recordings written as fixture files (one
//! pretty JSON file each, history included), without loss. A file whose
//! text would not change is not touched; a recording that holds
//! credential-like text is refused (`crate::cmd::lint`).
//!
//! The fixture format and file layout are [`crate::store::fixtures`]'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cmd::filter::Filter;
use crate::cmd::lint;
use crate::cmd::transfer::{Progress, Summary};
use crate::key::RequestKey;
use crate::store::fixtures::{self, FixtureError};
use crate::store::{Tier, TierError};

/// Writes the recordings of a store (or another fixtures folder) that
/// `filter` keeps as fixture files
/// under `out`. Corrupt entries, entries whose key is unusable and
/// credential-like recordings are skipped with their reason; a store that
/// cannot be read, or a folder that cannot be written, fails the export.
pub fn export(store: &dyn Tier, out: &Path, filter: &Filter) -> Result<Summary, TierError> {
    std::fs::create_dir_all(out).map_err(|source| FixtureError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let progress = Progress::new("exporting", store.count());
    let mut summary = Summary::default();
    let mut used: HashMap<PathBuf, RequestKey> = HashMap::new();
    for (done, item) in store.iter().enumerate() {
        progress.tick(done + 1);
        let entry = match item {
            Ok(entry) => entry,
            Err(error) if error.is_corrupt() => {
                summary
                    .skipped
                    .push(("(corrupt entry)".into(), error.to_string()));
                continue;
            }
            Err(error) => return Err(error),
        };
        if !filter.keeps(&entry) {
            continue;
        }
        let key = entry.key();
        let history = store.history(&key)?;
        let file = fixtures::to_fixture(&entry, &history);
        let value = serde_json::to_value(&file).expect("a fixture always serialises");
        if let Some(finding) = lint::scan(&value).first() {
            summary.skipped.push((
                key.to_hex(),
                format!(
                    "holds {} at {}; not exported (see `llmtape lint`)",
                    finding.what, finding.pointer
                ),
            ));
            continue;
        }
        let mut path = out.join(fixtures::relative_path(&entry));
        let taken_by_other =
            used.get(&path).is_some_and(|k| *k != key) || occupant(&path, &key) == Occupant::Other;
        if taken_by_other {
            path = path.with_file_name(format!("{}.json", key.to_hex()));
        }
        used.insert(path.clone(), key);
        if fixtures::write_if_changed(&path, &fixtures::render(&file))? {
            summary.written += 1;
        } else {
            summary.unchanged += 1;
        }
    }
    Ok(summary)
}

/// Who holds a fixture path already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occupant {
    /// No file, or one that is not a fixture: free to (over)write.
    Free,
    /// A fixture of this very key: rewritten only if its text changes.
    Same,
    /// A fixture of another key, or with a key that is not a key at all:
    /// left alone; the recording goes to a file named by its whole key.
    Other,
}

/// Who holds `path`, for a recording under `key`. A file's key is compared
/// in the form the store writes it (lowercase hex), so a hand-edited key
/// that is not hex is someone else's file, never a panic.
fn occupant(path: &Path, key: &RequestKey) -> Occupant {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Occupant::Free;
    };
    match fixtures::parse(path, &text) {
        Err(_) => Occupant::Free,
        Ok(file) if file.key == key.to_hex() => Occupant::Same,
        Ok(_) => Occupant::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    fn key(hex: &str) -> RequestKey {
        RequestKey::from_hex(&hex.repeat(32)).unwrap()
    }

    fn store_with(dir: &Path, entries: &[(RequestKey, &str)]) -> SledStore {
        let store = SledStore::open(&dir.join("store")).unwrap();
        for (key, meta_key) in entries {
            let entry = test_entry(meta_key, r#"{"id":"x"}"#, "fp", Some("m"), "t");
            store.put(key, &entry, 0).unwrap();
        }
        store
    }

    #[test]
    fn a_file_with_a_bad_key_at_the_path_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("ab");
        let store = store_with(dir.path(), &[(k, &k.to_hex())]);
        let out = dir.path().join("fx");
        let short = out.join("chat.completions/m/abababababababab.json");
        std::fs::create_dir_all(short.parent().unwrap()).unwrap();
        let mut foreign = fixtures::to_fixture(&store.get(&k).unwrap().unwrap(), &[]);
        foreign.key = "not-a-key".into();
        let foreign = fixtures::render(&foreign);
        std::fs::write(&short, &foreign).unwrap();

        let summary = export(&store, &out, &Filter::default()).unwrap();
        assert_eq!((summary.written, summary.skipped.len()), (1, 0));
        assert_eq!(std::fs::read_to_string(&short).unwrap(), foreign);
        let whole = short.with_file_name(format!("{}.json", k.to_hex()));
        assert!(whole.is_file(), "written beside it under the whole key");
        assert_eq!(occupant(&whole, &k), Occupant::Same);
        assert_eq!(occupant(&short, &k), Occupant::Other);
        assert_eq!(occupant(&out.join("none.json"), &k), Occupant::Free);
        std::fs::write(&short, "not json").unwrap();
        assert_eq!(occupant(&short, &k), Occupant::Free);
    }

    #[test]
    fn a_damaged_recording_is_skipped_not_a_panic() {
        // A value whose key is not hex (or that is damaged in any other
        // way) does not decode, so it cannot reach the exporter as a
        // recording: it is a corrupt entry, skipped with its reason.
        let dir = tempfile::tempdir().unwrap();
        let good = key("cd");
        let store = store_with(dir.path(), &[(good, &good.to_hex())]);
        store.put_raw(&key("ab"), b"LLMTAPE1damaged").unwrap();
        let out = dir.path().join("fx");
        let summary = export(&store, &out, &Filter::default()).unwrap();
        assert_eq!(summary.written, 1);
        assert_eq!(summary.skipped.len(), 1);
        assert_eq!(summary.skipped[0].0, "(corrupt entry)");
        let again = export(&store, &out, &Filter::default()).unwrap();
        assert_eq!(
            (again.written, again.unchanged),
            (0, 1),
            "unchanged files are not rewritten"
        );
    }
}
