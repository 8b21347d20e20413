//! The hot cache: recently replayed recordings, rendered, by key. A hit
//! served from here reads no store and parses nothing.
//!
//! Sharded ([`ShardedMap`]) so concurrent hits do not contend on one lock,
//! and bounded in bytes so memory stays flat however large the store: each
//! shard holds at most its share of the budget and makes room by evicting
//! arbitrary renderings (a miss here only costs a read of the store's
//! response log, so a cleverer policy would buy little). Owns only this
//! cache; what a rendering is belongs to [`crate::serve::replay`].

use std::sync::Arc;

use crate::key::sharded::ShardedMap;
use crate::key::RequestKey;
use crate::serve::replay::Rendered;

/// Shards of the hot cache: enough that concurrent hits rarely meet on a
/// lock, few enough that each shard's share of the budget (1 MiB of the
/// default 8 MiB) still holds a long streamed answer.
const HOT_SHARDS: usize = 8;

/// What the hot cache can hold: something that knows its size in bytes.
pub trait Weigh {
    /// Bytes it holds, counted against the budget.
    fn size(&self) -> usize;
}

impl Weigh for Rendered {
    fn size(&self) -> usize {
        Rendered::size(self)
    }
}

/// Renderings by key, within a byte budget.
#[derive(Debug)]
pub struct HotCache<T = Rendered> {
    /// Each shard's state is the bytes it holds.
    renderings: ShardedMap<RequestKey, Arc<T>, usize>,
    shard_budget: usize,
}

impl<T: Weigh> HotCache<T> {
    /// An empty cache holding at most `budget` bytes of renderings.
    pub fn new(budget: usize) -> HotCache<T> {
        HotCache {
            renderings: ShardedMap::new(HOT_SHARDS),
            shard_budget: budget / HOT_SHARDS,
        }
    }

    /// The rendering for `key`, if cached.
    pub fn get(&self, key: &RequestKey) -> Option<Arc<T>> {
        self.renderings.get(key)
    }

    /// Caches a rendering, evicting others from its shard to make room; a
    /// rendering larger than a shard's share is not cached.
    pub fn insert(&self, key: RequestKey, rendered: Arc<T>) {
        let size = rendered.size();
        if size > self.shard_budget {
            return;
        }
        let mut shard = self.renderings.write(&key);
        if let Some(old) = shard.map.remove(&key) {
            shard.state -= old.size();
        }
        while shard.state + size > self.shard_budget {
            let Some(victim) = shard.map.keys().next().copied() else {
                break;
            };
            if let Some(old) = shard.map.remove(&victim) {
                shard.state -= old.size();
            }
        }
        shard.state += size;
        shard.map.insert(key, rendered);
    }

    /// Forgets `key` (its recording changed).
    pub fn remove(&self, key: &RequestKey) {
        let mut shard = self.renderings.write(key);
        if let Some(old) = shard.map.remove(key) {
            shard.state -= old.size();
        }
    }

    /// Bytes of renderings held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.renderings.sum(|shard| shard.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in rendering that weighs as many bytes as it says.
    #[derive(Debug)]
    struct Body(usize);

    impl Weigh for Body {
        fn size(&self) -> usize {
            self.0
        }
    }

    fn rendering(body_len: usize) -> Arc<Body> {
        Arc::new(Body(body_len))
    }

    fn key(n: u32) -> RequestKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        RequestKey::from_bytes(bytes)
    }

    #[test]
    fn the_hot_cache_stays_within_its_budget_and_keeps_serving_new_keys() {
        let budget = HOT_SHARDS * 10_000;
        let cache = HotCache::new(budget);
        for n in 0..5_000 {
            cache.insert(key(n), rendering(1_000));
            assert!(cache.bytes() <= budget, "{} bytes after {n}", cache.bytes());
        }
        // The latest insert is always there: eviction makes room for it.
        assert!(cache.get(&key(4_999)).is_some());
        // About the budget's worth is kept (ten a shard), not everything.
        let kept = (0..5_000).filter(|n| cache.get(&key(*n)).is_some()).count();
        let most = HOT_SHARDS * 10;
        assert!(kept <= most && kept >= most * 3 / 4, "{kept} kept");
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count_exact() {
        let cache = HotCache::new(HOT_SHARDS * 10_000);
        cache.insert(key(1), rendering(100));
        cache.insert(key(1), rendering(300));
        assert_eq!(cache.bytes(), 300);
        cache.remove(&key(1));
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get(&key(1)).is_none());
        // Too big for a shard: not cached at all.
        cache.insert(key(2), rendering(20_000));
        assert!(cache.get(&key(2)).is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
