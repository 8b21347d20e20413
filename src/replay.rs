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
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::Instant;

use crate::body::{full, BoxError, ProxyBody};
use crate::config::Timing;
use crate::entry::Entry;
use crate::key::RequestKey;
use crate::proxy::{Outcome, CACHE_HEADER, KEY_HEADER, RECORDED_AT_HEADER};

/// The response for a hit.
pub fn response(entry: Entry, key: &RequestKey, timing: Timing) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(entry.meta.response.status).unwrap_or(StatusCode::OK);
    let body = match (timing, entry.meta.stream.is_some()) {
        (Timing::Recorded, true) => paced(entry.events()),
        _ => full(entry.body.clone()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &entry.meta.response.headers {
        // Recorded headers were valid when recorded and the entry's checksum
        // held, so these parse; skipping is only a guard against old data.
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
    response
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
