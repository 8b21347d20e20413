//! The recorder: what is kept of one upstream answer while it passes, and
//! the recording it becomes.
//!
//! A [`Recorder`] keeps a plain body's chunks, or a stream's events with
//! their offsets, under a byte cap, and knows when the answer is complete
//! (the body's clean end, or a stream's terminal event) or will never be
//! recorded ([`NotRecorded`]). It is fed by
//! `crate::record::recording_body::RecordingBody`, the one body type that
//! plain answers, server-sent-event streams and `verify`'s re-asks all go
//! through. It does not decide where a recording is stored, or whether the
//! client sees the answer whole or streamed.

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};

use crate::key::{Canonical, RequestKey};
use crate::record::recording::{
    body_identity, millis, rfc3339, RecordedRequest, RecordedResponse, Recording, RecordingMeta,
    StreamEvent,
};
use crate::record::redact::Redactor;
use crate::record::sse::{classify, is_event_stream, stream_identity, EventKind, EventSplitter};

/// Whether an upstream answer with `status` is stored.
/// Success always is; 4xx/5xx only with `store.record_errors = true`;
/// 1xx and 3xx never.
pub fn should_record(status: StatusCode, record_errors: bool) -> bool {
    status.is_success() || (record_errors && (status.is_client_error() || status.is_server_error()))
}

/// One request and the head of its answer: what a recording says besides
/// the body.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request as keyed.
    pub canonical: Canonical,
    /// Its key.
    pub key: RequestKey,
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's headers as received (redacted when recorded).
    pub headers: HeaderMap,
    /// When the request went upstream: latency and event offsets count
    /// from here.
    pub sent: Instant,
}

impl Exchange {
    /// The recording of this exchange with `body`, received in full now.
    /// Credentials and per-connection headers are dropped here, before
    /// anything can be persisted.
    pub fn recording(&self, body: Bytes, redactor: &Redactor) -> Recording {
        let (model, system_fingerprint) = body_identity(&body);
        Recording {
            meta: RecordingMeta {
                key: self.key,
                request: RecordedRequest::from_canonical(&self.canonical),
                response: RecordedResponse {
                    status: self.status.as_u16(),
                    headers: redactor.recordable(&self.headers),
                },
                system_fingerprint,
                model,
                recorded_at: rfc3339(SystemTime::now()),
                latency_ms: millis(self.sent.elapsed()),
                stream: None,
                call: None,
            },
            body,
        }
    }
}

/// Why an answer was forwarded but not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecorded {
    /// Its status is not one that is recorded (see [`should_record`]).
    Status,
    /// It grew past the recording cap.
    TooLarge,
    /// The stream carried an error event.
    ErrorEvent,
    /// The stream ended without its terminal event.
    NoFinalEvent,
    /// The upstream broke off.
    Broken,
    /// Nobody read it to the end (the client left).
    Dropped,
}

impl NotRecorded {
    /// For logs and the `x-llmtape-not-recorded` header.
    pub fn as_str(self) -> &'static str {
        match self {
            NotRecorded::Status => "status not recorded (store.record_errors)",
            NotRecorded::TooLarge => "response larger than store.max_recorded_bytes",
            NotRecorded::ErrorEvent => "upstream sent an error event",
            NotRecorded::NoFinalEvent => "stream ended without its final event",
            NotRecorded::Broken => "upstream broke off",
            NotRecorded::Dropped => "nobody read the answer to its end",
        }
    }
}

/// Where a recorder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Still reading; nothing decided.
    Open,
    /// The recording was handed to the sink.
    Committed,
    /// It will not be recorded.
    NotRecorded(NotRecorded),
}

/// What is kept of an answer while it arrives.
#[derive(Debug)]
enum Capture {
    /// A plain body: its chunks, joined at the end.
    Whole(Vec<Bytes>),
    /// A server-sent-event stream: whole events with their offsets.
    Events {
        splitter: EventSplitter,
        events: Vec<(u64, Bytes)>,
    },
}

/// Keeps an answer as it passes and turns it into a recording.
#[derive(Debug)]
pub struct Recorder {
    exchange: Exchange,
    redactor: Redactor,
    capture: Capture,
    bytes: usize,
    cap: usize,
    recordable: bool,
    state: State,
}

impl Recorder {
    /// A recorder for the answer whose head is in `exchange`, giving up past
    /// `cap` bytes. A server-sent-event answer is kept event by event and
    /// is complete at its terminal event; any other at the body's end. With
    /// `recordable` false it still counts bytes (so callers can bound what
    /// they buffer) but never commits.
    pub fn new(exchange: Exchange, redactor: Redactor, cap: usize, recordable: bool) -> Recorder {
        let capture = if is_event_stream(&exchange.headers) {
            Capture::Events {
                splitter: EventSplitter::new(),
                events: Vec::new(),
            }
        } else {
            Capture::Whole(Vec::new())
        };
        Recorder {
            exchange,
            redactor,
            capture,
            bytes: 0,
            cap,
            recordable,
            state: State::Open,
        }
    }

    /// The exchange being recorded.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// Where it stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Feeds a chunk; a stream's terminal event completes the recording.
    pub(super) fn push(&mut self, chunk: &Bytes) -> Option<Recording> {
        self.push_at(chunk, self.exchange.sent.elapsed())
    }

    /// [`Recorder::push`] for a chunk that arrived `offset` after the
    /// request was sent (an event is timed by its last byte).
    fn push_at(&mut self, chunk: &Bytes, offset: Duration) -> Option<Recording> {
        if self.state != State::Open {
            return None;
        }
        let offset = millis(offset);
        match &mut self.capture {
            Capture::Whole(chunks) => {
                self.bytes += chunk.len();
                if self.bytes > self.cap {
                    return self.give_up(NotRecorded::TooLarge);
                }
                chunks.push(chunk.clone());
                None
            }
            Capture::Events { splitter, events } => {
                for event in splitter.push(chunk) {
                    self.bytes += event.len();
                    if self.bytes > self.cap {
                        return self.give_up(NotRecorded::TooLarge);
                    }
                    let kind = classify(&event);
                    events.push((offset, event));
                    if kind == EventKind::Error {
                        return self.give_up(NotRecorded::ErrorEvent);
                    }
                    if kind.is_clean_end() {
                        return self.complete();
                    }
                }
                if splitter.pending() > self.cap {
                    return self.give_up(NotRecorded::TooLarge);
                }
                None
            }
        }
    }

    /// The body ended cleanly: a plain answer is complete, a stream that
    /// has not seen its terminal event is not.
    pub(super) fn finish(&mut self) -> Option<Recording> {
        if self.state != State::Open {
            return None;
        }
        match self.capture {
            Capture::Whole(_) => self.complete(),
            Capture::Events { .. } => self.give_up(NotRecorded::NoFinalEvent),
        }
    }

    pub(super) fn give_up(&mut self, why: NotRecorded) -> Option<Recording> {
        self.state = State::NotRecorded(why);
        self.capture = Capture::Whole(Vec::new());
        None
    }

    fn complete(&mut self) -> Option<Recording> {
        if !self.recordable {
            return self.give_up(NotRecorded::Status);
        }
        self.state = State::Committed;
        let capture = std::mem::replace(&mut self.capture, Capture::Whole(Vec::new()));
        Some(match capture {
            Capture::Whole(mut chunks) => {
                let body = match chunks.len() {
                    1 => chunks.pop().unwrap_or_default(),
                    _ => Bytes::from(chunks.concat()),
                };
                self.exchange.recording(body, &self.redactor)
            }
            Capture::Events { events, .. } => {
                let mut body = BytesMut::with_capacity(self.bytes);
                let mut lengths = Vec::with_capacity(events.len());
                for (offset_ms, event) in &events {
                    body.extend_from_slice(event);
                    lengths.push(StreamEvent {
                        offset_ms: *offset_ms,
                        len: event.len(),
                    });
                }
                let mut recording = self.exchange.recording(body.freeze(), &self.redactor);
                // A stream's identity is in its chunks, not in the body as a whole.
                (recording.meta.model, recording.meta.system_fingerprint) =
                    stream_identity(events.iter().map(|(_, e)| &e[..]));
                recording.meta.stream = Some(lengths);
                recording
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn errors_are_recorded_only_when_asked() {
        assert!(should_record(StatusCode::OK, false));
        assert!(!should_record(StatusCode::TOO_MANY_REQUESTS, false));
        assert!(should_record(StatusCode::TOO_MANY_REQUESTS, true));
        assert!(!should_record(StatusCode::FOUND, true));
    }

    pub(crate) fn exchange(content_type: &'static str) -> Exchange {
        let canonical = Canonical::new(
            &crate::key::RequestParts {
                method: "POST",
                path: "/v1/chat/completions",
                query: None,
                content_type: None,
                body: br#"{"stream":true}"#,
                namespace: None,
                credential: None,
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            &crate::key::KeyRules::default(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        Exchange {
            key: canonical.key(),
            canonical,
            status: StatusCode::OK,
            headers,
            sent: Instant::now(),
        }
    }

    fn record(chunks: &[&'static str], cap: usize) -> (State, Option<Recording>) {
        let mut recorder = Recorder::new(
            exchange("text/event-stream"),
            Redactor::default(),
            cap,
            true,
        );
        let mut recording = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let chunk = Bytes::from_static(chunk.as_bytes());
            let offset = Duration::from_millis(10 * i as u64);
            recording = recording.or(recorder.push_at(&chunk, offset));
        }
        recording = recording.or(recorder.finish());
        (recorder.state(), recording)
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
        assert_eq!(state, State::Committed);
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
        let (state, entry) = record(&["data: {}\n\n", "data: {\"x\":1}\n\n"], 1024);
        assert_eq!(state, State::NotRecorded(NotRecorded::NoFinalEvent));
        assert!(entry.is_none());
        let (state, entry) = record(
            &[
                "data: {}\n\n",
                "data: {\"error\":{\"message\":\"boom\"}}\n\n",
                "data: [DONE]\n\n",
            ],
            1024,
        );
        assert_eq!(state, State::NotRecorded(NotRecorded::ErrorEvent));
        assert!(entry.is_none());
        let (state, entry) = record(&["data: {}\n\n", "data: [DONE]\n\n"], 12);
        assert_eq!(state, State::NotRecorded(NotRecorded::TooLarge));
        assert!(entry.is_none());
    }
}
