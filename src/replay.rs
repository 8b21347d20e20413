//! Replay: a recording becomes a response.
//!
//! The body goes out as the stored `Bytes`, untouched; the status and
//! headers are the recorded ones plus llmtape's own. Does not read the
//! store or decide whether to replay.

use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::entry::Entry;
use crate::key::RequestKey;
use crate::proxy::{Outcome, CACHE_HEADER, KEY_HEADER, RECORDED_AT_HEADER};

/// The response for a hit.
pub fn response(entry: Entry, key: &RequestKey) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(entry.meta.response.status).unwrap_or(StatusCode::OK);
    let mut response = Response::new(full(entry.body));
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

/// A key as a header value.
pub fn hex_value(key: &RequestKey) -> HeaderValue {
    HeaderValue::from_str(&key.to_hex()).expect("hex is a valid header value")
}
