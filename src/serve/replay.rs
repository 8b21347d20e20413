//! Replay: a recording becomes a response.
//!
//! The body goes out as the stored `Bytes`, untouched; the status and
//! headers are the recorded ones plus llmtape's own. A recorded stream is
//! sent at once (`instant`) or event by event at its recorded offsets
//! (`recorded`); either way the bytes are the same. Does not read the
//! store or decide whether to replay.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::time::Instant;

use crate::body::{full, BoxError, ProxyBody};
use crate::config::Timing;
use crate::key::RequestKey;
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
    /// What a hit on it saves, read from the body on its first hit.
    saved: std::sync::OnceLock<crate::serve::metrics::Saved>,
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
            saved: std::sync::OnceLock::new(),
        }
    }

    /// What a hit on this recording saves: worked out by `read` from the
    /// body and events on the first call, an atomic load after that.
    pub(crate) fn saved(
        &self,
        read: impl FnOnce(&[u8], Option<&[(u64, Bytes)]>) -> crate::serve::metrics::Saved,
    ) -> crate::serve::metrics::Saved {
        *self
            .saved
            .get_or_init(|| read(&self.body, self.events.as_deref()))
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

/// Sends each event at its recorded offset from now.
fn paced(events: Vec<(u64, Bytes)>) -> ProxyBody {
    let start = Instant::now();
    let frames = futures_util::stream::iter(events).then(move |(offset_ms, event)| async move {
        tokio::time::sleep_until(start + Duration::from_millis(offset_ms)).await;
        Ok::<_, BoxError>(Frame::data(event))
    });
    ProxyBody::boxed(StreamBody::new(frames))
}
