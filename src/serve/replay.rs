//! Replay: a recording becomes a response.
//!
//! The body goes out as the stored `Bytes`, untouched; the status and
//! headers are the recorded ones plus llmtape's own. A recorded stream is
//! sent at once (`instant`) or event by event at its recorded offsets
//! (`recorded`); either way the bytes are the same. Does not read the
//! store or decide whether to replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::Instant;

use crate::body::{full, BoxError, ProxyBody};
use crate::config::Timing;
use crate::key::{KeyHashBuilder, RequestKey};
use crate::record::recording::Recording;
use crate::serve::headers::{hex_value, Outcome, CACHE_HEADER, KEY_HEADER, RECORDED_AT_HEADER};
use crate::store::response_log::Replayable;

/// A recording turned into response parts once, so that repeat hits only
/// clone a header map and a refcounted body.
#[derive(Debug)]
pub struct Rendered {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// A stream's events with their offsets, for paced replay.
    events: Option<Vec<(u64, Bytes)>>,
}

impl Rendered {
    /// Renders a recording: recorded status and headers plus llmtape's own.
    pub fn new(entry: &Recording, key: &RequestKey) -> Rendered {
        Rendered::from_replayable(Replayable::from_entry(entry), key)
    }

    /// Renders the replayable parts of a recording; header names and values
    /// share the record's buffer (no copies).
    pub fn from_replayable(recording: Replayable, key: &RequestKey) -> Rendered {
        let mut headers = HeaderMap::with_capacity(recording.headers.len() + 3);
        for (name, value) in &recording.headers {
            // Recorded headers were valid when recorded and the record's
            // checksum held, so these parse; skipping only guards old data.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                headers.append(name, value);
            }
        }
        headers.insert(
            CACHE_HEADER,
            HeaderValue::from_static(Outcome::Hit.as_str()),
        );
        headers.insert(KEY_HEADER, hex_value(key));
        if let Ok(at) = HeaderValue::from_maybe_shared(recording.recorded_at.clone()) {
            headers.insert(RECORDED_AT_HEADER, at);
        }
        Rendered {
            status: StatusCode::from_u16(recording.status).unwrap_or(StatusCode::OK),
            headers,
            events: recording.event_slices(),
            body: recording.body,
        }
    }

    /// Bytes this rendering holds (for the hot cache's budget).
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>()
    }

    /// The response for a hit.
    pub fn respond(&self, timing: Timing) -> Response<ProxyBody> {
        let body = match (timing, &self.events) {
            (Timing::Recorded, Some(events)) => paced(events.clone()),
            _ => full(self.body.clone()),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// The response for a hit.
pub fn response(entry: Recording, key: &RequestKey, timing: Timing) -> Response<ProxyBody> {
    Rendered::new(&entry, key).respond(timing)
}

/// Recently replayed recordings, rendered, by key: a hit served from here
/// reads no store and parses nothing. Sharded so concurrent hits do not
/// contend on one lock, and bounded in bytes so memory stays flat however
/// large the store: each shard holds at most its share of the budget and
/// makes room by evicting arbitrary renderings (a miss here only costs a
/// read of the replay tape, so a cleverer policy would buy little).
#[derive(Debug)]
pub struct HotCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<RequestKey, Arc<Rendered>, KeyHashBuilder>,
    bytes: usize,
}

/// Shards of the hot cache: enough that concurrent hits rarely meet on a
/// lock, few enough that each shard's share of the budget (1 MiB of the
/// default 8 MiB) still holds a long streamed answer.
const HOT_SHARDS: usize = 8;

impl HotCache {
    /// An empty cache holding at most `budget` bytes of renderings.
    pub fn new(budget: usize) -> HotCache {
        HotCache {
            shards: (0..HOT_SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: budget / HOT_SHARDS,
        }
    }

    fn shard(&self, key: &RequestKey) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[key.as_bytes()[0] as usize % HOT_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The rendering for `key`, if cached.
    pub fn get(&self, key: &RequestKey) -> Option<Arc<Rendered>> {
        self.shard(key).map.get(key).cloned()
    }

    /// Caches a rendering, evicting others from its shard to make room; a
    /// rendering larger than a shard's share is not cached.
    pub fn insert(&self, key: RequestKey, rendered: Arc<Rendered>) {
        let size = rendered.size();
        if size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(&key);
        if let Some(old) = shard.map.remove(&key) {
            shard.bytes -= old.size();
        }
        while shard.bytes + size > self.shard_budget {
            let Some(victim) = shard.map.keys().next().copied() else {
                break;
            };
            if let Some(old) = shard.map.remove(&victim) {
                shard.bytes -= old.size();
            }
        }
        shard.bytes += size;
        shard.map.insert(key, rendered);
    }

    /// Forgets `key` (its recording changed).
    pub fn remove(&self, key: &RequestKey) {
        let mut shard = self.shard(key);
        if let Some(old) = shard.map.remove(key) {
            shard.bytes -= old.size();
        }
    }

    /// Bytes of renderings held now.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }
}

/// Sends each event at its recorded offset from now.
fn paced(events: Vec<(u64, Bytes)>) -> ProxyBody {
    let start = Instant::now();
    let frames = futures_util::stream::iter(events).then(move |(offset_ms, event)| async move {
        tokio::time::sleep_until(start + Duration::from_millis(offset_ms)).await;
        Ok::<_, BoxError>(Frame::data(event))
    });
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendering(body_len: usize) -> Arc<Rendered> {
        Arc::new(Rendered {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body_len]),
            events: None,
        })
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
