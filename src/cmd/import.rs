//! `llmtape import`: fixture files loaded into the store (any tier, so a
//! running `serve` can import into its own), history included.
//! Invalid files are skipped with their reason; recordings already
//! identical are left alone, so importing twice changes nothing.

use std::path::Path;

use crate::cmd::transfer::{Progress, Summary};
use crate::error::CommandError;
use crate::store::fixtures;
use crate::store::{Tier, TierError};

/// Refuses a `DIR` that is not a folder, before any store is opened (so a
/// typo does not create an empty store).
pub fn check_folder(dir: &Path) -> Result<(), CommandError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(CommandError::NotFound(format!(
            "{} is not a folder of fixtures",
            dir.display()
        )))
    }
}

/// Loads every fixture under `dir` into the store.
pub fn import(store: &dyn Tier, dir: &Path) -> Result<Summary, TierError> {
    let files = fixtures::fixture_files(dir)?;
    let progress = Progress::new("importing", files.len());
    let mut summary = Summary::default();
    for (done, path) in files.iter().enumerate() {
        progress.tick(done + 1);
        let (_, entry, history) = match fixtures::read_fixture(path) {
            Ok(loaded) => loaded,
            Err(error) => {
                summary
                    .skipped
                    .push((path.display().to_string(), error.to_string()));
                continue;
            }
        };
        let key = entry.key();
        let current = store.get(&key).ok().flatten();
        if current.as_ref() == Some(&entry) && store.history(&key)? == history {
            summary.unchanged += 1;
            continue;
        }
        store.replace(&key, &entry, &history)?;
        summary.written += 1;
    }
    store.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RequestKey;
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    #[test]
    fn imports_valid_files_once_and_skips_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let fx = dir.path().join("fx");
        std::fs::create_dir_all(&fx).unwrap();
        let key = RequestKey::from_hex(&"ab".repeat(32)).unwrap();
        let old = test_entry(
            &key.to_hex(),
            "{}",
            "fp_0",
            Some("m"),
            "2026-01-01T00:00:00.000Z",
        );
        let entry = test_entry(
            &key.to_hex(),
            "{}",
            "fp_1",
            Some("m"),
            "2026-02-01T00:00:00.000Z",
        );
        let file = fixtures::render(&fixtures::to_fixture(&entry, &[old]));
        std::fs::write(fx.join("good.json"), file).unwrap();
        std::fs::write(fx.join("broken.json"), "{").unwrap();
        assert!(check_folder(&fx).is_ok());
        assert!(matches!(
            check_folder(&fx.join("good.json")),
            Err(CommandError::NotFound(_))
        ));

        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let summary = import(&store, &fx).unwrap();
        assert_eq!((summary.written, summary.unchanged), (1, 0));
        assert_eq!(summary.skipped.len(), 1);
        assert!(summary.skipped[0].0.ends_with("broken.json"));
        assert_eq!(store.get(&key).unwrap().unwrap(), entry);
        assert_eq!(store.history(&key).unwrap().len(), 1);
        let again = import(&store, &fx).unwrap();
        assert_eq!((again.written, again.unchanged), (0, 1));
    }
}
