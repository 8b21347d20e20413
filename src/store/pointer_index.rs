//! The pointer index: for each key, the [`LogPointer`] to its current
//! recording's record in the [`ResponseLog`](crate::store::response_log).
//!
//! Kept twice, on purpose: in a sled tree, written in the same transaction
//! as the entry it points for (so after a crash a pointer never names an
//! older recording's record), and in memory, so a hit finds its record
//! with no sled read. Owns both copies, the rule that keeps them in step,
//! and the pointer file that lets a start skip reading the tree; when to
//! write a pointer is the store's business.
//!
//! In memory: a sorted array of fixed-size records (key, offset, length:
//! 44 bytes a recording, 44 MB for a million) found by a 65,536-way
//! fan-out on the key's first two bytes and a binary search, plus a small
//! sharded map of the changes made since it was loaded. A hash map of the
//! same pointers took about 70 bytes a recording, and loading it from the
//! tree pulled every leaf of the tree through sled's page cache, whose
//! memory stayed.
//!
//! The pointer file (`llmtape-pointers.idx`, beside the response log) is
//! that array as it is in memory, with a header naming the response log
//! length it goes with and a CRC-32. A start that finds it whole and
//! matching reads it in one go and never touches the tree. It is derived
//! data, never trusted beyond those checks:
//! - the first change a process makes deletes it (before the sled
//!   transaction), so a crash after any change leaves no file and the next
//!   start rebuilds from the tree;
//! - every recording appends to the response log first, so a recording
//!   made by anything that does not know the file (an older llmtape)
//!   changes the log length and the file no longer matches;
//! - it is written again (to a temporary file, then renamed) when the last
//!   handle of a store that changed drops, after sled is flushed, and
//!   after a rebuild.
//!
//! What it cannot see: a removal by an older llmtape (removals do not
//! touch the log); delete the file after using one.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use crate::key::sharded::ShardedMap;
use crate::key::RequestKey;
use crate::store::response_log::LogPointer;
use crate::sync;

/// The sled tree of pointers. Its on-disk name is still "replay", the name
/// it had before the response log was named for what it holds: renaming
/// it would orphan the pointers of every existing store.
pub(super) const POINTER_TREE: &str = "replay";

/// The pointer file's name inside the store directory.
pub const POINTER_FILE: &str = "llmtape-pointers.idx";

const FILE_MAGIC: &[u8; 8] = b"LTPIDX01";
/// Magic (8), record count u64, response log length u64, CRC-32 of the
/// records u32, zero padding to 32.
const FILE_HEAD: usize = 32;
/// Key (32), offset u64 LE, length u32 LE.
const RECORD: usize = 32 + 12;
/// The fan-out: the first two bytes of a key pick a range of the array.
const FANOUT: usize = 1 << 16;

/// Shards of the map of changes; a power of two above the core counts we
/// run on, so hits rarely share a lock.
const CHANGE_SHARDS: usize = 32;

/// The sorted array of pointers as loaded: records only, no header.
#[derive(Debug, Default)]
struct Sorted {
    records: Vec<u8>,
    /// `fanout[p]` is the index of the first record whose first two bytes
    /// are at least `p`; `fanout[FANOUT]` is the record count.
    fanout: Vec<u32>,
}

impl Sorted {
    /// Takes `records` (whole records, strictly ascending by key: checked
    /// here, since the search depends on it). `None` if they are not.
    fn new(records: Vec<u8>) -> Option<Sorted> {
        if records.len() % RECORD != 0 {
            return None;
        }
        let count = records.len() / RECORD;
        u32::try_from(count).ok()?;
        let mut fanout = vec![0u32; FANOUT + 1];
        let mut previous: Option<&[u8]> = None;
        for record in records.chunks_exact(RECORD) {
            let key = &record[..32];
            if previous.is_some_and(|p| p >= key) {
                return None;
            }
            previous = Some(key);
            // Counted here, turned into starts below.
            fanout[prefix_of(key) + 1] += 1;
        }
        for p in 0..FANOUT {
            fanout[p + 1] += fanout[p];
        }
        Some(Sorted { records, fanout })
    }

    fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.records[i * RECORD..i * RECORD + 32]
    }

    fn get(&self, key: &RequestKey) -> Option<LogPointer> {
        let key = key.as_bytes();
        let prefix = prefix_of(key);
        let (mut low, mut high) = (
            self.fanout[prefix] as usize,
            self.fanout[prefix + 1] as usize,
        );
        while low < high {
            let middle = low + (high - low) / 2;
            match self.key(middle).cmp(key.as_slice()) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    let at = middle * RECORD + 32;
                    return LogPointer::from_bytes(&self.records[at..at + 12]);
                }
            }
        }
        None
    }

    /// Every (key, pointer), in key order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], LogPointer)> + '_ {
        self.records
            .chunks_exact(RECORD)
            .filter_map(|record| Some((&record[..32], LogPointer::from_bytes(&record[32..])?)))
    }
}

/// A key's fan-out slot: its first two bytes.
fn prefix_of(key: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([key[0], key[1]]))
}

/// The pointers in memory. Writers hold [`PointerIndex::writing`] across
/// their sled transaction and the update here, so memory always ends in
/// the state of the last committed transaction (two writers to one key
/// cannot leave it with the loser's pointer).
#[derive(Debug)]
pub(super) struct PointerIndex {
    /// As loaded (from the file or the tree).
    sorted: Sorted,
    /// Changes since: `Some` sets a pointer, `None` removes one.
    changes: ShardedMap<RequestKey, Option<LogPointer>>,
    /// Whether `changes` holds anything (hits skip its lock until then).
    changed: AtomicBool,
    /// Keys with a pointer.
    len: AtomicUsize,
    writing: Mutex<()>,
    /// The pointer file, and whether it still matches memory.
    file: PathBuf,
    file_current: AtomicBool,
    /// The pointer tree: flushed before the file is written.
    tree: sled::Tree,
    /// The response log, whose length the file names.
    log: PathBuf,
}

impl PointerIndex {
    /// The pointers of the store in `dir`: from its pointer file when that
    /// is whole and matches the response log at `log`, else from the tree
    /// (then written to the file). A malformed pair in the tree only costs
    /// its key the fast path (the store falls back to the entry).
    pub(super) fn open(
        dir: &Path,
        tree: &sled::Tree,
        log: &Path,
    ) -> Result<PointerIndex, sled::Error> {
        let file = dir.join(POINTER_FILE);
        let log_len = log_len(log);
        let (sorted, current) = match read_file(&file, log_len) {
            Some(sorted) => (sorted, true),
            None => (from_tree(tree)?, false),
        };
        let index = PointerIndex {
            len: AtomicUsize::new(sorted.len()),
            sorted,
            changes: ShardedMap::new(CHANGE_SHARDS),
            changed: AtomicBool::new(false),
            writing: Mutex::new(()),
            file,
            file_current: AtomicBool::new(current),
            tree: tree.clone(),
            log: log.to_path_buf(),
        };
        if !current {
            index.persist();
        }
        Ok(index)
    }

    /// `key`'s pointer, from memory.
    pub(super) fn get(&self, key: &RequestKey) -> Option<LogPointer> {
        if self.changed.load(Ordering::Acquire) {
            if let Some(change) = self.changes.get(key) {
                return change;
            }
        }
        self.sorted.get(key)
    }

    /// Sets or clears `key`'s pointer in memory, after the transaction that
    /// wrote it to the tree has committed (hold [`PointerIndex::writing`]).
    pub(super) fn set(&self, key: &RequestKey, pointer: Option<LogPointer>) {
        let had = self.get(key).is_some();
        self.changes.insert(*key, pointer);
        self.changed.store(true, Ordering::Release);
        match (had, pointer.is_some()) {
            (false, true) => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The writers' token: hold it from before the transaction until after
    /// [`PointerIndex::set`]. The first one a process takes deletes the
    /// pointer file, which no longer matches once the transaction commits.
    pub(super) fn writing(&self) -> MutexGuard<'_, ()> {
        let guard = sync::lock(&self.writing);
        if self.file_current.swap(false, Ordering::AcqRel) {
            match std::fs::remove_file(&self.file) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(file = %self.file.display(), %error, "cannot delete the pointer file; the next start may serve pointers older than this process's recordings: delete it by hand")
                }
            }
        }
        guard
    }

    /// Keys with a pointer.
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Every pointer, sorted by key: the array merged with the changes.
    fn merged(&self) -> Vec<u8> {
        let changes = std::cell::RefCell::new(Vec::new());
        self.changes.sum(|shard| {
            changes
                .borrow_mut()
                .extend(shard.map.iter().map(|(key, change)| (*key, *change)));
            0
        });
        let mut changes: Vec<(RequestKey, Option<LogPointer>)> = changes.into_inner();
        changes.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out = Vec::with_capacity((self.sorted.len() + changes.len()) * RECORD);
        let push = |out: &mut Vec<u8>, key: &[u8], pointer: LogPointer| {
            out.extend_from_slice(key);
            out.extend_from_slice(&pointer.to_bytes());
        };
        let mut changes = changes.into_iter().peekable();
        for (key, pointer) in self.sorted.iter() {
            while let Some((changed, change)) =
                changes.next_if(|(k, _)| k.as_bytes().as_slice() < key)
            {
                if let Some(change) = change {
                    push(&mut out, changed.as_bytes(), change);
                }
            }
            match changes.next_if(|(k, _)| k.as_bytes().as_slice() == key) {
                Some((_, Some(change))) => push(&mut out, key, change),
                Some((_, None)) => {}
                None => push(&mut out, key, pointer),
            }
        }
        for (changed, change) in changes {
            if let Some(change) = change {
                push(&mut out, changed.as_bytes(), change);
            }
        }
        out
    }

    /// Writes the pointer file for what memory holds now, after flushing
    /// sled (the file must never be ahead of the tree on disk). A failure
    /// is logged: without the file the next start reads the tree.
    fn persist(&self) {
        let _writing = sync::lock(&self.writing);
        if let Err(error) = self.tree.flush() {
            tracing::warn!(%error, "cannot flush the store; the pointer file is not written");
            return;
        }
        let records = self.merged();
        let written = write_file(&self.file, &records, log_len(&self.log));
        match written {
            Ok(()) => self.file_current.store(true, Ordering::Release),
            Err(error) => {
                tracing::warn!(file = %self.file.display(), %error, "cannot write the pointer file; the next start reads the pointer tree")
            }
        }
    }
}

impl Drop for PointerIndex {
    /// The last handle of the store is going: if memory has changed since
    /// the file was written, write it again.
    fn drop(&mut self) {
        if !self.file_current.load(Ordering::Acquire) {
            self.persist();
        }
    }
}

/// The response log's length now (0 when it is missing).
fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// The pointer file's records, if it is whole and matches a response log
/// of `log_len` bytes.
fn read_file(path: &Path, log_len: u64) -> Option<Sorted> {
    let mut file = File::open(path).ok()?;
    let mut head = [0u8; FILE_HEAD];
    file.read_exact(&mut head).ok()?;
    if &head[..8] != FILE_MAGIC {
        return None;
    }
    let count = u64::from_le_bytes(head[8..16].try_into().ok()?);
    let matches = u64::from_le_bytes(head[16..24].try_into().ok()?);
    let crc = u32::from_le_bytes(head[24..28].try_into().ok()?);
    if matches != log_len {
        return None;
    }
    let size = usize::try_from(count).ok()?.checked_mul(RECORD)?;
    if file.metadata().ok()?.len() != (FILE_HEAD + size) as u64 {
        return None;
    }
    let mut records = vec![0u8; size];
    file.read_exact(&mut records).ok()?;
    if crc32fast::hash(&records) != crc {
        return None;
    }
    Sorted::new(records)
}

/// Writes `records` as the pointer file matching a log of `log_len`
/// bytes: to a temporary file first, then renamed over the old one.
fn write_file(path: &Path, records: &[u8], log_len: u64) -> io::Result<()> {
    let mut head = [0u8; FILE_HEAD];
    head[..8].copy_from_slice(FILE_MAGIC);
    head[8..16].copy_from_slice(&((records.len() / RECORD) as u64).to_le_bytes());
    head[16..24].copy_from_slice(&log_len.to_le_bytes());
    head[24..28].copy_from_slice(&crc32fast::hash(records).to_le_bytes());
    let temporary = path.with_extension("idx.tmp");
    let mut out = BufWriter::new(File::create(&temporary)?);
    out.write_all(&head)?;
    out.write_all(records)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// The sorted array from the pointer tree. Malformed pairs are skipped.
fn from_tree(tree: &sled::Tree) -> Result<Sorted, sled::Error> {
    let mut records = Vec::new();
    for item in tree.iter() {
        let (key, value) = item?;
        if key.len() == 32 && LogPointer::from_bytes(&value).is_some() {
            records.extend_from_slice(&key);
            records.extend_from_slice(&value);
        }
    }
    // sled iterates in ascending key order, each key once, so this holds;
    // if it ever did not, sort rather than search a disordered array.
    Ok(Sorted::new(records).unwrap_or_else(|| {
        let mut pairs: Vec<([u8; 32], LogPointer)> = Vec::new();
        for item in tree.iter().flatten() {
            if let (Ok(key), Some(pointer)) = (
                <[u8; 32]>::try_from(&item.0[..]),
                LogPointer::from_bytes(&item.1),
            ) {
                pairs.push((key, pointer));
            }
        }
        pairs.sort_unstable_by_key(|pair| pair.0);
        pairs.dedup_by(|a, b| a.0 == b.0);
        let mut records = Vec::with_capacity(pairs.len() * RECORD);
        for (key, pointer) in pairs {
            records.extend_from_slice(&key);
            records.extend_from_slice(&pointer.to_bytes());
        }
        Sorted::new(records).unwrap_or_default()
    }))
}

/// Sets or clears `key`'s pointer in the tree, inside a transaction.
pub(super) fn set_pointer(
    pointers: &TransactionalTree,
    key: &RequestKey,
    pointer: Option<LogPointer>,
) -> Result<(), UnabortableTransactionError> {
    match pointer {
        Some(pointer) => pointers.insert(key.as_bytes().as_slice(), &pointer.to_bytes()[..])?,
        None => pointers.remove(key.as_bytes().as_slice())?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(offset: u64) -> LogPointer {
        LogPointer { offset, len: 40 }
    }

    #[test]
    fn the_mirror_loads_what_the_tree_holds_and_skips_malformed_pairs() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(POINTER_TREE).unwrap();
        let a = RequestKey::from_bytes([1; 32]);
        let b = RequestKey::from_bytes([2; 32]);
        tree.transaction(|t| {
            set_pointer(t, &a, Some(pointer(0)))?;
            set_pointer(t, &b, Some(pointer(40)))?;
            set_pointer(t, &b, None)?;
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        })
        .unwrap();
        tree.insert(&[3u8; 31][..], &pointer(80).to_bytes()[..])
            .unwrap();
        tree.insert(&[4u8; 32][..], &b"short"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let index = PointerIndex::open(dir.path(), &tree, &dir.path().join("log")).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.get(&a), Some(pointer(0)));
        assert_eq!(index.get(&b), None);
    }

    #[test]
    fn set_follows_the_last_write() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = db.open_tree(POINTER_TREE).unwrap();
        let index = PointerIndex::open(dir.path(), &tree, &dir.path().join("log")).unwrap();
        let key = RequestKey::from_bytes([9; 32]);
        let _writing = index.writing();
        index.set(&key, Some(pointer(0)));
        index.set(&key, Some(pointer(40)));
        assert_eq!(index.get(&key), Some(pointer(40)));
        index.set(&key, None);
        assert_eq!((index.get(&key), index.len()), (None, 0));
    }
}
