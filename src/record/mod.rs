//! Record: an upstream exchange becomes a recording.
//!
//! Builds the [`Recording`] from the canonical request and the response the
//! client was (or is being) given; credentials and per-connection headers
//! are dropped here, before anything can be persisted. Deciding whether to
//! record at all is [`should_record`]'s job; writing is the store's.

pub mod recording;
pub mod redact;
pub mod sse;

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};

use crate::key::{Canonical, CanonicalBody, RequestKey};
use crate::record::recording::{
    body_identity, millis, rfc3339, RecordedRequest, RecordedResponse, Recording, RecordingMeta,
    RequestBody, StreamEvent,
};
use crate::record::redact::Redactor;
use crate::record::sse::{classify, stream_identity, EventKind, EventSplitter};

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
) -> Recording {
    let (model, system_fingerprint) = body_identity(&body);
    Recording {
        meta: RecordingMeta {
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
            stream: None,
        },
        body,
    }
}

/// The largest stream kept for recording. Past it the stream is still
/// forwarded whole, but not recorded: 64 MiB is far beyond any completion
/// (a 128k-token answer streams as a few MiB of events).
pub const MAX_RECORDED_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// Where a stream being recorded stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Events are arriving; no end seen yet.
    Open,
    /// The clean end arrived; the recording is complete.
    Complete,
    /// An error event arrived, or the stream grew past the cap: never stored.
    Spoiled(&'static str),
}

/// Keeps a stream's events, with their offsets, as they pass.
///
/// Only a stream that ended cleanly (`data: [DONE]`, or a Responses API
/// terminal event) yields an entry; anything after the end is ignored.
#[derive(Debug)]
pub struct StreamRecorder {
    splitter: EventSplitter,
    events: Vec<(u64, Bytes)>,
    bytes: usize,
    cap: usize,
    state: StreamState,
}

impl StreamRecorder {
    /// An empty recorder that gives up past `cap` bytes.
    pub fn new(cap: usize) -> Self {
        StreamRecorder {
            splitter: EventSplitter::new(),
            events: Vec::new(),
            bytes: 0,
            cap,
            state: StreamState::Open,
        }
    }

    /// Feeds a chunk received `offset` after the request was sent.
    pub fn push(&mut self, chunk: &Bytes, offset: Duration) -> StreamState {
        if self.state != StreamState::Open {
            return self.state;
        }
        for event in self.splitter.push(chunk) {
            self.bytes += event.len();
            if self.bytes > self.cap {
                self.state = StreamState::Spoiled("stream larger than the recording cap");
                self.events.clear();
                return self.state;
            }
            let kind = classify(&event);
            self.events.push((millis(offset), event));
            if kind == EventKind::Error {
                self.state = StreamState::Spoiled("upstream sent an error event");
                return self.state;
            }
            if kind.is_clean_end() {
                self.state = StreamState::Complete;
                return self.state;
            }
        }
        if self.splitter.pending() > self.cap {
            self.state = StreamState::Spoiled("stream larger than the recording cap");
        }
        self.state
    }

    /// The state so far.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// The recording, if the stream is complete.
    pub fn entry(
        &self,
        canonical: &Canonical,
        key: &RequestKey,
        status: StatusCode,
        headers: &HeaderMap,
        latency: Duration,
        redactor: &Redactor,
    ) -> Option<Recording> {
        if self.state != StreamState::Complete {
            return None;
        }
        let mut body = BytesMut::with_capacity(self.bytes);
        let mut events = Vec::with_capacity(self.events.len());
        for (offset_ms, event) in &self.events {
            body.extend_from_slice(event);
            events.push(StreamEvent {
                offset_ms: *offset_ms,
                len: event.len(),
            });
        }
        let mut recording = entry(
            canonical,
            key,
            status,
            headers,
            body.freeze(),
            latency,
            redactor,
        );
        // A stream's identity is in its chunks, not in the body as a whole.
        (recording.meta.model, recording.meta.system_fingerprint) =
            stream_identity(self.events.iter().map(|(_, e)| &e[..]));
        recording.meta.stream = Some(events);
        Some(recording)
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

    fn canonical() -> Canonical {
        Canonical::new(
            &crate::key::RequestParts {
                method: "POST",
                path: "/v1/chat/completions",
                query: None,
                content_type: None,
                body: br#"{"stream":true}"#,
                namespace: None,
                credential: None,
            },
            &crate::key::KeyRules::default(),
        )
    }

    fn record(chunks: &[&'static str], cap: usize) -> (StreamState, Option<Recording>) {
        let mut recorder = StreamRecorder::new(cap);
        for (i, chunk) in chunks.iter().enumerate() {
            recorder.push(
                &Bytes::from_static(chunk.as_bytes()),
                Duration::from_millis(10 * i as u64),
            );
        }
        let c = canonical();
        let entry = recorder.entry(
            &c,
            &c.key(),
            StatusCode::OK,
            &HeaderMap::new(),
            Duration::from_millis(50),
            &Redactor::default(),
        );
        (recorder.state(), entry)
    }

    #[test]
    fn a_clean_stream_is_recorded_with_offsets() {
        let (state, entry) = record(
            &[
                "data: {\"model\":\"m\",\"system_fingerprint\":\"fp\"}\n",
                "\ndata: [DONE]\n\n",
                "trailing",
            ],
            1024,
        );
        assert_eq!(state, StreamState::Complete);
        let entry = entry.unwrap();
        let events = entry.meta.stream.clone().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].offset_ms, 10,
            "an event is timed by its last byte"
        );
        assert_eq!(
            &entry.body[..],
            b"data: {\"model\":\"m\",\"system_fingerprint\":\"fp\"}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(entry.meta.system_fingerprint.as_deref(), Some("fp"));
    }

    #[test]
    fn cut_errored_and_oversized_streams_are_not_recorded() {
        assert_eq!(
            record(&["data: {}\n\n", "data: {\"x\":1}\n\n"], 1024).1,
            None
        );
        let (state, entry) = record(
            &[
                "data: {}\n\n",
                "data: {\"error\":{\"message\":\"boom\"}}\n\n",
                "data: [DONE]\n\n",
            ],
            1024,
        );
        assert!(matches!(state, StreamState::Spoiled(_)) && entry.is_none());
        let (state, entry) = record(&["data: {}\n\n", "data: [DONE]\n\n"], 12);
        assert!(matches!(state, StreamState::Spoiled(_)) && entry.is_none());
    }
}
