//! A recording: what one exchange with the upstream left behind.
//!
//! Owns the schema of a recording and its on-disk encoding. The response
//! body is kept as the exact bytes the upstream sent, never re-serialised,
//! so a replay is byte-identical. Metadata is small JSON in front of it.
//!
//! Encoding (version 1):
//! `MAGIC (8) | meta_len u32 LE | meta JSON | body | blake3(all before) (32)`.
//! The checksum turns a torn or bit-flipped value into a clear decode error
//! (the proxy treats it as a miss) instead of a wrong replay.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key::{Canonical, CanonicalBody, RequestKey};

/// Marks a value as an llmtape entry and names the encoding version.
const MAGIC: &[u8; 8] = b"LLMTAPE1";
const CHECKSUM_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 4;

/// A recording. `meta` is everything but the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Request, response head, fingerprint, times.
    pub meta: RecordingMeta,
    /// The response body exactly as received from the upstream.
    pub body: Bytes,
}

/// Everything about a recording except the body bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// The request key (64 hex characters when stored).
    pub key: RequestKey,
    /// The canonical request.
    pub request: RecordedRequest,
    /// The response's status and headers.
    pub response: RecordedResponse,
    /// `system_fingerprint` from the body, if it had one.
    pub system_fingerprint: Option<String>,
    /// `model` from the body, if it had one.
    pub model: Option<String>,
    /// When the upstream answered, RFC 3339 UTC with milliseconds.
    pub recorded_at: String,
    /// Milliseconds from sending the request to the end of the response.
    pub latency_ms: u64,
    /// For a server-sent-event stream: its events, in order, which split
    /// the body into consecutive byte ranges. `None` for a plain body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Vec<StreamEvent>>,
    /// With `x-llmtape-repeats: sequence`: which call of its request in a
    /// run this answered (1, 2, ...). `None` for a plain recording; older
    /// recordings have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<u32>,
}

/// One recorded server-sent event: its length in the body and when it
/// arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// Milliseconds from sending the request to the event's last byte.
    pub offset_ms: u64,
    /// The event's length in bytes (terminator included).
    pub len: usize,
}

/// The request as keyed: canonical, with ignored fields removed and no
/// credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Sorted query string ("" when none).
    pub query: String,
    /// `x-llmtape-namespace` ("" when none).
    #[serde(default)]
    pub namespace: String,
    /// The request headers in the key (`anthropic-beta`,
    /// `anthropic-version`), sorted by name; absent when none was sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The body: JSON when it was JSON, else text or base64.
    pub body: RequestBody,
}

/// A request body in a readable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A JSON document (canonical: ignored fields removed).
    Json(Value),
    /// UTF-8 text that is not JSON.
    Text(String),
    /// Anything else, base64.
    Base64(String),
}

/// The response head as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers worth replaying, in order, names lowercase.
    pub headers: Vec<(String, String)>,
}

/// Why stored bytes are not a usable entry.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed parts.
    #[error("entry is truncated ({len} bytes)")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Not written by this version of llmtape.
    #[error("entry has an unknown format marker")]
    BadMagic,
    /// The checksum does not match: torn write or corruption.
    #[error("entry checksum mismatch")]
    Checksum,
    /// The stream's events do not add up to the body.
    #[error("entry stream events do not cover the body")]
    StreamLength,
    /// The metadata is not valid.
    #[error("entry metadata is invalid: {0}")]
    Meta(#[source] serde_json::Error),
}

impl RecordingMeta {
    /// What tells one version of the upstream's model from another: the
    /// answer's `system_fingerprint`, else (Anthropic Messages, the
    /// Responses API, which have none) its `model`, which names a dated
    /// snapshot. `ls`, `show`, `audit`, `probe` and
    /// `x-llmtape-fingerprint-changed` use it.
    pub fn fingerprint(&self) -> Option<&str> {
        self.system_fingerprint.as_deref().or(self.model.as_deref())
    }
}

impl Recording {
    /// Encodes the entry for the store.
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("entry metadata always serialises");
        let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + self.body.len() + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes stored bytes; the body is a zero-copy slice of `raw`.
    pub fn decode(raw: Bytes) -> Result<Recording, DecodeError> {
        if raw.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(DecodeError::Truncated { len: raw.len() });
        }
        if &raw[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let content_end = raw.len() - CHECKSUM_LEN;
        if blake3::hash(&raw[..content_end]).as_bytes() != &raw[content_end..] {
            return Err(DecodeError::Checksum);
        }
        let meta_len = u32::from_le_bytes(
            raw[MAGIC.len()..HEADER_LEN]
                .try_into()
                .expect("slice is exactly four bytes"),
        ) as usize;
        let meta_end = HEADER_LEN
            .checked_add(meta_len)
            .filter(|end| *end <= content_end)
            .ok_or(DecodeError::Truncated { len: raw.len() })?;
        let meta: RecordingMeta =
            serde_json::from_slice(&raw[HEADER_LEN..meta_end]).map_err(DecodeError::Meta)?;
        let body_len = content_end - meta_end;
        if let Some(events) = &meta.stream {
            // Checked: lengths from a damaged value must not overflow.
            let covered = events
                .iter()
                .try_fold(0usize, |sum, e| sum.checked_add(e.len));
            if covered != Some(body_len) {
                return Err(DecodeError::StreamLength);
            }
        }
        Ok(Recording {
            meta,
            body: raw.slice(meta_end..content_end),
        })
    }

    /// The key this recording is stored under.
    pub fn key(&self) -> RequestKey {
        self.meta.key
    }

    /// A stream's events as slices of the body, with their offsets. A
    /// plain body yields nothing.
    pub fn events(&self) -> Vec<(u64, Bytes)> {
        split_events(
            &self.body,
            self.meta
                .stream
                .iter()
                .flatten()
                .map(|e| (e.offset_ms, e.len)),
        )
    }

    /// What identifies an encoded entry among the values a key has had:
    /// its checksum, the last bytes of the encoding.
    pub fn stored_id(raw: &[u8]) -> &[u8] {
        &raw[raw.len().saturating_sub(CHECKSUM_LEN)..]
    }

    /// The recorded `content-type`, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.meta
            .response
            .headers
            .iter()
            .find(|(name, _)| name == "content-type")
            .map(|(_, value)| value.as_str())
    }
}

/// `model` and `system_fingerprint` read from a JSON response body.
pub fn body_identity(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Identity {
        model: Option<String>,
        system_fingerprint: Option<String>,
    }
    match serde_json::from_slice::<Identity>(body) {
        Ok(id) => (id.model, id.system_fingerprint),
        Err(_) => (None, None),
    }
}

/// Splits a stream's body into its events, given (offset ms, length) in
/// order; lengths that overrun the body are cut at its end.
pub fn split_events(body: &Bytes, events: impl Iterator<Item = (u64, usize)>) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for (offset_ms, len) in events {
        let end = start.saturating_add(len).min(body.len());
        out.push((offset_ms, body.slice(start..end)));
        start = end;
    }
    out
}

/// RFC 3339 UTC with millisecond precision.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Milliseconds in a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RecordedRequest {
    /// The canonical request in its stored form.
    pub fn from_canonical(canonical: &Canonical) -> RecordedRequest {
        RecordedRequest {
            method: canonical.method.clone(),
            path: canonical.path.clone(),
            query: canonical.query.clone(),
            namespace: canonical.namespace.clone(),
            headers: canonical.headers.clone(),
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
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A plain `POST /v1/chat/completions` recording, for other modules' unit
/// tests.
#[cfg(test)]
pub(crate) fn test_entry(
    key: &str,
    body: impl Into<Bytes>,
    fingerprint: &str,
    model: Option<&str>,
    recorded_at: &str,
) -> Recording {
    Recording {
        meta: RecordingMeta {
            key: RequestKey::from_hex(key).expect("test keys are 64 hex characters"),
            request: RecordedRequest {
                method: "POST".into(),
                path: "/v1/chat/completions".into(),
                query: String::new(),
                namespace: String::new(),
                headers: Vec::new(),
                body: RequestBody::Json(serde_json::json!({"model": model})),
            },
            response: RecordedResponse {
                status: 200,
                headers: vec![],
            },
            system_fingerprint: Some(fingerprint.into()),
            model: model.map(String::from),
            recorded_at: recorded_at.into(),
            latency_ms: 1,
            stream: None,
            call: None,
        },
        body: body.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Recording {
        Recording {
            meta: RecordingMeta {
                key: RequestKey::from_bytes([0xab; 32]),
                request: RecordedRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    query: String::new(),
                    namespace: String::new(),
                    headers: Vec::new(),
                    body: RequestBody::Json(serde_json::json!({"model": "m"})),
                },
                response: RecordedResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                },
                system_fingerprint: Some("fp_1".into()),
                model: Some("m".into()),
                recorded_at: "2026-11-22T00:00:00.000Z".into(),
                latency_ms: 12,
                stream: None,
                call: None,
            },
            body: Bytes::from_static(b"{\"id\": 1,  \"x\":1.0}"),
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let entry = sample();
        let decoded = Recording::decode(Bytes::from(entry.encode())).unwrap();
        assert_eq!(decoded, entry);
    }

    #[test]
    fn every_truncation_is_detected() {
        let raw = sample().encode();
        for len in 0..raw.len() {
            assert!(
                Recording::decode(Bytes::copy_from_slice(&raw[..len])).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let mut raw = sample().encode();
        let middle = raw.len() / 2;
        raw[middle] ^= 0x01;
        assert!(matches!(
            Recording::decode(Bytes::from(raw)),
            Err(DecodeError::Checksum)
        ));
    }

    #[test]
    fn identity_is_read_from_the_body() {
        let (model, fp) =
            body_identity(br#"{"model":"gpt-4o","system_fingerprint":"fp_x","id":"1"}"#);
        assert_eq!(model.as_deref(), Some("gpt-4o"));
        assert_eq!(fp.as_deref(), Some("fp_x"));
        assert_eq!(body_identity(b"nope"), (None, None));
    }
}
