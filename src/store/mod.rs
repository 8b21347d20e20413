//! Where recordings live: the sled store, or a fixtures folder.
//!
//! The proxy and the read-only commands talk to this one type, so serving
//! from fixtures (`--fixtures DIR`) and from the store behave the same.
//! The difference that matters is written down in [`Recordings::put`]: a
//! store keeps every re-recording (old ones go to history), while a
//! fixtures folder never rewrites a committed file unless asked to.

pub mod fixtures;
mod pointer_index;
pub mod response_log;
mod sled_lock;
mod sled_store;

pub use sled_store::{SledStore, StoreError};

use std::path::Path;

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::fixtures::{FixtureDir, FixtureError};
use crate::store::response_log::Replayable;

/// A source (and sink) of recordings.
pub enum Recordings {
    /// The embedded sled store.
    Store(SledStore),
    /// A folder of fixture files, loaded into memory.
    Fixtures(FixtureDir),
}

/// Why a recording could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingsError {
    /// From the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From a fixtures folder.
    #[error(transparent)]
    Fixtures(#[from] FixtureError),
}

impl Recordings {
    /// The recording for `key`; a corrupt store entry is an error the caller
    /// treats as a miss.
    pub fn get(&self, key: &RequestKey) -> Result<Option<Recording>, StoreError> {
        match self {
            Recordings::Store(store) => store.get(key),
            Recordings::Fixtures(dir) => Ok(dir.get(key)),
        }
    }

    /// The recording for `key` as replay needs it (from the store's replay
    /// tape, without decoding the entry); errors as for [`Recordings::get`].
    pub fn replayable(&self, key: &RequestKey) -> Result<Option<Replayable>, StoreError> {
        match self {
            Recordings::Store(store) => store.replayable(key),
            Recordings::Fixtures(dir) => Ok(dir.get(key).as_ref().map(Replayable::from_entry)),
        }
    }

    /// Stores a recording. In the store an existing one moves to history.
    /// In a fixtures folder an existing file is rewritten (with the old
    /// recording in its history) only when `replace` is set, i.e. in
    /// `record` mode; returns whether anything was written.
    pub fn put(
        &self,
        key: &RequestKey,
        entry: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, RecordingsError> {
        match self {
            Recordings::Store(store) => store
                .put(key, entry, history)
                .map(|()| true)
                .map_err(Into::into),
            Recordings::Fixtures(dir) => dir.put(key, entry, history, replace).map_err(Into::into),
        }
    }

    /// Every recording (corrupt store entries skipped with a warning), at
    /// most `limit`.
    pub fn sample(&self, limit: usize) -> Vec<Recording> {
        match self {
            Recordings::Store(store) => store
                .iter()
                .filter_map(|item| match item {
                    Ok(entry) => Some(entry),
                    Err(error) => {
                        tracing::warn!(%error, "skipping unreadable recording");
                        None
                    }
                })
                .take(limit)
                .collect(),
            Recordings::Fixtures(dir) => {
                dir.all().into_iter().take(limit).map(|(e, _)| e).collect()
            }
        }
    }

    /// Number of recordings.
    pub fn len(&self) -> usize {
        match self {
            Recordings::Store(store) => store.len(),
            Recordings::Fixtures(dir) => dir.len(),
        }
    }

    /// Number of recordings without scanning a store (see
    /// [`Store::indexed_len`]); for the admin endpoints.
    pub fn indexed_len(&self) -> usize {
        match self {
            Recordings::Store(store) => store.indexed_len(),
            Recordings::Fixtures(dir) => dir.len(),
        }
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes writes durable (fixture files are written synchronously).
    pub fn flush(&self) -> Result<(), StoreError> {
        match self {
            Recordings::Store(store) => store.flush(),
            Recordings::Fixtures(_) => Ok(()),
        }
    }

    /// The store directory or fixtures folder.
    pub fn location(&self) -> &Path {
        match self {
            Recordings::Store(store) => store.path(),
            Recordings::Fixtures(dir) => dir.root(),
        }
    }
}
