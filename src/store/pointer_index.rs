//! The pointer index: for each key, the [`LogPointer`] to its current
//! recording's record in the [`ResponseLog`](crate::store::response_log).
//!
//! Kept twice, on purpose: in a sled tree, written in the same transaction
//! as the entry it points for (so after a crash a pointer never names an
//! older recording's record), and in the pointer file with a map of recent
//! changes in memory, so a hit finds its record
//! with no sled read. Owns both copies, the rule that keeps them in step,
//! and the pointer file that lets a start skip reading the tree; when to
//! write a pointer is the store's business.
//!
//! The pointers live in the pointer file (`llmtape-pointers.idx`, beside
//! the response log): a header, a 65,536-way fan-out table on the key's
//! first two bytes (256 KiB, the only part held in memory) and fixed-size
//! records (key, offset, length: 44 bytes each) sorted by key. A lookup
//! reads its key's bucket (about 15 records in a store of a million) with
//! one positional read and searches it; changes made since the file was
//! read sit in a small sharded map in front of it. A hash map of every
//! pointer took about 70 bytes a recording of memory (70 MB for a
//! million), and loading it from the tree pulled every leaf of the tree
//! through sled's page cache; now a start reads 256 KiB and never touches
//! the tree, and memory does not grow with the store. The lookup only
//! happens when the hot cache does not hold the answer, and such a hit
//! reads the response log anyway.
//!
//! The file is derived data. Its header names the response log length it
//! goes with, and a start uses it only if that, its size and its fan-out
//! check out; a damaged record can only cost a fallback, since every
//! pointer is checked against the log record's own key and CRC-32 when it
//! is read. It is never trusted beyond that:
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

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use crate::key::sharded::ShardedMap;
use crate::key::RequestKey;
use crate::store::response_log::{read_exact_at, write_all_at, LogPointer};
use crate::sync;

/// The sled tree of pointers. Its on-disk name is still "replay", the name
/// it had before the response log was named for what it holds: renaming
/// it would orphan the pointers of every existing store.
pub(super) const POINTER_TREE: &str = "replay";

/// The pointer file's name inside the store directory.
pub const POINTER_FILE: &str = "llmtape-pointers.idx";

const FILE_MAGIC: &[u8; 8] = b"LTPIDX02";
/// Magic (8), record count u64 LE, response log length u64 LE, zero
/// padding to 32.
const FILE_HEAD: usize = 32;
/// Key (32), offset u64 LE, length u32 LE.
const RECORD: usize = 32 + 12;
/// The fan-out: the first two bytes of a key pick a range of the records.
const FANOUT: usize = 1 << 16;
/// The fan-out table on disk: `FANOUT + 1` starts, u32 LE.
const FANOUT_BYTES: usize = (FANOUT + 1) * 4;
/// Where the records start in the file.
const RECORDS_AT: u64 = (FILE_HEAD + FANOUT_BYTES) as u64;
/// A bucket of up to this many records is read onto the stack; a larger
/// one (a store of tens of millions) into the heap.
const STACK_RECORDS: usize = 64;

/// Shards of the map of changes; a power of two above the core counts we
/// run on, so hits rarely share a lock.
const CHANGE_SHARDS: usize = 32;

/// The pointers as last written: records in the pointer file (or, when it
/// cannot be written, in memory), found through the fan-out table.
#[derive(Debug)]
struct Sorted {
    records: Records,
    /// `fanout[p]` is the index of the first record whose first two bytes
    /// are at least `p`; `fanout[FANOUT]` is the record count.
    fanout: Vec<u32>,
}

#[derive(Debug)]
enum Records {
    /// In the pointer file, from [`RECORDS_AT`] (an unlinked file still
    /// reads: the first change deletes its name, not this handle's data).
    File(File),
    /// In memory: the file could not be written.
    Memory(Vec<u8>),
}

impl Sorted {
    fn len(&self) -> usize {
        self.fanout[FANOUT] as usize
    }

    fn get(&self, key: &RequestKey) -> Option<LogPointer> {
        let key = key.as_bytes();
        let prefix = prefix_of(key);
        let (start, end) = (
            self.fanout[prefix] as usize,
            self.fanout[prefix + 1] as usize,
        );
        if start >= end {
            return None;
        }
        let mut stack = [0u8; STACK_RECORDS * RECORD];
        let mut heap = Vec::new();
        let bucket: &[u8] = match &self.records {
            Records::Memory(records) => records.get(start * RECORD..end * RECORD)?,
            Records::File(file) => {
                let len = (end - start) * RECORD;
                let buf = if len <= stack.len() {
                    &mut stack[..len]
                } else {
                    heap.resize(len, 0);
                    &mut heap[..]
                };
                // A failed read is a miss of the fast path: the store
                // falls back to the entry.
                read_exact_at(file, buf, RECORDS_AT + (start * RECORD) as u64).ok()?;
                buf
            }
        };
        let (mut low, mut high) = (0, end - start);
        while low < high {
            let middle = low + (high - low) / 2;
            let record = &bucket[middle * RECORD..(middle + 1) * RECORD];
            match record[..32].cmp(key.as_slice()) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return LogPointer::from_bytes(&record[32..]),
            }
        }
        None
    }

    /// Every record in key order (streamed from the file).
    fn for_each(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match &self.records {
            Records::Memory(records) => records.chunks_exact(RECORD).try_for_each(f),
            Records::File(file) => {
                let mut record = [0u8; RECORD];
                let mut at = RECORDS_AT;
                let mut chunk = vec![0u8; 4096 * RECORD];
                let mut left = self.len();
                while left > 0 {
                    let n = left.min(4096);
                    read_exact_at(file, &mut chunk[..n * RECORD], at)?;
                    for one in chunk[..n * RECORD].chunks_exact(RECORD) {
                        record.copy_from_slice(one);
                        f(&record)?;
                    }
                    at += (n * RECORD) as u64;
                    left -= n;
                }
                Ok(())
            }
        }
    }
}

/// Writes a pointer file: records pushed in ascending key order, then
/// [`PointerFile::finish`] writes the header and fan-out and renames the
/// temporary file over the real one.
struct PointerFile {
    out: BufWriter<File>,
    temporary: PathBuf,
    counts: Vec<u32>,
    count: u64,
    last: Option<[u8; 32]>,
}

impl PointerFile {
    fn create(path: &Path) -> io::Result<PointerFile> {
        let temporary = path.with_extension("idx.tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; FILE_HEAD + FANOUT_BYTES])?;
        Ok(PointerFile {
            out,
            temporary,
            counts: vec![0; FANOUT + 1],
            count: 0,
            last: None,
        })
    }

    /// Adds a record; keys must ascend.
    fn push(&mut self, key: &[u8], pointer: &[u8]) -> io::Result<()> {
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a key is 32 bytes"))?;
        if self.last.is_some_and(|last| last >= key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "pointer keys out of order",
            ));
        }
        self.last = Some(key);
        self.out.write_all(&key)?;
        self.out.write_all(pointer)?;
        self.counts[prefix_of(&key) + 1] += 1;
        self.count += 1;
        Ok(())
    }

    /// Completes the file as matching a log of `log_len` bytes and puts
    /// it in place; returns it open for lookups.
    fn finish(self, path: &Path, log_len: u64) -> io::Result<Sorted> {
        let mut fanout = self.counts;
        for p in 0..FANOUT {
            fanout[p + 1] += fanout[p];
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        let mut head = Vec::with_capacity(FILE_HEAD + FANOUT_BYTES);
        head.extend_from_slice(FILE_MAGIC);
        head.extend_from_slice(&self.count.to_le_bytes());
        head.extend_from_slice(&log_len.to_le_bytes());
        head.resize(FILE_HEAD, 0);
        for start in &fanout {
            head.extend_from_slice(&start.to_le_bytes());
        }
        write_all_at(&file, &head, 0)?;
        file.sync_all()?;
        std::fs::rename(&self.temporary, path)?;
        Ok(Sorted {
            records: Records::File(file),
            fanout,
        })
    }
}

/// A key's fan-out slot: its first two bytes.
fn prefix_of(key: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([key[0], key[1]]))
}

/// The pointer index. Writers hold [`PointerIndex::writing`] across
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
            None => from_tree(tree, &file, log_len)?,
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

    /// Writes every pointer (the file's merged with the changes) to a new
    /// pointer file matching a log of `log_len` bytes.
    fn write_merged(&self, log_len: u64) -> io::Result<()> {
        let changes = std::cell::RefCell::new(Vec::new());
        self.changes.sum(|shard| {
            changes
                .borrow_mut()
                .extend(shard.map.iter().map(|(key, change)| (*key, *change)));
            0
        });
        let mut changes: Vec<(RequestKey, Option<LogPointer>)> = changes.into_inner();
        changes.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut changes = changes.into_iter().peekable();
        let mut out = PointerFile::create(&self.file)?;
        self.sorted.for_each(|record| {
            let key = &record[..32];
            while let Some((changed, change)) =
                changes.next_if(|(k, _)| k.as_bytes().as_slice() < key)
            {
                if let Some(change) = change {
                    out.push(changed.as_bytes(), &change.to_bytes())?;
                }
            }
            match changes.next_if(|(k, _)| k.as_bytes().as_slice() == key) {
                Some((_, Some(change))) => out.push(key, &change.to_bytes()),
                Some((_, None)) => Ok(()),
                None => out.push(key, &record[32..]),
            }
        })?;
        for (changed, change) in changes {
            if let Some(change) = change {
                out.push(changed.as_bytes(), &change.to_bytes())?;
            }
        }
        out.finish(&self.file, log_len).map(|_| ())
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
        match self.write_merged(log_len(&self.log)) {
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

/// The pointer file, if its header and fan-out check out and it matches
/// a response log of `log_len` bytes.
fn read_file(path: &Path, log_len: u64) -> Option<Sorted> {
    let file = File::open(path).ok()?;
    let mut head = vec![0u8; FILE_HEAD + FANOUT_BYTES];
    read_exact_at(&file, &mut head, 0).ok()?;
    if &head[..8] != FILE_MAGIC {
        return None;
    }
    let count = u64::from_le_bytes(head[8..16].try_into().ok()?);
    let matches = u64::from_le_bytes(head[16..24].try_into().ok()?);
    if matches != log_len {
        return None;
    }
    let size = count.checked_mul(RECORD as u64)?.checked_add(RECORDS_AT)?;
    if file.metadata().ok()?.len() != size {
        return None;
    }
    let fanout: Vec<u32> = head[FILE_HEAD..]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let ordered = fanout[0] == 0 && fanout.windows(2).all(|w| w[0] <= w[1]);
    if !ordered || u64::from(fanout[FANOUT]) != count {
        return None;
    }
    Some(Sorted {
        records: Records::File(file),
        fanout,
    })
}

/// The pointers of the tree, written to the pointer file at `path`
/// (matching a log of `log_len` bytes) as they are read, so no copy of
/// them stays in memory; `true` once the file is in place. Malformed pairs
/// are skipped. If the file cannot be written they are kept in memory.
fn from_tree(tree: &sled::Tree, path: &Path, log_len: u64) -> Result<(Sorted, bool), sled::Error> {
    let pairs = || {
        tree.iter().filter_map(|item| match item {
            Ok((key, value)) if key.len() == 32 && LogPointer::from_bytes(&value).is_some() => {
                Some(Ok((key, value)))
            }
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
    };
    let written = (|| -> Result<io::Result<Sorted>, sled::Error> {
        let mut out = match PointerFile::create(path) {
            Ok(out) => out,
            Err(error) => return Ok(Err(error)),
        };
        for pair in pairs() {
            let (key, value) = pair?;
            // sled iterates in ascending key order, each key once.
            if let Err(error) = out.push(&key, &value) {
                return Ok(Err(error));
            }
        }
        Ok(out.finish(path, log_len))
    })()?;
    match written {
        Ok(sorted) => Ok((sorted, true)),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot write the pointer file; keeping the pointers in memory");
            let mut pairs: Vec<(sled::IVec, sled::IVec)> = pairs().collect::<Result<_, _>>()?;
            pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|a, b| a.0 == b.0);
            let mut records = Vec::with_capacity(pairs.len() * RECORD);
            let mut fanout = vec![0u32; FANOUT + 1];
            for (key, value) in &pairs {
                records.extend_from_slice(key);
                records.extend_from_slice(value);
                fanout[prefix_of(key) + 1] += 1;
            }
            for p in 0..FANOUT {
                fanout[p + 1] += fanout[p];
            }
            Ok((
                Sorted {
                    records: Records::Memory(records),
                    fanout,
                },
                false,
            ))
        }
    }
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
