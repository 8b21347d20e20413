//! The pointer index: for each key, the [`LogPointer`] to its current
//! recording's record in the [`ResponseLog`](crate::store::response_log).
//!
//! Kept twice, on purpose: in a sled tree, written in the same transaction
//! as the entry it points for (so after a crash a pointer never names an
//! older recording's record), and mirrored in memory (about 50 bytes a
//! recording, loaded at open), so a hit finds its record with one map
//! lookup and no sled read. Owns both copies and the rule that keeps them
//! in step; when to write a pointer is the store's business.

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

/// Shards of the in-memory index; a power of two above the core counts we
/// run on, so hits rarely share a lock.
const POINTER_SHARDS: usize = 32;

/// The pointer tree mirrored in memory. Writers hold [`PointerIndex::writing`]
/// across their sled transaction and the mirror update, so the mirror
/// always ends in the state of the last committed transaction (two writers
/// to one key cannot leave it with the loser's pointer).
#[derive(Debug)]
pub(super) struct PointerIndex {
    pointers: ShardedMap<RequestKey, LogPointer>,
    writing: Mutex<()>,
}

impl PointerIndex {
    /// Loads the mirror from the pointer tree. A malformed pair only costs
    /// its key the fast path (the store falls back to the entry).
    pub(super) fn load(tree: &sled::Tree) -> Result<PointerIndex, sled::Error> {
        let mut pointers = ShardedMap::new(POINTER_SHARDS);
        for item in tree.iter() {
            let (key, value) = item?;
            if let (Ok(key), Some(pointer)) = (
                <[u8; 32]>::try_from(&key[..]),
                LogPointer::from_bytes(&value),
            ) {
                pointers.extend([(RequestKey::from_bytes(key), pointer)]);
            }
        }
        Ok(PointerIndex {
            pointers,
            writing: Mutex::new(()),
        })
    }

    /// `key`'s pointer, from memory.
    pub(super) fn get(&self, key: &RequestKey) -> Option<LogPointer> {
        self.pointers.get(key)
    }

    /// Sets or clears `key`'s pointer in memory, after the transaction that
    /// wrote it to the tree has committed.
    pub(super) fn set(&self, key: &RequestKey, pointer: Option<LogPointer>) {
        match pointer {
            Some(pointer) => self.pointers.insert(*key, pointer),
            None => self.pointers.remove(key),
        };
    }

    /// The writers' token: hold it from before the transaction until after
    /// [`PointerIndex::set`].
    pub(super) fn writing(&self) -> MutexGuard<'_, ()> {
        sync::lock(&self.writing)
    }

    /// Keys with a pointer.
    pub(super) fn len(&self) -> usize {
        self.pointers.len()
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
        let index = PointerIndex::load(&tree).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.get(&a), Some(pointer(0)));
        assert_eq!(index.get(&b), None);
    }

    #[test]
    fn set_follows_the_last_write() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let index = PointerIndex::load(&db.open_tree(POINTER_TREE).unwrap()).unwrap();
        let key = RequestKey::from_bytes([9; 32]);
        let _writing = index.writing();
        index.set(&key, Some(pointer(0)));
        index.set(&key, Some(pointer(40)));
        assert_eq!(index.get(&key), Some(pointer(40)));
        index.set(&key, None);
        assert_eq!((index.get(&key), index.len()), (None, 0));
    }
}
