//! The one sharded map: values by a 32-byte hash (a [`RequestKey`] or a raw
//! blake3 output), split over independently locked shards so that
//! concurrent lookups of different keys rarely meet on a lock.
//!
//! The hot cache, the key memo and the store's pointer index are all this
//! type. It owns the two decisions they must agree on, made once here: the
//! shard is picked by the key's first byte, and the map inside a shard
//! hashes the key's last eight bytes, which the shard choice never looks
//! at. (Picking the shard from bits the map hash also used once put every
//! key of a shard in the same few buckets: see the test below.) Keys must
//! be hash outputs; an attacker who picks raw keys could crowd one bucket.
//!
//! A lookup takes one read lock and allocates nothing. Shards are
//! `RwLock`s, so hits on one shard do not wait for each other; poisoning
//! is handled as everywhere else (`crate::sync`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::key::RequestKey;
use crate::sync;

/// A key of a [`ShardedMap`]: 32 uniformly distributed bytes.
pub trait HashKey: Copy + Eq + Hash {
    /// The key's bytes.
    fn hash_bytes(&self) -> &[u8; 32];
}

impl HashKey for RequestKey {
    fn hash_bytes(&self) -> &[u8; 32] {
        self.as_bytes()
    }
}

impl HashKey for [u8; 32] {
    fn hash_bytes(&self) -> &[u8; 32] {
        self
    }
}

/// The most shards a map may have: the shard is one byte's worth.
pub const MAX_SHARDS: usize = 256;

/// A map from 32-byte hashes to `V`, in shards; `S` is what the owner
/// keeps per shard beside the entries (the hot cache's byte count; `()`
/// for most).
#[derive(Debug)]
pub struct ShardedMap<K, V, S = ()> {
    shards: Box<[RwLock<Shard<K, V, S>>]>,
}

/// One shard: its entries and its owner's per-shard state.
#[derive(Debug)]
pub struct Shard<K, V, S = ()> {
    /// The entries whose key picks this shard.
    pub map: HashMap<K, V, WithinShard>,
    /// The owner's per-shard state.
    pub state: S,
}

impl<K, V, S: Default> Default for Shard<K, V, S> {
    fn default() -> Self {
        Shard {
            map: HashMap::with_hasher(WithinShard),
            state: S::default(),
        }
    }
}

impl<K: HashKey, V, S: Default> ShardedMap<K, V, S> {
    /// An empty map of `shards` shards: a power of two, at most
    /// [`MAX_SHARDS`] (a constant in every caller, so this cannot fail at
    /// run time once a test has built the map).
    pub fn new(shards: usize) -> Self {
        assert!(
            shards.is_power_of_two() && shards <= MAX_SHARDS,
            "a sharded map needs a power of two of at most {MAX_SHARDS} shards, not {shards}"
        );
        ShardedMap {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
        }
    }
}

impl<K: HashKey, V, S> ShardedMap<K, V, S> {
    /// The shard `key` belongs to: its first byte, modulo the (power of
    /// two) shard count.
    fn shard_of(&self, key: &K) -> &RwLock<Shard<K, V, S>> {
        &self.shards[shard_index(key, self.shards.len())]
    }

    /// Read access to `key`'s shard.
    pub fn read(&self, key: &K) -> RwLockReadGuard<'_, Shard<K, V, S>> {
        sync::read(self.shard_of(key))
    }

    /// Write access to `key`'s shard.
    pub fn write(&self, key: &K) -> RwLockWriteGuard<'_, Shard<K, V, S>> {
        sync::write(self.shard_of(key))
    }

    /// A copy of the value for `key` (one read lock, no allocation for the
    /// `Copy` and `Arc` values the callers keep).
    pub fn get(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        self.read(key).map.get(key).cloned()
    }

    /// Sets the value for `key`; returns the one it replaces.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.write(&key).map.insert(key, value)
    }

    /// Removes `key`; returns its value.
    #[cfg(test)]
    pub fn remove(&self, key: &K) -> Option<V> {
        self.write(key).map.remove(key)
    }

    /// The sum of `f` over the shards, each read-locked in turn (a snapshot
    /// per shard, not of the whole map).
    pub fn sum(&self, f: impl Fn(&Shard<K, V, S>) -> usize) -> usize {
        self.shards.iter().map(|s| f(&sync::read(s))).sum()
    }

    /// Entries held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sum(|shard| shard.map.len())
    }

    /// True when no shard holds an entry.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of shards.
    #[cfg(test)]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// Bulk loading (e.g. at open) takes no locks: `&mut` proves no one else
/// holds the map.
impl<K: HashKey, V, S> Extend<(K, V)> for ShardedMap<K, V, S> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, items: I) {
        let count = self.shards.len();
        for (key, value) in items {
            let shard = self.shards[shard_index(&key, count)]
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shard.map.insert(key, value);
        }
    }
}

fn shard_index<K: HashKey>(key: &K, shards: usize) -> usize {
    key.hash_bytes()[0] as usize & (shards - 1)
}

/// The [`BuildHasher`] of the map inside a shard: the key is already a
/// uniform hash, so its last eight bytes serve as the map hash, with no
/// SipHash round on every hit. Not the first ones: those pick the shard,
/// and the map's buckets come from the hash's low bits, which would then be
/// the same for every key of a shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct WithinShard;

/// The hasher of [`WithinShard`].
#[derive(Debug, Default)]
pub struct WithinShardHasher(u64);

impl BuildHasher for WithinShard {
    type Hasher = WithinShardHasher;

    fn build_hasher(&self) -> WithinShardHasher {
        WithinShardHasher(0)
    }
}

impl Hasher for WithinShardHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Slices also feed their length (`write_usize`), which lands here
        // as 8 bytes too; rotating keeps it from cancelling key bytes.
        let tail = &bytes[bytes.len().saturating_sub(8)..];
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> RequestKey {
        RequestKey::from_bytes(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn keys_of_one_shard_spread_over_the_map_hash_low_bits() {
        // The regression of 3d0cfb3: the keys of one shard must still land
        // in different buckets (the map hash's low bits).
        let map: ShardedMap<RequestKey, ()> = ShardedMap::new(32);
        let low_bits: std::collections::HashSet<u64> = (0u32..20_000)
            .map(key)
            .filter(|k| shard_index(k, map.shard_count()) == 0)
            .map(|k| WithinShard.hash_one(k) & 0xff)
            .collect();
        assert!(low_bits.len() > 200, "{} of 256 buckets", low_bits.len());
        // Raw hashes hash the same way as keys.
        let raw = *key(1).as_bytes();
        assert_eq!(WithinShard.hash_one(raw), WithinShard.hash_one(key(1)));
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let map: ShardedMap<RequestKey, u32> = ShardedMap::new(8);
        for n in 0..800 {
            map.insert(key(n), n);
        }
        for shard in map.shards.iter() {
            let len = shard.read().unwrap().map.len();
            assert!((50..150).contains(&len), "{len} keys in a shard");
        }
    }

    #[test]
    fn insert_get_remove_and_bulk_load() {
        let mut map: ShardedMap<[u8; 32], u32> = ShardedMap::new(4);
        assert!(map.is_empty());
        map.extend((0..10).map(|n| (*key(n).as_bytes(), n)));
        assert_eq!(map.len(), 10);
        assert_eq!(map.get(key(3).as_bytes()), Some(3));
        assert_eq!(map.insert(*key(3).as_bytes(), 33), Some(3));
        assert_eq!(map.remove(key(3).as_bytes()), Some(33));
        assert_eq!(map.get(key(3).as_bytes()), None);
        assert_eq!(map.len(), 9);
    }

    #[test]
    fn per_shard_state_is_the_owners() {
        let map: ShardedMap<RequestKey, u32, usize> = ShardedMap::new(2);
        for n in 0..10 {
            let mut shard = map.write(&key(n));
            shard.map.insert(key(n), n);
            shard.state += 1;
        }
        assert_eq!(map.sum(|s| s.state), 10);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn a_shard_count_must_be_a_power_of_two() {
        let _ = ShardedMap::<RequestKey, ()>::new(24);
    }
}
