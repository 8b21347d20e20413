//! The store: recordings on disk, in sled. The only module that knows sled.
//!
//! Two trees. `entries` maps a 32-byte key to the current recording;
//! `history` keeps earlier recordings of a key under `key ++ sequence`
//! (big-endian, so a prefix scan returns them oldest first). Replacing a
//! recording moves the old one to history and writes the new one in one
//! sled transaction, so a crash leaves either the old state or the new one.
//!
//! Values are [`Entry`] encodings with a checksum; one that fails to decode
//! is reported as [`StoreError::Corrupt`] and callers treat it as a miss.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::entry::{DecodeError, Entry};
use crate::key::RequestKey;

const ENTRIES_TREE: &str = "entries";
const HISTORY_TREE: &str = "history";

/// sled's own text for a store locked by another process; matched to turn
/// its generic I/O error into [`StoreError::Locked`].
const SLED_LOCK_MESSAGE: &str = "could not acquire lock";

/// An open store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    entries: sled::Tree,
    history: sled::Tree,
    path: PathBuf,
}

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually a running `llmtape serve`) holds the store.
    #[error("store {path} is in use by another llmtape process (a running `llmtape serve`?); stop that process first, or pass --store with another directory")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// Commands that only read refuse to create a store.
    #[error(
        "no store at {path}; record something with `llmtape serve` first, or pass --store DIR"
    )]
    Missing {
        /// The store directory.
        path: PathBuf,
    },
    /// The store could not be opened.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read or write failed.
    #[error("store {path}: {source}")]
    Io {
        /// The store directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A value is not a valid entry.
    #[error("corrupt entry {key} in store: {source}")]
    Corrupt {
        /// The key it was stored under (hex), or the raw key bytes in hex.
        key: String,
        /// Why it does not decode.
        #[source]
        source: DecodeError,
    },
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            // Entries are small and mostly read; sled's default 1 GiB page
            // cache is far more than we need.
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|source| open_error(path, source))?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Store {
            entries: tree(ENTRIES_TREE)?,
            history: tree(HISTORY_TREE)?,
            db,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing store; refuses to create one (for `ls`, `show`).
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.join("db").exists() && !path.join("conf").exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Store::open(path)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current recording for `key`.
    pub fn get(&self, key: &RequestKey) -> Result<Option<Entry>, StoreError> {
        match self.entries.get(key.as_bytes()).map_err(|e| self.io(e))? {
            None => Ok(None),
            Some(raw) => Entry::decode(Bytes::from_owner(raw))
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: key.to_hex(),
                    source,
                }),
        }
    }

    /// Stores `entry` as the current recording for `key`. An existing one
    /// moves to the key's history, which keeps at most `history` recordings.
    pub fn put(&self, key: &RequestKey, entry: &Entry, history: usize) -> Result<(), StoreError> {
        let value = entry.encode();
        let sequence = self.db.generate_id().map_err(|e| self.io(e))?;
        let mut history_key = Vec::with_capacity(40);
        history_key.extend_from_slice(key.as_bytes());
        history_key.extend_from_slice(&sequence.to_be_bytes());

        let result: Result<(), TransactionError<()>> =
            (&self.entries, &self.history).transaction(|(entries, past)| {
                let previous = entries.insert(key.as_bytes().as_slice(), value.as_slice())?;
                if let (Some(previous), true) = (previous, history > 0) {
                    past.insert(history_key.as_slice(), previous)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(|e| match e {
            TransactionError::Storage(source) => self.io(source),
            TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
        })?;
        self.trim_history(key, history)
    }

    /// Sets the recording for `key` and its history exactly (for `import`):
    /// the key's earlier history is dropped first, then the history and
    /// the recording are written in one transaction.
    pub fn replace(
        &self,
        key: &RequestKey,
        entry: &Entry,
        history: &[Entry],
    ) -> Result<(), StoreError> {
        self.trim_history(key, 0)?;
        let mut past = Vec::with_capacity(history.len());
        for old in history {
            let sequence = self.db.generate_id().map_err(|e| self.io(e))?;
            let mut id = Vec::with_capacity(40);
            id.extend_from_slice(key.as_bytes());
            id.extend_from_slice(&sequence.to_be_bytes());
            past.push((id, old.encode()));
        }
        let value = entry.encode();
        let result: Result<(), TransactionError<()>> =
            (&self.entries, &self.history).transaction(|(entries, history)| {
                for (id, old) in &past {
                    history.insert(id.as_slice(), old.as_slice())?;
                }
                entries.insert(key.as_bytes().as_slice(), value.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(|e| match e {
            TransactionError::Storage(source) => self.io(source),
            TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
        })
    }

    /// Earlier recordings of `key`, oldest first. Corrupt ones are skipped.
    pub fn history(&self, key: &RequestKey) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.history.scan_prefix(key.as_bytes()) {
            let (_, raw) = item.map_err(|e| self.io(e))?;
            match Entry::decode(Bytes::from_owner(raw)) {
                Ok(entry) => out.push(entry),
                Err(error) => tracing::warn!(key = %key, %error, "skipping corrupt history entry"),
            }
        }
        Ok(out)
    }

    fn trim_history(&self, key: &RequestKey, keep: usize) -> Result<(), StoreError> {
        let ids: Vec<sled::IVec> = self
            .history
            .scan_prefix(key.as_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.io(e))?;
        let excess = ids.len().saturating_sub(keep);
        for id in ids.into_iter().take(excess) {
            self.history.remove(id).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Every current recording in key order. A corrupt value yields
    /// `Err(Corrupt)` for that item; iteration goes on.
    pub fn iter(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        self.entries.iter().map(move |item| {
            let (key, raw) = item.map_err(|e| self.io(e))?;
            Entry::decode(Bytes::from_owner(raw)).map_err(|source| StoreError::Corrupt {
                key: hex(&key),
                source,
            })
        })
    }

    /// Recordings whose hex key starts with `prefix` (at most `limit`).
    pub fn find_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let prefix = prefix.to_ascii_lowercase();
        // Scan from the first key the whole bytes of the prefix select.
        let whole: Vec<u8> = (0..prefix.len() / 2)
            .filter_map(|i| u8::from_str_radix(&prefix[2 * i..2 * i + 2], 16).ok())
            .collect();
        let mut out = Vec::new();
        for item in self.entries.scan_prefix(&whole) {
            let (key, raw) = item.map_err(|e| self.io(e))?;
            if !hex(&key).starts_with(&prefix) {
                continue;
            }
            let entry =
                Entry::decode(Bytes::from_owner(raw)).map_err(|source| StoreError::Corrupt {
                    key: hex(&key),
                    source,
                })?;
            out.push(entry);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Number of current recordings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes everything to disk; returns when it is durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.io(e))
    }

    /// Writes raw bytes under a key, bypassing encoding. Tests use this to
    /// plant corrupt entries.
    #[doc(hidden)]
    pub fn put_raw(&self, key: &RequestKey, value: &[u8]) -> Result<(), StoreError> {
        self.entries
            .insert(key.as_bytes(), value)
            .map(|_| ())
            .map_err(|e| self.io(e))
    }

    fn io(&self, source: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn open_error(path: &Path, source: sled::Error) -> StoreError {
    match &source {
        sled::Error::Io(e)
            if e.kind() == io::ErrorKind::Other && e.to_string().contains(SLED_LOCK_MESSAGE) =>
        {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &RequestKey, body: &'static str, fp: &str) -> Entry {
        crate::entry::test_entry(&key.to_hex(), body, fp, None, "2026-11-22T00:00:00.000Z")
    }

    #[test]
    fn put_get_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = RequestKey::from_bytes([7; 32]);
        assert!(store.get(&key).unwrap().is_none());
        for i in 0..5 {
            let body: &'static str = Box::leak(format!("{{\"n\":{i}}}").into_boxed_str());
            store.put(&key, &entry(&key, body, "fp"), 3).unwrap();
        }
        assert_eq!(&store.get(&key).unwrap().unwrap().body[..], b"{\"n\":4}");
        let past: Vec<_> = store
            .history(&key)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert_eq!(past, vec![&b"{\"n\":1}"[..], b"{\"n\":2}", b"{\"n\":3}"]);
    }

    #[test]
    fn a_corrupt_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = RequestKey::from_bytes([1; 32]);
        store.put_raw(&key, b"LLMTAPE1garbage").unwrap();
        assert!(matches!(store.get(&key), Err(StoreError::Corrupt { .. })));
        assert!(store.iter().next().unwrap().is_err());
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let second = Store::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{:?}",
            second.err()
        );
    }

    #[test]
    fn prefix_lookup_matches_odd_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = RequestKey::from_bytes([0xab; 32]);
        let b = RequestKey::from_bytes([0xac; 32]);
        store.put(&a, &entry(&a, "{}", "fp"), 1).unwrap();
        store.put(&b, &entry(&b, "{}", "fp"), 1).unwrap();
        assert_eq!(store.find_prefix("a", 10).unwrap().len(), 2);
        assert_eq!(store.find_prefix("abab", 10).unwrap().len(), 1);
        assert_eq!(store.find_prefix("aba", 10).unwrap().len(), 1);
        assert_eq!(store.find_prefix("ff", 10).unwrap().len(), 0);
    }

    #[test]
    fn read_only_commands_do_not_create_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-here");
        assert!(matches!(
            Store::open_existing(&missing),
            Err(StoreError::Missing { .. })
        ));
        assert!(!missing.exists());
    }
}
