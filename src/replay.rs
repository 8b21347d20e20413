//! Replay: a recording becomes a response.
//!
//! The body goes out as the stored `Bytes`, untouched; the status and
//! headers are the recorded ones plus llmtape's own. A recorded stream is
//! sent at once (`instant`) or event by event at its recorded offsets
//! (`recorded`); either way the bytes are the same. Does not read the
//! store or decide whether to replay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
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
use crate::entry::Entry;
use crate::key::RequestKey;
use crate::proxy::{Outcome, CACHE_HEADER, KEY_HEADER, RECORDED_AT_HEADER};

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
    pub fn new(entry: &Entry, key: &RequestKey) -> Rendered {
        let mut headers = HeaderMap::with_capacity(entry.meta.response.headers.len() + 3);
        for (name, value) in &entry.meta.response.headers {
            // Recorded headers were valid when recorded and the entry's
            // checksum held, so these parse; skipping only guards old data.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        headers.insert(
            CACHE_HEADER,
            HeaderValue::from_static(Outcome::Hit.as_str()),
        );
        headers.insert(KEY_HEADER, hex_value(key));
        if let Ok(at) = HeaderValue::from_str(&entry.meta.recorded_at) {
            headers.insert(RECORDED_AT_HEADER, at);
        }
        Rendered {
            status: StatusCode::from_u16(entry.meta.response.status).unwrap_or(StatusCode::OK),
            headers,
            body: entry.body.clone(),
            events: entry.meta.stream.as_ref().map(|_| entry.events()),
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
pub fn response(entry: Entry, key: &RequestKey, timing: Timing) -> Response<ProxyBody> {
    Rendered::new(&entry, key).respond(timing)
}

/// Recently replayed recordings, rendered, by key: a hit served from here
/// reads no store and parses nothing. Sharded so concurrent hits do not
/// contend on one lock, and bounded in bytes so memory stays flat however
/// large the store.
#[derive(Debug)]
pub struct HotCache {
    shards: Vec<RwLock<HashMap<RequestKey, Arc<Rendered>>>>,
    bytes: AtomicUsize,
    budget: usize,
}

/// Shards of the hot cache; a power of two above the core counts we run on.
const HOT_SHARDS: usize = 32;

impl HotCache {
    /// An empty cache holding at most `budget` bytes of renderings.
    pub fn new(budget: usize) -> HotCache {
        HotCache {
            shards: (0..HOT_SHARDS)
                .map(|_| RwLock::new(HashMap::new()))
                .collect(),
            bytes: AtomicUsize::new(0),
            budget,
        }
    }

    fn shard(&self, key: &RequestKey) -> &RwLock<HashMap<RequestKey, Arc<Rendered>>> {
        &self.shards[key.as_bytes()[0] as usize % HOT_SHARDS]
    }

    /// The rendering for `key`, if cached.
    pub fn get(&self, key: &RequestKey) -> Option<Arc<Rendered>> {
        self.shard(key)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Caches a rendering while the budget allows (no eviction: past the
    /// budget, hits simply take the store path).
    pub fn insert(&self, key: RequestKey, rendered: Arc<Rendered>) {
        let size = rendered.size();
        let reserved = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + size <= self.budget).then_some(used + size)
            })
            .is_ok();
        if !reserved {
            return;
        }
        let old = self
            .shard(&key)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, rendered);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
        }
    }

    /// Forgets `key` (its recording changed).
    pub fn remove(&self, key: &RequestKey) {
        let old = self
            .shard(key)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
        }
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

/// A key as a header value.
pub fn hex_value(key: &RequestKey) -> HeaderValue {
    HeaderValue::from_str(&key.to_hex()).expect("hex is a valid header value")
}
