//! A fixtures folder as a recording tier: every fixture file loaded into
//! memory at start, served by key, and written back file by file.
//!
//! The file format is [`crate::store::fixtures`]'s; this module owns only
//! which file holds which key and when a file may be rewritten.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::fixtures::{
    fixture_files, read_fixture, relative_path, render, to_fixture, write_if_changed, FixtureError,
};

/// A fixtures folder loaded into memory, serving recordings by key.
///
/// Loaded whole at start (every file must be valid). New recordings are
/// written as new files; an existing file is only rewritten when asked to
/// (`record` mode), with the old recording moved into its history.
pub struct FixtureDir {
    root: PathBuf,
    loaded: RwLock<HashMap<RequestKey, Loaded>>,
}

struct Loaded {
    entry: Recording,
    history: Vec<Recording>,
    path: PathBuf,
}

impl fmt::Debug for FixtureDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixtureDir")
            .field("root", &self.root)
            .finish()
    }
}

impl FixtureDir {
    /// Loads every fixture under `root`; the first invalid one is an error
    /// naming the file. A missing folder is an error too.
    pub fn load(root: &Path) -> Result<FixtureDir, FixtureError> {
        if !root.is_dir() {
            return Err(FixtureError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such fixtures folder (create it, or record into it with --mode auto)",
                ),
            });
        }
        let mut loaded = HashMap::new();
        for path in fixture_files(root)? {
            let (file, entry, history) = read_fixture(&path)?;
            let key = RequestKey::from_hex(&file.key).expect("from_fixture checked the key");
            if let Some(other) = loaded.insert(
                key,
                Loaded {
                    entry,
                    history,
                    path: path.clone(),
                },
            ) {
                return Err(FixtureError::Invalid {
                    path,
                    message: format!(
                        "key {} is also recorded in {}",
                        file.key,
                        other.path.display()
                    ),
                });
            }
        }
        Ok(FixtureDir {
            root: root.to_path_buf(),
            loaded: RwLock::new(loaded),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The recording for `key`.
    pub fn get(&self, key: &RequestKey) -> Option<Recording> {
        self.read().get(key).map(|l| l.entry.clone())
    }

    /// Whether `key` is recorded here.
    pub fn contains(&self, key: &RequestKey) -> bool {
        self.read().contains_key(key)
    }

    /// Number of recordings.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when the folder holds no recording.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Earlier recordings of `key`, oldest first.
    pub fn history(&self, key: &RequestKey) -> Vec<Recording> {
        self.read()
            .get(key)
            .map(|l| l.history.clone())
            .unwrap_or_default()
    }

    /// Deletes the fixture file holding `key`; returns whether there was one.
    pub fn remove(&self, key: &RequestKey) -> Result<bool, FixtureError> {
        let mut map = crate::sync::write(&self.loaded);
        let Some(loaded) = map.get(key) else {
            return Ok(false);
        };
        match std::fs::remove_file(&loaded.path) {
            Ok(()) => {}
            // Already gone from disk: forgetting it is all that is left.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FixtureError::Io {
                    path: loaded.path.clone(),
                    source,
                })
            }
        }
        map.remove(key);
        Ok(true)
    }

    /// Every recording with its history, sorted by key.
    pub fn all(&self) -> Vec<(Recording, Vec<Recording>)> {
        let map = self.read();
        let mut keys: Vec<&RequestKey> = map.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| (map[k].entry.clone(), map[k].history.clone()))
            .collect()
    }

    /// Records `entry`. A new key becomes a new file. An existing key is
    /// left alone unless `replace`, in which case the old recording moves
    /// into the file's history (at most `history` kept). Returns whether
    /// anything was written.
    pub fn put(
        &self,
        key: &RequestKey,
        entry: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, FixtureError> {
        let mut map = crate::sync::write(&self.loaded);
        let (path, past) = match map.get(key) {
            Some(_) if !replace => return Ok(false),
            Some(old) => {
                let mut past = old.history.clone();
                past.push(old.entry.clone());
                let excess = past.len().saturating_sub(history);
                past.drain(..excess);
                (old.path.clone(), past)
            }
            None => (self.free_path(entry, &map), Vec::new()),
        };
        write_if_changed(&path, &render(&to_fixture(entry, &past)))?;
        map.insert(
            *key,
            Loaded {
                entry: entry.clone(),
                history: past,
                path,
            },
        );
        Ok(true)
    }

    /// Sets the recording for `key` and its history exactly (`import`
    /// into a folder): the key's file is rewritten, or a new one written.
    pub fn replace(
        &self,
        key: &RequestKey,
        entry: &Recording,
        history: &[Recording],
    ) -> Result<(), FixtureError> {
        let mut map = crate::sync::write(&self.loaded);
        let path = match map.get(key) {
            Some(old) => old.path.clone(),
            None => self.free_path(entry, &map),
        };
        write_if_changed(&path, &render(&to_fixture(entry, history)))?;
        map.insert(
            *key,
            Loaded {
                entry: entry.clone(),
                history: history.to_vec(),
                path,
            },
        );
        Ok(())
    }

    /// The path for a new recording; the full key names the file in the
    /// (unlikely) case that the short name is taken.
    fn free_path(&self, entry: &Recording, map: &HashMap<RequestKey, Loaded>) -> PathBuf {
        let path = self.root.join(relative_path(entry));
        let taken = path.exists() || map.values().any(|l| l.path == path);
        if taken {
            path.with_file_name(format!("{}.json", entry.meta.key))
        } else {
            path
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<RequestKey, Loaded>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (inserts are single operations), so a poisoned lock is still usable.
        crate::sync::read(&self.loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;
    use bytes::Bytes;

    #[test]
    fn a_fixture_dir_writes_new_files_and_only_replaces_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = FixtureDir::load(dir.path()).unwrap();
        let first = test_entry(
            &"0123456789abcdef".repeat(4),
            &b"{\"n\":1}"[..],
            "fp_1",
            None,
            "2026-11-22T00:00:00.000Z",
        );
        let key = first.key();
        assert!(fixtures.put(&key, &first, 5, false).unwrap());
        let path = dir.path().join(relative_path(&first));
        let written = std::fs::read_to_string(&path).unwrap();
        let mut second = first.clone();
        second.body = Bytes::from_static(b"{\"n\":2}");
        assert!(!fixtures.put(&key, &second, 5, false).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            written,
            "untouched"
        );
        assert!(fixtures.put(&key, &second, 5, true).unwrap());
        let reloaded = FixtureDir::load(dir.path()).unwrap();
        let all = reloaded.all();
        assert_eq!(all[0].0.body, second.body);
        assert_eq!(all[0].1[0].body, first.body);
    }

    #[test]
    fn an_invalid_fixture_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("chat")).unwrap();
        std::fs::write(dir.path().join("chat/bad.json"), "{\"llmtape_fixture\": 1,").unwrap();
        let err = FixtureDir::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chat/bad.json"), "{err}");
    }
}
