//! The store: recordings on disk, in sled. The only module that knows sled.
//!
//! Two trees. `entries` maps a 32-byte key to the current recording;
//! `history` keeps earlier recordings of a key under `key ++ sequence`
//! (big-endian, so a prefix scan returns them oldest first). Replacing a
//! recording moves the old one to history and writes the new one in one
//! sled transaction, so a crash leaves either the old state or the new one.
//!
//! Values are [`Recording`] encodings with a checksum; one that fails to decode
//! is reported as [`StoreError::Corrupt`] and callers treat it as a miss.
//!
//! A third tree, the pointer tree, maps a key to a [`LogPointer`] into the
//! [`ResponseLog`] (the replayable parts of its current entry, in a file
//! beside sled), set in the same transaction as the entry. The tree is
//! mirrored in a sorted pointer file beside the log (rebuilt from the
//! tree when missing or stale; see `store::pointer_index`), so
//! [`SledStore::replayable`] serves a hit with one index lookup and one
//! positional read, without touching sled. A key without a usable pointer
//! falls back to the entry and gets a pointer then, so stores written
//! before the response log existed, and a lost or damaged log, heal as
//! they are read.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::key::RequestKey;
use crate::record::recording::{DecodeError, Recording};
use crate::store::pointer_index::{set_pointer, PointerIndex, POINTER_TREE};
use crate::store::response_log::{LogPointer, Replayable, ResponseLog};
use crate::store::sled_lock::{open_db, OpenFailure, OpenMark};

const ENTRIES_TREE: &str = "entries";
const HISTORY_TREE: &str = "history";

/// sled's page cache. Hits do not read entries from sled (they come from
/// the response log), so this mostly holds the small pointer tree and the leaves
/// `ls`, `show` and recording touch. sled's real memory use is a multiple of
/// this figure, so it is kept small.
const SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// An open store.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    entries: sled::Tree,
    history: sled::Tree,
    /// Key -> [`LogPointer`], on disk.
    pointer_tree: sled::Tree,
    /// The replayable parts of every recording, appended.
    response_log: Arc<ResponseLog>,
    /// `pointer_tree` mirrored in the pointer file.
    pointer_index: Arc<PointerIndex>,
    path: PathBuf,
    _open: Arc<OpenMark>,
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
    /// The response log file cannot be opened. (The message keeps the
    /// name users have seen for it.)
    #[error("cannot open the replay tape in store {path}: {source}")]
    ResponseLog {
        /// The store directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
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

impl SledStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// A store held by another process is [`StoreError::Locked`] at once. A
    /// store this process has just closed is waited for (at most
    /// 3 s) while sled's threads release it (see `store::sled_lock`).
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        // sled's default 1 GiB page cache is far more than we need.
        let (db, mark) = open_db(path, SLED_CACHE_BYTES).map_err(|failure| match failure {
            OpenFailure::Locked => StoreError::Locked {
                path: path.to_path_buf(),
            },
            OpenFailure::Sled(source) => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })
        };
        // sled has created the directory and holds its lock by now.
        let response_log = ResponseLog::open(path).map_err(|source| StoreError::ResponseLog {
            path: path.to_path_buf(),
            source,
        })?;
        let pointer_tree = tree(POINTER_TREE)?;
        let pointer_index =
            PointerIndex::open(path, &pointer_tree, response_log.path()).map_err(|source| {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let store = SledStore {
            entries: tree(ENTRIES_TREE)?,
            history: tree(HISTORY_TREE)?,
            pointer_tree,
            response_log: Arc::new(response_log),
            pointer_index: Arc::new(pointer_index),
            db,
            path: path.to_path_buf(),
            _open: mark,
        };
        store.build_response_log_if_missing();
        Ok(store)
    }

    /// A store written before the response log existed has entries and no
    /// pointers: give every entry its log record now, once, so that hits
    /// are fast from the start and [`SledStore::indexed_len`] counts them all.
    fn build_response_log_if_missing(&self) {
        let legacy = self.pointer_tree.is_empty() && !self.entries.is_empty();
        if !legacy {
            return;
        }
        tracing::info!(store = %self.path.display(), "building the replay tape for a store written before it existed");
        let mut built = 0usize;
        for item in self.entries.iter() {
            let Ok((key, raw)) = item else { continue };
            let (Ok(key), Ok(entry)) = (
                <[u8; 32]>::try_from(&key[..]).map(RequestKey::from_bytes),
                Recording::decode(Bytes::from_owner(raw.clone())),
            ) else {
                // Corrupt entries stay misses, as before.
                continue;
            };
            self.heal(&key, &entry, &raw);
            built += 1;
        }
        tracing::info!(recordings = built, "replay tape built");
    }

    /// Recordings in the pointer index: every recording, except any whose
    /// response log record could not be written (each such failure is
    /// logged) or whose entry is corrupt. Unlike [`SledStore::len`] this costs no scan,
    /// so `/_llmtape/health` and `/_llmtape/metrics` use it.
    pub fn indexed_len(&self) -> usize {
        self.pointer_index.len()
    }

    /// Whether the in-memory pointer index holds `key`: every recording
    /// committed with its response log record does.
    pub fn indexed(&self, key: &RequestKey) -> bool {
        self.pointer_index.get(key).is_some()
    }

    /// Opens an existing store; refuses to create one (for `ls`, `show`).
    pub fn open_existing(path: &Path) -> Result<SledStore, StoreError> {
        if !path.join("db").exists() && !path.join("conf").exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        SledStore::open(path)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current recording for `key`.
    pub fn get(&self, key: &RequestKey) -> Result<Option<Recording>, StoreError> {
        match self.entries.get(key.as_bytes()).map_err(|e| self.io(e))? {
            None => Ok(None),
            Some(raw) => Recording::decode(Bytes::from_owner(raw))
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: key.to_hex(),
                    source,
                }),
        }
    }

    /// Stores `entry` as the current recording for `key`. An existing one
    /// moves to the key's history, which keeps at most `history` recordings.
    pub fn put(
        &self,
        key: &RequestKey,
        entry: &Recording,
        history: usize,
    ) -> Result<(), StoreError> {
        let value = entry.encode();
        let pointer = self.append_to_log(key, entry);
        let sequence = self.db.generate_id().map_err(|e| self.io(e))?;
        let mut history_key = Vec::with_capacity(40);
        history_key.extend_from_slice(key.as_bytes());
        history_key.extend_from_slice(&sequence.to_be_bytes());

        let writing = self.pointer_index.writing();
        let result: Result<(), TransactionError<()>> =
            (&self.entries, &self.history, &self.pointer_tree).transaction(
                |(entries, past, pointers)| {
                    let previous = entries.insert(key.as_bytes().as_slice(), value.as_slice())?;
                    if let (Some(previous), true) = (previous, history > 0) {
                        past.insert(history_key.as_slice(), previous)?;
                    }
                    set_pointer(pointers, key, pointer)?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        self.committed(result)?;
        self.pointer_index.set(key, pointer);
        drop(writing);
        self.trim_history(key, history)
    }

    /// Sets the recording for `key` and its history exactly (for `import`):
    /// the key's earlier history is dropped first, then the history and
    /// the recording are written in one transaction.
    pub fn replace(
        &self,
        key: &RequestKey,
        entry: &Recording,
        history: &[Recording],
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
        let pointer = self.append_to_log(key, entry);
        let _writing = self.pointer_index.writing();
        let result: Result<(), TransactionError<()>> =
            (&self.entries, &self.history, &self.pointer_tree).transaction(
                |(entries, history, pointers)| {
                    for (id, old) in &past {
                        history.insert(id.as_slice(), old.as_slice())?;
                    }
                    entries.insert(key.as_bytes().as_slice(), value.as_slice())?;
                    set_pointer(pointers, key, pointer)?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        self.committed(result)?;
        self.pointer_index.set(key, pointer);
        Ok(())
    }

    /// Earlier recordings of `key`, oldest first. Corrupt ones are skipped.
    pub fn history(&self, key: &RequestKey) -> Result<Vec<Recording>, StoreError> {
        let mut out = Vec::new();
        for item in self.history.scan_prefix(key.as_bytes()) {
            let (_, raw) = item.map_err(|e| self.io(e))?;
            match Recording::decode(Bytes::from_owner(raw)) {
                Ok(entry) => out.push(entry),
                Err(error) => tracing::warn!(key = %key, %error, "skipping corrupt history entry"),
            }
        }
        Ok(out)
    }

    /// Deletes the recording for `key` and its history; returns whether
    /// there was one. The entry and its pointer go in one transaction, so
    /// a crash cannot leave a pointer to a deleted entry.
    pub fn remove(&self, key: &RequestKey) -> Result<bool, StoreError> {
        let writing = self.pointer_index.writing();
        let result: Result<bool, TransactionError<()>> = (&self.entries, &self.pointer_tree)
            .transaction(|(entries, pointer_tree)| {
                let existed = entries.remove(key.as_bytes().as_slice())?.is_some();
                set_pointer(pointer_tree, key, None)?;
                Ok::<bool, ConflictableTransactionError<()>>(existed)
            });
        let existed = self.committed(result)?;
        self.pointer_index.set(key, None);
        drop(writing);
        self.trim_history(key, 0)?;
        Ok(existed)
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
    pub fn iter(&self) -> impl Iterator<Item = Result<Recording, StoreError>> + '_ {
        self.entries.iter().map(move |item| {
            let (key, raw) = item.map_err(|e| self.io(e))?;
            Recording::decode(Bytes::from_owner(raw)).map_err(|source| StoreError::Corrupt {
                key: hex(&key),
                source,
            })
        })
    }

    /// Recordings whose hex key starts with `prefix` (at most `limit`).
    pub fn find_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<Recording>, StoreError> {
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
            let entry = Recording::decode(Bytes::from_owner(raw)).map_err(|source| {
                StoreError::Corrupt {
                    key: hex(&key),
                    source,
                }
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
        let _writing = self.pointer_index.writing();
        self.pointer_tree
            .remove(key.as_bytes())
            .map_err(|e| self.io(e))?;
        self.pointer_index.set(key, None);
        self.entries
            .insert(key.as_bytes(), value)
            .map(|_| ())
            .map_err(|e| self.io(e))
    }

    /// The current recording for `key` as replay needs it: from the
    /// response log (one in-memory lookup and one positional read, no
    /// parsing), or, when the key has no usable log record, from the
    /// entry, which then gets one.
    pub fn replayable(&self, key: &RequestKey) -> Result<Option<Replayable>, StoreError> {
        if let Some(pointer) = self.pointer_index.get(key) {
            match self.response_log.read(key, pointer) {
                Ok(replayable) => return Ok(Some(replayable)),
                Err(error) => {
                    tracing::warn!(key = %key, %error, "replay tape record unusable; reading the entry instead")
                }
            }
        }
        let Some(raw) = self.entries.get(key.as_bytes()).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        let entry = Recording::decode(Bytes::from_owner(raw.clone())).map_err(|source| {
            StoreError::Corrupt {
                key: key.to_hex(),
                source,
            }
        })?;
        self.heal(key, &entry, &raw);
        Ok(Some(Replayable::from_entry(&entry).compact()))
    }

    /// Gives `key` a response log record for `entry`, read as `raw`, unless the
    /// entry changed meanwhile (a concurrent re-recording sets its own).
    fn heal(&self, key: &RequestKey, entry: &Recording, raw: &[u8]) {
        let Some(pointer) = self.append_to_log(key, entry) else {
            return;
        };
        let id = Recording::stored_id(raw);
        let _writing = self.pointer_index.writing();
        let result: Result<bool, TransactionError<()>> = (&self.entries, &self.pointer_tree)
            .transaction(|(entries, pointers)| {
                let current = entries.get(key.as_bytes())?;
                let unchanged = current.is_some_and(|c| c.ends_with(id));
                if unchanged {
                    set_pointer(pointers, key, Some(pointer))?;
                }
                Ok::<bool, ConflictableTransactionError<()>>(unchanged)
            });
        match result {
            Ok(true) => self.pointer_index.set(key, Some(pointer)),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(key = %key, ?error, "could not record the replay tape pointer")
            }
        }
    }

    /// Appends `entry` to the response log. A failure is logged, not
    /// returned: the log is a shortcut, and the entry is still stored
    /// without it.
    fn append_to_log(&self, key: &RequestKey, entry: &Recording) -> Option<LogPointer> {
        match self.response_log.append(key, entry) {
            Ok(pointer) => Some(pointer),
            Err(error) => {
                tracing::warn!(key = %key, %error, tape = %self.response_log.path().display(), "cannot append to the replay tape; hits on this key read the entry");
                None
            }
        }
    }

    /// The outcome of one of this store's transactions, which never abort.
    fn committed<T>(&self, result: Result<T, TransactionError<()>>) -> Result<T, StoreError> {
        result.map_err(|e| match e {
            TransactionError::Storage(source) => self.io(source),
            TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
        })
    }

    fn io(&self, source: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &RequestKey, body: &'static str, fp: &str) -> Recording {
        crate::record::recording::test_entry(
            &key.to_hex(),
            body,
            fp,
            None,
            "2026-11-22T00:00:00.000Z",
        )
    }

    #[test]
    fn put_get_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
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
    fn hits_come_from_the_tape_and_follow_re_recording() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let key = RequestKey::from_bytes([5; 32]);
        assert!(store.replayable(&key).unwrap().is_none());
        let first = entry(&key, "{\"n\":1}", "fp_a");
        store.put(&key, &first, 3).unwrap();
        assert!(store.pointer_index.get(&key).is_some());
        assert_eq!(
            store.replayable(&key).unwrap().unwrap(),
            Replayable::from_entry(&first)
        );
        let second = entry(&key, "{\"n\":2}", "fp_b");
        store.put(&key, &second, 3).unwrap();
        assert_eq!(
            &store.replayable(&key).unwrap().unwrap().body[..],
            b"{\"n\":2}"
        );

        // Reopened, the pointers are loaded from the pointer tree.
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.pointer_index.get(&key).is_some());
        assert_eq!(
            &store.replayable(&key).unwrap().unwrap().body[..],
            b"{\"n\":2}"
        );
    }

    #[test]
    fn a_damaged_or_missing_tape_falls_back_to_the_entry_and_heals() {
        let dir = tempfile::tempdir().unwrap();
        let key = RequestKey::from_bytes([6; 32]);
        let recorded = entry(&key, "{\"answer\":42}", "fp");
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put(&key, &recorded, 3).unwrap();
        }
        // Every byte of the response log overwritten: no record checks out.
        let log = dir
            .path()
            .join(crate::store::response_log::RESPONSE_LOG_FILE);
        let len = std::fs::metadata(&log).unwrap().len() as usize;
        std::fs::write(&log, vec![0xee; len]).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let before = store.pointer_index.get(&key).unwrap();
        assert_eq!(
            store.replayable(&key).unwrap().unwrap(),
            Replayable::from_entry(&recorded)
        );
        // Healed: a new record, appended after the damaged one, now serves.
        let after = store.pointer_index.get(&key).unwrap();
        assert!(after.offset > before.offset);
        assert!(store.response_log.read(&key, after).is_ok());
        drop(store);

        // The response log deleted outright: the same.
        std::fs::remove_file(&log).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.replayable(&key).unwrap().unwrap(),
            Replayable::from_entry(&recorded)
        );
    }

    #[test]
    fn an_entry_without_a_pointer_replays_and_gets_one() {
        // As in a store written before the response log existed.
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let key = RequestKey::from_bytes([8; 32]);
        let recorded = entry(&key, "{\"old\":true}", "fp");
        store.put_raw(&key, &recorded.encode()).unwrap();
        assert!(store.pointer_index.get(&key).is_none());
        assert_eq!(
            store.replayable(&key).unwrap().unwrap(),
            Replayable::from_entry(&recorded)
        );
        assert!(store.pointer_index.get(&key).is_some());
        // A corrupt entry planted over it loses the pointer and is an error.
        store.put_raw(&key, b"LLMTAPE1garbage").unwrap();
        assert!(matches!(
            store.replayable(&key),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_store_from_before_the_tape_gets_one_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<RequestKey> = (0..5u8).map(|i| RequestKey::from_bytes([i; 32])).collect();
        {
            let store = SledStore::open(dir.path()).unwrap();
            for key in &keys {
                store
                    .put_raw(key, &entry(key, "{\"n\":1}", "fp").encode())
                    .unwrap();
            }
            let corrupt = RequestKey::from_bytes([99; 32]);
            store.put_raw(&corrupt, b"LLMTAPE1garbage").unwrap();
            assert_eq!(store.indexed_len(), 0);
            assert_eq!(store.len(), 6);
        }
        std::fs::remove_file(
            dir.path()
                .join(crate::store::response_log::RESPONSE_LOG_FILE),
        )
        .unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.indexed_len(), 5, "every whole entry is indexed");
        for key in &keys {
            let pointer = store.pointer_index.get(key).expect("a pointer");
            assert!(store.response_log.read(key, pointer).is_ok());
        }
    }

    fn pointer_file(dir: &Path) -> PathBuf {
        dir.join(crate::store::pointer_index::POINTER_FILE)
    }

    #[test]
    fn the_pointer_file_is_written_at_close_read_at_open_and_deleted_by_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<RequestKey> = (0..50u8).map(|i| RequestKey::from_bytes([i; 32])).collect();
        {
            let store = SledStore::open(dir.path()).unwrap();
            // Written at open (an empty store rebuilt from its empty tree).
            assert!(pointer_file(dir.path()).exists());
            for key in &keys {
                store.put(key, &entry(key, "{\"n\":1}", "fp"), 3).unwrap();
            }
            assert!(
                !pointer_file(dir.path()).exists(),
                "the first change deletes the file"
            );
            store.remove(&keys[3]).unwrap();
            store
                .put(&keys[4], &entry(&keys[4], "{\"n\":2}", "fp"), 3)
                .unwrap();
        }
        assert!(pointer_file(dir.path()).exists(), "written at close");
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.indexed_len(), 49);
        assert!(store.pointer_index.get(&keys[3]).is_none());
        assert_eq!(
            &store.replayable(&keys[4]).unwrap().unwrap().body[..],
            b"{\"n\":2}"
        );
        for key in keys.iter().filter(|k| **k != keys[3]) {
            let pointer = store.pointer_index.get(key).expect("a pointer");
            assert!(store.response_log.read(key, pointer).is_ok());
        }
    }

    #[test]
    fn a_pointer_file_that_does_not_match_is_rebuilt_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let key = RequestKey::from_bytes([7; 32]);
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put(&key, &entry(&key, "{\"n\":1}", "fp"), 3).unwrap();
        }
        // What an llmtape that does not know the file does: re-record the
        // key (a new log record and pointer) and leave the file alone.
        let saved = std::fs::read(pointer_file(dir.path())).unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put(&key, &entry(&key, "{\"n\":2}", "fp"), 3).unwrap();
        }
        std::fs::write(pointer_file(dir.path()), &saved).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            &store.replayable(&key).unwrap().unwrap().body[..],
            b"{\"n\":2}",
            "the log grew since the file was written: the tree decides"
        );
        drop(store);

        // A damaged file: the same.
        let mut damaged = std::fs::read(pointer_file(dir.path())).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(pointer_file(dir.path()), &damaged).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            &store.replayable(&key).unwrap().unwrap().body[..],
            b"{\"n\":2}"
        );
        assert_eq!(store.indexed_len(), 1);
    }

    #[test]
    fn a_corrupt_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let key = RequestKey::from_bytes([1; 32]);
        store.put_raw(&key, b"LLMTAPE1garbage").unwrap();
        assert!(matches!(store.get(&key), Err(StoreError::Corrupt { .. })));
        assert!(store.iter().next().unwrap().is_err());
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let second = SledStore::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{:?}",
            second.err()
        );
    }

    #[test]
    fn a_store_closed_in_this_process_reopens_at_once() {
        // sled releases its lock from background threads after the last
        // handle drops; open must wait for that instead of failing.
        let dir = tempfile::tempdir().unwrap();
        let key = RequestKey::from_bytes([7; 32]);
        const ROUNDS: usize = 100;
        for round in 0..ROUNDS {
            let store = SledStore::open(dir.path())
                .unwrap_or_else(|e| panic!("reopen {round} failed: {e}"));
            store
                .put(&key, &entry(&key, "{}", &format!("fp_{round}")), 1)
                .unwrap();
            // No flush: dropping with writes in flight is when sled's
            // threads hold the lock longest.
        }
        let store = SledStore::open(dir.path()).unwrap();
        let fp = store.get(&key).unwrap().unwrap().meta.system_fingerprint;
        assert_eq!(fp, Some(format!("fp_{}", ROUNDS - 1)));
    }

    #[test]
    fn prefix_lookup_matches_odd_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
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
            SledStore::open_existing(&missing),
            Err(StoreError::Missing { .. })
        ));
        assert!(!missing.exists());
    }
}
