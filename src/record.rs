//! Record: an upstream exchange becomes a recording.
//!
//! Builds the [`Entry`] from the canonical request and the response the
//! client was (or is being) given; credentials and per-connection headers
//! are dropped here, before anything can be persisted. Deciding whether to
//! record at all is [`should_record`]'s job; writing is the store's.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::entry::{
    body_identity, millis, rfc3339, Entry, EntryMeta, RecordedRequest, RecordedResponse,
    RequestBody,
};
use crate::key::{Canonical, CanonicalBody, RequestKey};
use crate::redact::Redactor;

/// Whether an upstream answer with `status` is stored.
/// Success always is; 4xx/5xx only with `store.record_errors = true`;
/// 1xx and 3xx never.
pub fn should_record(status: StatusCode, record_errors: bool) -> bool {
    status.is_success() || (record_errors && (status.is_client_error() || status.is_server_error()))
}

/// The recording of one exchange.
pub fn entry(
    canonical: &Canonical,
    key: &RequestKey,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    latency: Duration,
    redactor: &Redactor,
) -> Entry {
    let (model, system_fingerprint) = body_identity(&body);
    Entry {
        meta: EntryMeta {
            key: key.to_hex(),
            request: recorded_request(canonical),
            response: RecordedResponse {
                status: status.as_u16(),
                headers: redactor.recordable(headers),
            },
            system_fingerprint,
            model,
            recorded_at: rfc3339(SystemTime::now()),
            latency_ms: millis(latency),
        },
        body,
    }
}

/// The canonical request in its stored form.
pub fn recorded_request(canonical: &Canonical) -> RecordedRequest {
    RecordedRequest {
        method: canonical.method.clone(),
        path: canonical.path.clone(),
        query: canonical.query.clone(),
        namespace: canonical.namespace.clone(),
        body: match &canonical.body {
            CanonicalBody::Empty => RequestBody::Empty,
            CanonicalBody::Json(value) => RequestBody::Json(value.clone()),
            CanonicalBody::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => RequestBody::Text(text.to_string()),
                Err(_) => RequestBody::Base64(base64_encode(bytes)),
            },
            CanonicalBody::Multipart(parts) => RequestBody::Json(serde_json::json!(parts
                .iter()
                .map(|p| serde_json::json!({
                    "headers": p.headers,
                    "content_base64": base64_encode(&p.content),
                }))
                .collect::<Vec<_>>())),
        },
    }
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_recorded_only_when_asked() {
        assert!(should_record(StatusCode::OK, false));
        assert!(!should_record(StatusCode::TOO_MANY_REQUESTS, false));
        assert!(should_record(StatusCode::TOO_MANY_REQUESTS, true));
        assert!(!should_record(StatusCode::FOUND, true));
    }
}
