//! Server-sent events: finding event boundaries in a byte stream and
//! telling a stream's clean end from an error.
//!
//! Owns the SSE wire rules that recording needs (WHATWG HTML §9.2): an event
//! ends at a blank line, with `\n`, `\r\n` or `\r` line endings; `event:`
//! names it, `data:` lines carry it. It does not forward or store anything.
//!
//! Three stream dialects end differently: chat and completions with
//! `data: [DONE]`, the Responses API with `response.completed` (or
//! `response.incomplete`), Anthropic Messages with `event: message_stop`;
//! an `error` event (and `response.failed`) spoils any of them.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// Splits a byte stream into whole events, across any chunking.
///
/// Events that lie wholly inside one chunk are zero-copy slices of it; only
/// an event split over several reads is copied into a buffer.
#[derive(Debug, Default)]
pub struct EventSplitter {
    pending: BytesMut,
}

impl EventSplitter {
    /// A splitter with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &Bytes) -> Vec<Bytes> {
        let mut events = Vec::new();
        let mut rest = chunk.clone();
        if !self.pending.is_empty() {
            // Only the tail of `pending` can combine with the new chunk into
            // a terminator, so scan from a few bytes before the seam.
            let seam = self.pending.len();
            self.pending.extend_from_slice(&rest);
            match event_end(&self.pending, seam.saturating_sub(3)) {
                Some(end) => {
                    let tail = self.pending.split_off(end);
                    events.push(std::mem::take(&mut self.pending).freeze());
                    rest = tail.freeze();
                }
                None => return events,
            }
        }
        while let Some(end) = event_end(&rest, 0) {
            events.push(rest.split_to(end));
        }
        self.pending.extend_from_slice(&rest);
        events
    }

    /// Bytes received that do not (yet) form a whole event.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The index just past the first blank-line terminator at or after `from`.
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        match buf[i] {
            b'\n' => {
                // "\n\n" or "\n\r\n"
                match (buf.get(i + 1), buf.get(i + 2)) {
                    (Some(b'\n'), _) => return Some(i + 2),
                    (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                    _ => {}
                }
            }
            // "\r\r" ends an event; "\r\n" is handled at the '\n'.
            b'\r' if buf.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

/// True when a response is a server-sent-event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// What an event means for the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An ordinary event (a chunk, a delta, a usage chunk).
    Data,
    /// `data: [DONE]`: the end of a chat or completions stream.
    Done,
    /// A typed terminal event: the Responses API's `response.completed`
    /// and `response.incomplete`, Anthropic's `message_stop`.
    Terminal,
    /// An error event, or a chunk that carries an `error` object.
    Error,
}

impl EventKind {
    /// True when the stream ended cleanly with this event.
    pub fn is_clean_end(self) -> bool {
        matches!(self, EventKind::Done | EventKind::Terminal)
    }
}

/// The `event:` name and the joined `data:` lines of one event.
pub fn fields(event: &[u8]) -> (Option<&str>, String) {
    let text = std::str::from_utf8(event).unwrap_or("");
    let mut name = None;
    let mut data = String::new();
    for line in text.split(['\n', '\r']) {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => name = Some(value),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    (name, data)
}

/// Classifies an event. JSON is parsed only when the text could hold an
/// error or a Responses API type, so ordinary chunks cost a substring scan.
pub fn classify(event: &[u8]) -> EventKind {
    let (name, data) = fields(event);
    if data.trim() == "[DONE]" {
        return EventKind::Done;
    }
    if let Some(kind) = name.and_then(kind_of_type) {
        return kind;
    }
    if !(data.contains("\"error\"") || data.contains("response.") || data.contains("message_stop"))
    {
        return EventKind::Data;
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: Option<String>,
        error: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Probe>(&data) {
        Ok(Probe { error: Some(e), .. }) if !e.is_null() => EventKind::Error,
        Ok(Probe { kind: Some(t), .. }) => kind_of_type(&t).unwrap_or(EventKind::Data),
        _ => EventKind::Data,
    }
}

fn kind_of_type(name: &str) -> Option<EventKind> {
    match name {
        "response.completed" | "response.incomplete" | "message_stop" => Some(EventKind::Terminal),
        "error" | "response.failed" => Some(EventKind::Error),
        _ => None,
    }
}

/// `model` and `system_fingerprint` from a stream's events: the first of
/// each found, at the top level (chat and completions chunks), inside
/// `response` (Responses API events) or inside `message` (Anthropic's
/// `message_start`).
pub fn stream_identity<'a>(
    events: impl IntoIterator<Item = &'a [u8]>,
) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Inner {
        model: Option<String>,
        system_fingerprint: Option<String>,
    }
    #[derive(Deserialize)]
    struct Chunk {
        model: Option<String>,
        system_fingerprint: Option<String>,
        response: Option<Inner>,
        message: Option<Inner>,
    }
    let (mut model, mut fingerprint) = (None, None);
    for event in events {
        let (_, data) = fields(event);
        let Ok(chunk) = serde_json::from_str::<Chunk>(&data) else {
            continue;
        };
        let (inner_model, inner_fp) = chunk
            .response
            .or(chunk.message)
            .map(|r| (r.model, r.system_fingerprint))
            .unwrap_or_default();
        model = model.or(chunk.model).or(inner_model);
        fingerprint = fingerprint.or(chunk.system_fingerprint).or(inner_fp);
        if model.is_some() && fingerprint.is_some() {
            break;
        }
    }
    (model, fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n\
data: [DONE]\n\n";

    #[test]
    fn splits_whole_events_in_one_chunk() {
        let mut splitter = EventSplitter::new();
        let events = splitter.push(&Bytes::from_static(STREAM.as_bytes()));
        assert_eq!(events.len(), 3);
        assert_eq!(events.concat(), STREAM.as_bytes());
        assert_eq!(splitter.pending(), 0);
        assert_eq!(classify(&events[2]), EventKind::Done);
    }

    #[test]
    fn handles_crlf_and_cr_line_endings() {
        let mut splitter = EventSplitter::new();
        let events = splitter.push(&Bytes::from_static(
            b"data: a\r\n\r\ndata: b\r\rdata: c\n\r\n",
        ));
        assert_eq!(events.len(), 3);
        assert_eq!(&events[1][..], b"data: b\r\r");
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_events(cuts in prop::collection::vec(0usize..STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let mut splitter = EventSplitter::new();
            let mut events = Vec::new();
            let mut last = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                events.extend(splitter.push(&Bytes::copy_from_slice(&bytes[last..cut])));
                last = cut;
            }
            prop_assert_eq!(events.len(), 3);
            prop_assert_eq!(events.concat(), bytes.to_vec());
        }
    }

    #[test]
    fn classifies_ends_and_errors() {
        assert_eq!(
            classify(b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"error\\\"\"}}]}\n\n"),
            EventKind::Data
        );
        assert_eq!(
            classify(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
            EventKind::Error
        );
        assert_eq!(
            classify(b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"),
            EventKind::Terminal
        );
        assert_eq!(
            classify(b"event: response.failed\ndata: {}\n\n"),
            EventKind::Error
        );
        assert_eq!(classify(b"event: error\ndata: {}\n\n"), EventKind::Error);
        assert_eq!(
            classify(b"data: {\"type\":\"response.completed\",\"response\":{}}\n\n"),
            EventKind::Terminal
        );
        assert_eq!(classify(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\"}\n\n"), EventKind::Data);
        assert_eq!(classify(b": keep-alive comment\n\n"), EventKind::Data);
    }

    #[test]
    fn anthropic_streams_end_at_message_stop_and_spoil_at_error() {
        assert_eq!(
            classify(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            EventKind::Terminal
        );
        assert_eq!(
            classify(b"data: {\"type\":\"message_stop\"}\n\n"),
            EventKind::Terminal,
            "the type alone, without an event line"
        );
        assert_eq!(
            classify(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"),
            EventKind::Error
        );
        for data in [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_stop \\\"error\\\"\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        ] {
            assert_eq!(classify(data.as_bytes()), EventKind::Data, "{data}");
        }
    }

    #[test]
    fn identity_comes_from_chunks_or_the_response_object() {
        let mut splitter = EventSplitter::new();
        let events = splitter.push(&Bytes::from_static(STREAM.as_bytes()));
        let (model, fp) = stream_identity(events.iter().map(|e| &e[..]));
        assert_eq!(
            (model.as_deref(), fp.as_deref()),
            (Some("gpt-4o"), Some("fp_1"))
        );
        let anthropic = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\"}}\n\n";
        let (model, fp) = stream_identity([&anthropic[..]]);
        assert_eq!((model.as_deref(), fp), (Some("claude-sonnet-4-5"), None));
        let responses = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4.1\"}}\n\n";
        let (model, fp) = stream_identity([&responses[..]]);
        assert_eq!((model.as_deref(), fp), (Some("gpt-4.1"), None));
    }
}
