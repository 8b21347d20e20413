//! Where recordings live, behind one seam: a [`Tier`].
//!
//! The proxy and the commands speak to a `dyn Tier` and do not know which
//! one they have: the embedded sled store ([`SledStore`], the default) or a
//! fixtures folder ([`FixtureDir`], `--fixtures DIR`). With `[remote]`
//! configured, `serve` wraps its tier in [`Tiered`]: the same seam, with
//! a shared Redis tier ([`remote::Remote`]) behind the local one.
//!
//! The difference between the two that callers see is written down in
//! [`Tier::put`]: a store keeps every re-recording (old ones go to
//! history), while a fixtures folder never rewrites a committed file unless
//! asked to.

pub(crate) mod fixture_dir;
pub mod fixtures;
pub mod lease;
mod pointer_index;
pub mod remote;
pub(crate) mod remote_changes;
pub mod remote_sync;
pub mod response_log;
mod sled_lock;
mod sled_store;
pub mod tiered;

use std::path::Path;

pub use fixture_dir::FixtureDir;
pub use sled_store::{SledStore, StoreError};
pub use tiered::{Fill, Tiered};

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::fixtures::FixtureError;
use crate::store::response_log::Replayable;

/// Why a tier could not read or write a recording.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// From the sled store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From a fixtures folder.
    #[error(transparent)]
    Fixtures(#[from] FixtureError),
}

impl TierError {
    /// A stored value that does not decode: callers treat it as a miss and
    /// say so, instead of failing.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, TierError::Store(StoreError::Corrupt { .. }))
    }
}

/// A place that holds recordings by key.
pub trait Tier: Send + Sync {
    /// The recording for `key` as replay needs it (for the sled store: from
    /// its response log, without decoding the entry).
    fn replayable(&self, key: &RequestKey) -> Result<Option<Replayable>, TierError>;

    /// The whole current recording for `key`.
    fn get(&self, key: &RequestKey) -> Result<Option<Recording>, TierError>;

    /// Earlier recordings of `key`, oldest first.
    fn history(&self, key: &RequestKey) -> Result<Vec<Recording>, TierError>;

    /// Stores a recording; an existing one moves to history, which keeps at
    /// most `history` recordings. A fixtures folder rewrites an existing
    /// file only when `replace` is set (`record` mode). Returns whether
    /// anything was written.
    fn put(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, TierError>;

    /// Sets the recording for `key` and its history exactly, whatever was
    /// there before (`import`).
    fn replace(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: &[Recording],
    ) -> Result<(), TierError>;

    /// Deletes the recording for `key` with its history; returns whether
    /// there was one.
    fn remove(&self, key: &RequestKey) -> Result<bool, TierError>;

    /// Every current recording; an unreadable one is an `Err` item and the
    /// iteration goes on.
    fn iter(&self) -> Box<dyn Iterator<Item = Result<Recording, TierError>> + '_>;

    /// Number of recordings, without reading them (for health and metrics).
    fn count(&self) -> usize;

    /// Whether the tier's in-memory index holds `key` (no disk read): a
    /// recording committed by this process is always there.
    fn indexed(&self, key: &RequestKey) -> bool;

    /// Makes writes durable.
    fn flush(&self) -> Result<(), TierError>;

    /// The store directory or fixtures folder.
    fn location(&self) -> &Path;

    /// Whether nothing is recorded.
    fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// At most `limit` recordings, unreadable ones skipped with a warning.
    fn sample(&self, limit: usize) -> Vec<Recording> {
        self.iter()
            .filter_map(|item| match item {
                Ok(recording) => Some(recording),
                Err(error) => {
                    tracing::warn!(%error, "skipping unreadable recording");
                    None
                }
            })
            .take(limit)
            .collect()
    }
}

/// Inside `impl Tier for W`: the methods that read, each handed to the
/// tier `self.$inner()` returns. For wrappers that change only what writes
/// do, or the name a tier goes by ([`Tiered`], the commands' view of a
/// server's tier), so the forwarding is written once.
macro_rules! forward_reads {
    ($inner:ident) => {
        fn replayable(
            &self,
            key: &$crate::key::RequestKey,
        ) -> Result<Option<$crate::store::response_log::Replayable>, $crate::store::TierError> {
            self.$inner().replayable(key)
        }

        fn get(
            &self,
            key: &$crate::key::RequestKey,
        ) -> Result<Option<$crate::record::recording::Recording>, $crate::store::TierError> {
            self.$inner().get(key)
        }

        fn history(
            &self,
            key: &$crate::key::RequestKey,
        ) -> Result<Vec<$crate::record::recording::Recording>, $crate::store::TierError> {
            self.$inner().history(key)
        }

        fn iter(
            &self,
        ) -> Box<
            dyn Iterator<
                    Item = Result<$crate::record::recording::Recording, $crate::store::TierError>,
                > + '_,
        > {
            self.$inner().iter()
        }

        fn count(&self) -> usize {
            self.$inner().count()
        }

        fn indexed(&self, key: &$crate::key::RequestKey) -> bool {
            self.$inner().indexed(key)
        }

        fn flush(&self) -> Result<(), $crate::store::TierError> {
            self.$inner().flush()
        }
    };
}
pub(crate) use forward_reads;

/// Inside `impl Tier for W`: `replace` and `remove` handed to
/// `self.$inner()` (see [`forward_reads`]).
macro_rules! forward_replace_remove {
    ($inner:ident) => {
        fn replace(
            &self,
            key: &$crate::key::RequestKey,
            recording: &$crate::record::recording::Recording,
            history: &[$crate::record::recording::Recording],
        ) -> Result<(), $crate::store::TierError> {
            self.$inner().replace(key, recording, history)
        }

        fn remove(&self, key: &$crate::key::RequestKey) -> Result<bool, $crate::store::TierError> {
            self.$inner().remove(key)
        }
    };
}
pub(crate) use forward_replace_remove;

impl Tier for SledStore {
    fn replayable(&self, key: &RequestKey) -> Result<Option<Replayable>, TierError> {
        Ok(SledStore::replayable(self, key)?)
    }

    fn get(&self, key: &RequestKey) -> Result<Option<Recording>, TierError> {
        Ok(SledStore::get(self, key)?)
    }

    fn history(&self, key: &RequestKey) -> Result<Vec<Recording>, TierError> {
        Ok(SledStore::history(self, key)?)
    }

    fn put(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: usize,
        _replace: bool,
    ) -> Result<bool, TierError> {
        SledStore::put(self, key, recording, history)?;
        Ok(true)
    }

    fn replace(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: &[Recording],
    ) -> Result<(), TierError> {
        Ok(SledStore::replace(self, key, recording, history)?)
    }

    fn remove(&self, key: &RequestKey) -> Result<bool, TierError> {
        Ok(SledStore::remove(self, key)?)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = Result<Recording, TierError>> + '_> {
        Box::new(SledStore::iter(self).map(|item| item.map_err(TierError::from)))
    }

    fn count(&self) -> usize {
        self.indexed_len()
    }

    fn indexed(&self, key: &RequestKey) -> bool {
        SledStore::indexed(self, key)
    }

    fn flush(&self) -> Result<(), TierError> {
        Ok(SledStore::flush(self)?)
    }

    fn location(&self) -> &Path {
        self.path()
    }
}

impl Tier for FixtureDir {
    fn replayable(&self, key: &RequestKey) -> Result<Option<Replayable>, TierError> {
        Ok(FixtureDir::get(self, key)
            .as_ref()
            .map(Replayable::from_entry))
    }

    fn get(&self, key: &RequestKey) -> Result<Option<Recording>, TierError> {
        Ok(FixtureDir::get(self, key))
    }

    fn history(&self, key: &RequestKey) -> Result<Vec<Recording>, TierError> {
        Ok(FixtureDir::history(self, key))
    }

    fn put(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, TierError> {
        Ok(FixtureDir::put(self, key, recording, history, replace)?)
    }

    fn replace(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: &[Recording],
    ) -> Result<(), TierError> {
        Ok(FixtureDir::replace(self, key, recording, history)?)
    }

    fn remove(&self, key: &RequestKey) -> Result<bool, TierError> {
        Ok(FixtureDir::remove(self, key)?)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = Result<Recording, TierError>> + '_> {
        Box::new(self.all().into_iter().map(|(recording, _)| Ok(recording)))
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn indexed(&self, key: &RequestKey) -> bool {
        self.contains(key)
    }

    fn flush(&self) -> Result<(), TierError> {
        // Fixture files are written synchronously.
        Ok(())
    }

    fn location(&self) -> &Path {
        self.root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;

    /// Both tiers behave alike through the seam: put, get, history, iterate,
    /// remove.
    #[test]
    fn every_tier_answers_the_same_calls() {
        let store_dir = tempfile::tempdir().unwrap();
        let fixtures_dir = tempfile::tempdir().unwrap();
        let tiers: Vec<Box<dyn Tier>> = vec![
            Box::new(SledStore::open(store_dir.path()).unwrap()),
            Box::new(FixtureDir::load(fixtures_dir.path()).unwrap()),
        ];
        for tier in &tiers {
            let hex = "ab".repeat(32);
            let key = RequestKey::from_hex(&hex).unwrap();
            let at = "2026-11-22T00:00:00.000Z";
            let first = test_entry(&hex, &b"{\"n\":1}"[..], "fp_a", Some("m"), at);
            let second = test_entry(&hex, &b"{\"n\":2}"[..], "fp_b", Some("m"), at);
            assert!(tier.is_empty());
            assert!(tier.put(&key, &first, 5, false).unwrap());
            assert!(tier.put(&key, &second, 5, true).unwrap());
            assert_eq!(tier.get(&key).unwrap().unwrap().body, second.body);
            assert_eq!(tier.replayable(&key).unwrap().unwrap().body, second.body);
            assert_eq!(tier.history(&key).unwrap(), vec![first.clone()]);
            tier.replace(&key, &second, &[first.clone(), first.clone()])
                .unwrap();
            assert_eq!(tier.get(&key).unwrap().unwrap().body, second.body);
            assert_eq!(tier.history(&key).unwrap(), vec![first.clone(); 2]);
            tier.replace(&key, &second, std::slice::from_ref(&first))
                .unwrap();
            assert_eq!(tier.history(&key).unwrap(), vec![first.clone()]);
            assert_eq!(tier.count(), 1);
            assert!(tier.indexed(&key));
            assert_eq!(tier.sample(10).len(), 1);
            assert!(tier.remove(&key).unwrap());
            assert!(!tier.remove(&key).unwrap(), "already gone");
            assert!(tier.get(&key).unwrap().is_none());
            assert!(tier.replayable(&key).unwrap().is_none());
            assert!(tier.history(&key).unwrap().is_empty());
            assert!(!tier.indexed(&key));
            assert!(tier.is_empty());
        }
    }
}
