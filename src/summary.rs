//! What a recording amounts to in a list or a tally, read once from its
//! bytes: the model and token usage it records ([`usage_of`]), the text of
//! its request and answer, and the one-row summary the web view's list
//! shows and filters ([`Row`]). `llmtape stats` and the admin endpoints
//! (`crate::serve::ui_api`) both read recordings through here, so they
//! count alike.
//!
//! Usage is what the upstream reported: OpenAI's `prompt_tokens` /
//! `completion_tokens` (chat, completions, embeddings) or `input_tokens` /
//! `output_tokens` (Responses API, Anthropic Messages); for a stream, the
//! last values its events carry (OpenAI's final chunk with
//! `stream_options.include_usage`, Anthropic's `message_start` and
//! `message_delta`, the Responses API's `response.completed`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::audit::answer_of;
use crate::key::RequestKey;
use crate::record::recording::{Recording, RequestBody};
use crate::record::sse;

/// Characters of the answer a row previews.
pub const PREVIEW_CHARS: usize = 120;

/// Characters of the request's text, and of the answer's, that a row keeps
/// (lowercased) for the text filter: enough for the question and the start
/// of the answer, bounded so 100,000 rows stay within tens of megabytes.
pub const SEARCH_CHARS: usize = 320;

/// The model and tokens one recording's answer reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The answer's `model`, if it names one.
    pub model: Option<String>,
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
}

/// The usage in an answer's body, or in a stream's events (each an SSE
/// event's bytes); zero tokens when it reports none.
pub fn usage_of(body: &[u8], events: Option<&[(u64, Bytes)]>) -> Usage {
    let mut usage = Usage::default();
    match events {
        None => {
            if let Ok(doc) = serde_json::from_slice::<Value>(body) {
                absorb(&doc, &mut usage);
            }
        }
        Some(events) => {
            for (_, event) in events {
                let (_, data) = sse::fields(event);
                if let Ok(doc) = serde_json::from_str::<Value>(&data) {
                    absorb(&doc, &mut usage);
                }
            }
        }
    }
    usage
}

/// The usage a recording reports; its model is the recorded one.
pub fn recording_usage(recording: &Recording) -> Usage {
    let events = recording.meta.stream.as_ref().map(|_| recording.events());
    let mut usage = usage_of(&recording.body, events.as_deref());
    if recording.meta.model.is_some() {
        usage.model.clone_from(&recording.meta.model);
    }
    usage
}

/// Takes the model and token counts from one JSON document (a body or an
/// event), the later values winning.
fn absorb(doc: &Value, usage: &mut Usage) {
    // Anthropic's message_start and the Responses API's events nest the
    // answer one level down.
    for holder in [doc, &doc["message"], &doc["response"]] {
        if let Some(model) = holder.get("model").and_then(Value::as_str) {
            if usage.model.is_none() {
                usage.model = Some(model.to_string());
            }
        }
        let Some(u) = holder.get("usage").filter(|u| u.is_object()) else {
            continue;
        };
        let count = |names: [&str; 2]| names.iter().find_map(|n| u.get(*n).and_then(Value::as_u64));
        if let Some(input) = count(["prompt_tokens", "input_tokens"]) {
            usage.input_tokens = input;
        }
        if let Some(output) = count(["completion_tokens", "output_tokens"]) {
            usage.output_tokens = output;
        }
    }
}

/// The answer's text: each choice's text (or, for answers without
/// choices, such as embeddings, the body's content), one per line.
pub fn answer_text(recording: &Recording) -> String {
    let answer = answer_of(recording);
    if let Some(other) = answer.other {
        return other;
    }
    let texts: Vec<&str> = answer
        .choices
        .iter()
        .map(|c| {
            if c.text.is_empty() {
                c.tool_calls.as_str()
            } else {
                c.text.as_str()
            }
        })
        .collect();
    texts.join("\n")
}

/// The request's text: the string values of its JSON body (messages,
/// prompt, input, ...), in order, separated by spaces; a text body as it
/// is.
pub fn request_text(body: &RequestBody) -> String {
    fn strings(value: &Value, out: &mut String) {
        match value {
            Value::String(s) => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(s);
            }
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    match body {
        RequestBody::Json(value) => {
            let mut out = String::new();
            strings(value, &mut out);
            out
        }
        RequestBody::Text(text) => text.clone(),
        RequestBody::Empty | RequestBody::Base64(_) => String::new(),
    }
}

/// At most the first `n` characters of `text`.
pub fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// One recording as the web view lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The key.
    pub key: RequestKey,
    /// Request method.
    pub method: Arc<str>,
    /// Request path.
    pub path: Arc<str>,
    /// The route's name (`chat.completions`, a `[routes]` pattern), or ""
    /// for a path no route caches any more.
    pub route: Arc<str>,
    /// The answer's model ("" when it names none).
    pub model: Arc<str>,
    /// `x-llmtape-namespace` ("" when none).
    pub namespace: Arc<str>,
    /// The fingerprint ("" when none).
    pub fingerprint: Arc<str>,
    /// RFC 3339, as recorded.
    pub recorded_at: Box<str>,
    /// The answer's status.
    pub status: u16,
    /// Whether the answer is a stream.
    pub stream: bool,
    /// Bytes of the answer's body.
    pub size: usize,
    /// A repeat sequence's call number.
    pub call: Option<u32>,
    /// Earlier recordings of the key.
    pub history: usize,
    /// The first [`PREVIEW_CHARS`] characters of the answer's text.
    pub preview: Box<str>,
    /// Lowercased starts of the request's and the answer's text, joined by
    /// a newline, for the text filter.
    pub search: Box<str>,
}

/// Shares the few distinct strings rows repeat (models, routes, paths):
/// one allocation each, however many rows.
#[derive(Debug, Default)]
pub struct Interner {
    seen: HashMap<Box<str>, Arc<str>>,
}

impl Interner {
    /// The shared copy of `text`.
    pub fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.seen.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.seen.insert(Box::from(text), shared.clone());
        shared
    }
}

impl Row {
    /// The row of `recording`, which has `history` earlier recordings and
    /// is on route `route`.
    pub fn of(recording: &Recording, route: &str, history: usize, names: &mut Interner) -> Row {
        let meta = &recording.meta;
        let answer = answer_text(recording);
        let request = request_text(&meta.request.body);
        let mut search = first_chars(&request, SEARCH_CHARS).to_lowercase();
        search.push('\n');
        search.push_str(&first_chars(&answer, SEARCH_CHARS).to_lowercase());
        Row {
            key: meta.key,
            method: names.get(&meta.request.method),
            path: names.get(&meta.request.path),
            route: names.get(route),
            model: names.get(meta.model.as_deref().unwrap_or("")),
            namespace: names.get(&meta.request.namespace),
            fingerprint: names.get(meta.fingerprint().unwrap_or("")),
            recorded_at: meta.recorded_at.as_str().into(),
            status: meta.response.status,
            stream: meta.stream.is_some(),
            size: recording.body.len(),
            call: meta.call,
            history,
            preview: first_chars(&answer, PREVIEW_CHARS).into(),
            search: search.into(),
        }
    }

    /// The row as the JSON endpoints give it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "key": self.key.to_hex(),
            "method": &*self.method,
            "path": &*self.path,
            "route": &*self.route,
            "model": &*self.model,
            "namespace": &*self.namespace,
            "fingerprint": &*self.fingerprint,
            "recorded_at": &*self.recorded_at,
            "status": self.status,
            "stream": self.stream,
            "size": self.size,
            "call": self.call,
            "history": self.history,
            "preview": &*self.preview,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::{test_entry, StreamEvent};
    use serde_json::json;

    #[test]
    fn usage_is_read_from_each_answer_shape() {
        let chat = json!({"model": "gpt-4o-mini-2024-07-18", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}});
        let u = usage_of(chat.to_string().as_bytes(), None);
        assert_eq!(
            (u.model.as_deref(), u.input_tokens, u.output_tokens),
            (Some("gpt-4o-mini-2024-07-18"), 12, 5)
        );
        let anthropic = json!({"type": "message", "model": "claude-sonnet-4-5", "content": [],
            "usage": {"input_tokens": 30, "output_tokens": 9}});
        let u = usage_of(anthropic.to_string().as_bytes(), None);
        assert_eq!((u.input_tokens, u.output_tokens), (30, 9));
        assert_eq!(usage_of(b"not json", None), Usage::default());

        let events: Vec<(u64, Bytes)> = [
            r#"{"type":"message_start","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":40,"output_tokens":1}}}"#,
            r#"{"type":"content_block_delta","delta":{"text":"hi"}}"#,
            r#"{"type":"message_delta","usage":{"output_tokens":22}}"#,
        ]
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, Bytes::from(format!("event: x\ndata: {d}\n\n"))))
        .collect();
        let u = usage_of(b"", Some(&events));
        assert_eq!(
            (u.model.as_deref(), u.input_tokens, u.output_tokens),
            (Some("claude-haiku-4-5"), 40, 22)
        );
        let openai: Vec<(u64, Bytes)> = [
            r#"{"model":"gpt-4o","choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
            "[DONE]",
        ]
        .iter()
        .map(|d| (0, Bytes::from(format!("data: {d}\n\n"))))
        .collect();
        let u = usage_of(b"", Some(&openai));
        assert_eq!((u.input_tokens, u.output_tokens), (7, 3));
    }

    #[test]
    fn a_row_has_the_preview_and_lowercased_search_text() {
        let body = json!({"model": "gpt-4o", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"content": "Paris Is Lovely"}, "finish_reason": "stop"}]});
        let mut entry = test_entry(
            &"ab".repeat(32),
            body.to_string(),
            "fp_1",
            Some("gpt-4o"),
            "2026-01-01T00:00:00.000Z",
        );
        entry.meta.request.body = RequestBody::Json(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Capital of FRANCE?"}]}),
        );
        let mut names = Interner::default();
        let row = Row::of(&entry, "chat.completions", 2, &mut names);
        assert_eq!(&*row.preview, "Paris Is Lovely");
        assert!(row.search.contains("capital of france?"), "{}", row.search);
        assert!(row.search.contains("paris is lovely"));
        assert_eq!(
            (&*row.model, &*row.fingerprint, row.history),
            ("gpt-4o", "fp_1", 2)
        );
        let again = Row::of(&entry, "chat.completions", 0, &mut names);
        assert!(Arc::ptr_eq(&row.model, &again.model), "interned");
        assert_eq!(row.to_json()["key"], "ab".repeat(32));
        assert_eq!(first_chars("héllo", 2), "hé");

        let mut stream = entry.clone();
        let events = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        stream.body = Bytes::from(events);
        stream.meta.stream = Some(vec![
            StreamEvent {
                offset_ms: 1,
                len: events.find("data: [DONE]").unwrap(),
            },
            StreamEvent {
                offset_ms: 2,
                len: "data: [DONE]\n\n".len(),
            },
        ]);
        let row = Row::of(&stream, "chat.completions", 0, &mut names);
        assert!(row.stream);
        assert_eq!(&*row.preview, "Hi");
        assert_eq!(recording_usage(&stream).model.as_deref(), Some("gpt-4o"));
    }
}
