//! Fixtures: recordings as reviewable files, and a read-mostly recording
//! source that serves straight from a folder of them.
//!
//! One pretty-printed JSON file per recording, fields in a fixed order, at
//! `<route>/<model>/<first 16 hex of key>.json`. Bodies are kept readable:
//! a JSON body is stored as JSON together with the rendering that
//! reproduces its exact bytes (compact or pretty, with or without a final
//! newline), a stream as its list of events, text as text, and binary as
//! base64: bytes that are not UTF-8, and every answer whose content type
//! says it is binary (`audio/mpeg`, `image/png`, ...), even when its bytes
//! happen to be valid UTF-8. Converting an [`Recording`] to a fixture and back is
//! lossless; a test checks every field and the bytes.
//!
//! Uses `entry`, `key` and `route` only; knows nothing of sled or HTTP.

use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key::RequestKey;
use crate::record::recording::{
    RecordedRequest, RecordedResponse, Recording, RecordingMeta, StreamEvent,
};
use crate::route::Route;

/// Version of the fixture file format.
pub const FIXTURE_FORMAT: u32 = 1;

/// Fixture files larger than this are refused: a recording is at most a
/// 64 MiB stream, and its fixture text is at most a few times that.
const MAX_FIXTURE_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// One fixture file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    /// Format version ([`FIXTURE_FORMAT`]).
    pub llmtape_fixture: u32,
    /// The request key, 64 hex characters.
    pub key: String,
    /// The canonical request.
    pub request: RecordedRequest,
    /// Status, headers and body.
    pub response: FixtureResponse,
    /// `system_fingerprint` of the answer.
    pub system_fingerprint: Option<String>,
    /// `model` of the answer.
    pub model: Option<String>,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// Upstream latency in milliseconds.
    pub latency_ms: u64,
    /// With `x-llmtape-repeats: sequence`: which call of its request in a
    /// run this is (older fixtures have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<u32>,
    /// Earlier recordings of the same request, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<FixtureRecording>,
}

/// One recorded answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRecording {
    /// Status, headers and body.
    pub response: FixtureResponse,
    /// `system_fingerprint` of the answer.
    pub system_fingerprint: Option<String>,
    /// `model` of the answer.
    pub model: Option<String>,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// Upstream latency in milliseconds.
    pub latency_ms: u64,
}

/// The response part of a fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureResponse {
    /// HTTP status.
    pub status: u16,
    /// Recorded headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: FixtureBody,
}

/// A response body in its most readable lossless form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FixtureBody {
    /// JSON whose rendering in `format` gives back the exact bytes.
    Json {
        /// How the bytes were laid out.
        format: JsonFormat,
        /// The document, keys in their original order.
        value: Value,
    },
    /// UTF-8 text.
    Text {
        /// The text.
        value: String,
    },
    /// Anything else.
    Base64 {
        /// Standard base64.
        value: String,
    },
    /// A server-sent-event stream.
    Events {
        /// The events in order.
        events: Vec<FixtureEvent>,
    },
}

/// How a JSON body was laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonFormat {
    /// No whitespace.
    Compact,
    /// No whitespace, then `\n`.
    CompactNewline,
    /// Two-space indentation.
    Pretty,
    /// Two-space indentation, then `\n`.
    PrettyNewline,
}

impl JsonFormat {
    const ALL: [JsonFormat; 4] = [
        JsonFormat::Compact,
        JsonFormat::CompactNewline,
        JsonFormat::Pretty,
        JsonFormat::PrettyNewline,
    ];

    fn render(self, value: &Value) -> Vec<u8> {
        let mut out = match self {
            JsonFormat::Compact | JsonFormat::CompactNewline => serde_json::to_vec(value),
            JsonFormat::Pretty | JsonFormat::PrettyNewline => serde_json::to_vec_pretty(value),
        }
        .expect("a Value always serialises");
        if matches!(self, JsonFormat::CompactNewline | JsonFormat::PrettyNewline) {
            out.push(b'\n');
        }
        out
    }
}

/// One server-sent event. The usual `[event: NAME\n]data: DATA\n\n` shape
/// is stored as `event` and `data` (JSON when compact JSON reproduces it);
/// anything else as `raw` text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEvent {
    /// Milliseconds from the request to this event.
    pub offset_ms: u64,
    /// The `event:` name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The `data:` payload: JSON, or a string when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The whole event as text, when it is not in the usual shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The whole event as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
}

/// A fixture file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid fixture.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        message: String,
    },
}

/// Converts a recording (and its history) to a fixture.
pub fn to_fixture(entry: &Recording, history: &[Recording]) -> FixtureFile {
    let current = recording_of(entry);
    FixtureFile {
        llmtape_fixture: FIXTURE_FORMAT,
        key: entry.meta.key.to_hex(),
        request: entry.meta.request.clone(),
        response: current.response,
        system_fingerprint: current.system_fingerprint,
        model: current.model,
        recorded_at: current.recorded_at,
        latency_ms: current.latency_ms,
        call: entry.meta.call,
        history: history.iter().map(recording_of).collect(),
    }
}

impl FixtureFile {
    /// The current recording, in the shape history items have.
    pub fn current(&self) -> FixtureRecording {
        FixtureRecording {
            response: self.response.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            model: self.model.clone(),
            recorded_at: self.recorded_at.clone(),
            latency_ms: self.latency_ms,
        }
    }
}

fn recording_of(entry: &Recording) -> FixtureRecording {
    let m = &entry.meta;
    let body = match &m.stream {
        Some(_) => FixtureBody::Events {
            events: entry
                .events()
                .into_iter()
                .map(|(offset_ms, bytes)| fixture_event(offset_ms, &bytes))
                .collect(),
        },
        None => readable_body(&entry.body, entry.content_type()),
    };
    FixtureRecording {
        response: FixtureResponse {
            status: m.response.status,
            headers: m.response.headers.clone(),
            body,
        },
        system_fingerprint: m.system_fingerprint.clone(),
        model: m.model.clone(),
        recorded_at: m.recorded_at.clone(),
        latency_ms: m.latency_ms,
    }
}

/// The most readable form of `bytes` that gives them back exactly; an
/// answer of a binary `content_type` is base64 whatever its bytes.
fn readable_body(bytes: &[u8], content_type: Option<&str>) -> FixtureBody {
    if content_type.is_some_and(is_binary_type) {
        return FixtureBody::Base64 {
            value: base64::engine::general_purpose::STANDARD.encode(bytes),
        };
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        if let Some(format) = JsonFormat::ALL
            .into_iter()
            .find(|f| f.render(&value) == bytes)
        {
            return FixtureBody::Json { format, value };
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => FixtureBody::Text {
            value: text.to_string(),
        },
        Err(_) => FixtureBody::Base64 {
            value: base64::engine::general_purpose::STANDARD.encode(bytes),
        },
    }
}

/// True for a content type whose bodies are bytes, not text: audio, images,
/// video, fonts and the usual binary application types. SVG and other
/// `+xml` or `+json` types are text.
pub fn is_binary_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    if sub.ends_with("+xml") || sub.ends_with("+json") {
        return false;
    }
    match top {
        "audio" | "image" | "video" | "font" => true,
        "application" => matches!(
            sub,
            "octet-stream" | "pdf" | "zip" | "gzip" | "x-tar" | "wasm" | "vnd.apache.parquet"
        ),
        _ => false,
    }
}

fn fixture_event(offset_ms: u64, bytes: &[u8]) -> FixtureEvent {
    let mut event = FixtureEvent {
        offset_ms,
        event: None,
        data: None,
        raw: None,
        raw_base64: None,
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        event.raw_base64 = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        return event;
    };
    let (name, data) = crate::record::sse::fields(bytes);
    let data_value = match serde_json::from_str::<Value>(&data) {
        Ok(value) if serde_json::to_string(&value).ok().as_deref() == Some(data.as_str()) => value,
        _ => Value::String(data.clone()),
    };
    event.event = name.map(String::from);
    event.data = Some(data_value);
    if render_event(&event).as_deref() != Some(bytes) {
        event.event = None;
        event.data = None;
        event.raw = Some(text.to_string());
    }
    event
}

/// The bytes of an event in the usual shape; `None` if it has no data.
fn render_event(event: &FixtureEvent) -> Option<Vec<u8>> {
    let data = match event.data.as_ref()? {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other).expect("a Value always serialises"),
    };
    let mut out = String::new();
    if let Some(name) = &event.event {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Some(out.into_bytes())
}

/// Converts a fixture back to its recording and history.
pub fn from_fixture(file: &FixtureFile) -> Result<(Recording, Vec<Recording>), String> {
    if file.llmtape_fixture != FIXTURE_FORMAT {
        return Err(format!(
            "llmtape_fixture is {}, this llmtape reads version {FIXTURE_FORMAT}",
            file.llmtape_fixture
        ));
    }
    let Some(key) = RequestKey::from_hex(&file.key) else {
        return Err(format!("key {:?} is not 64 hex characters", file.key));
    };
    let entry = |recording: &FixtureRecording| -> Result<Recording, String> {
        let (body, stream) = body_bytes(&recording.response.body)?;
        Ok(Recording {
            meta: RecordingMeta {
                key,
                request: file.request.clone(),
                response: RecordedResponse {
                    status: recording.response.status,
                    headers: recording.response.headers.clone(),
                },
                system_fingerprint: recording.system_fingerprint.clone(),
                model: recording.model.clone(),
                recorded_at: recording.recorded_at.clone(),
                latency_ms: recording.latency_ms,
                stream,
                call: file.call,
            },
            body,
        })
    };
    let current = entry(&file.current())?;
    let history = file
        .history
        .iter()
        .enumerate()
        .map(|(i, r)| entry(r).map_err(|e| format!("history[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok((current, history))
}

fn body_bytes(body: &FixtureBody) -> Result<(Bytes, Option<Vec<StreamEvent>>), String> {
    let b64 = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("invalid base64: {e}"))
    };
    Ok(match body {
        FixtureBody::Json { format, value } => (Bytes::from(format.render(value)), None),
        FixtureBody::Text { value } => (Bytes::from(value.clone()), None),
        FixtureBody::Base64 { value } => (Bytes::from(b64(value)?), None),
        FixtureBody::Events { events } => {
            let mut body = BytesMut::new();
            let mut marks = Vec::with_capacity(events.len());
            for (i, event) in events.iter().enumerate() {
                let bytes = match (&event.raw, &event.raw_base64) {
                    (Some(raw), None) => raw.clone().into_bytes(),
                    (None, Some(encoded)) => b64(encoded)?,
                    (None, None) => render_event(event)
                        .ok_or_else(|| format!("events[{i}] has neither data nor raw"))?,
                    (Some(_), Some(_)) => {
                        return Err(format!("events[{i}] has both raw and raw_base64"))
                    }
                };
                marks.push(StreamEvent {
                    offset_ms: event.offset_ms,
                    len: bytes.len(),
                });
                body.extend_from_slice(&bytes);
            }
            (body.freeze(), Some(marks))
        }
    })
}

/// The text written for a fixture: pretty JSON and a final newline.
pub fn render(file: &FixtureFile) -> String {
    let mut text = serde_json::to_string_pretty(file).expect("a fixture always serialises");
    text.push('\n');
    text
}

/// Parses fixture text, naming the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<FixtureFile, FixtureError> {
    serde_json::from_str(text).map_err(|e| FixtureError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Where a recording's fixture lives, relative to the fixtures folder:
/// `<route>/<model>/<first 16 hex of key>.json`.
pub fn relative_path(entry: &Recording) -> PathBuf {
    let request = &entry.meta.request;
    let method = http::Method::from_bytes(request.method.as_bytes()).unwrap_or(http::Method::POST);
    let route = Route::classify(&method, &request.path)
        .map(|r| r.as_str().to_string())
        .unwrap_or_else(|| sanitize(request.path.trim_matches('/')));
    let model = entry
        .meta
        .model
        .as_deref()
        .map(sanitize)
        .or_else(|| requested_model(&request.body).map(|m| sanitize(&m)))
        .unwrap_or_else(|| "_".to_string());
    let hex = entry.meta.key.to_hex();
    let short = &hex[..16];
    PathBuf::from(route)
        .join(model)
        .join(format!("{short}.json"))
}

/// The model a request asked for: `model` of a JSON body, or the text of
/// the `model` part of a multipart form (transcriptions, image edits).
pub fn requested_model(body: &crate::record::recording::RequestBody) -> Option<String> {
    use crate::record::recording::RequestBody;
    let RequestBody::Json(value) = body else {
        return None;
    };
    if let Some(model) = value.get("model").and_then(Value::as_str) {
        return Some(model.to_string());
    }
    // A multipart body is recorded as its parts: headers and base64 content.
    value.as_array()?.iter().find_map(|part| {
        let named_model = part.get("headers")?.as_array()?.iter().any(|h| {
            h.as_str().is_some_and(|h| {
                h.starts_with("content-disposition:")
                    && h.split(';').any(|p| p.trim() == "name=\"model\"")
            })
        });
        if !named_model {
            return None;
        }
        let content = part.get("content_base64")?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .ok()?;
        String::from_utf8(bytes).ok()
    })
}

fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "_".to_string()
    } else {
        trimmed.chars().take(80).collect()
    }
}

/// Every `*.json` file under `root`, sorted, skipping hidden entries.
pub fn fixture_files(root: &Path) -> Result<Vec<PathBuf>, FixtureError> {
    let io = |path: &Path, source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let item = item.map_err(|e| io(&dir, e))?;
            let path = item.path();
            if item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = item.file_type().map_err(|e| io(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one fixture file into its recording and history.
pub fn read_fixture(path: &Path) -> Result<(FixtureFile, Recording, Vec<Recording>), FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FIXTURE_FILE_BYTES {
        return Err(FixtureError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "{size} bytes is larger than a fixture can be ({MAX_FIXTURE_FILE_BYTES})"
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file = parse(path, &text)?;
    let (entry, history) = from_fixture(&file).map_err(|message| FixtureError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok((file, entry, history))
}

/// Writes `text` to `path` atomically (temporary file, then rename), so a
/// crash never leaves half a fixture. Returns false if the file already
/// held exactly this text.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool, FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::RequestBody;

    fn entry(body: &'static [u8], stream: Option<Vec<StreamEvent>>) -> Recording {
        Recording {
            meta: RecordingMeta {
                key: RequestKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap(),
                request: RecordedRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    query: String::new(),
                    namespace: "suite".into(),
                    headers: Vec::new(),
                    body: RequestBody::Json(serde_json::json!({"model": "gpt-4o-mini", "seed": 1})),
                },
                response: RecordedResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                },
                system_fingerprint: Some("fp_1".into()),
                model: Some("gpt-4o-mini".into()),
                recorded_at: "2026-11-22T00:00:00.000Z".into(),
                latency_ms: 42,
                stream,
                call: None,
            },
            body: Bytes::from_static(body),
        }
    }

    fn round_trip(original: &Recording) -> FixtureFile {
        let file = to_fixture(original, std::slice::from_ref(original));
        let text = render(&file);
        let parsed = parse(Path::new("t.json"), &text).unwrap();
        assert_eq!(parsed, file);
        let (back, history) = from_fixture(&parsed).unwrap();
        assert_eq!(&back, original);
        assert_eq!(history, vec![original.clone()]);
        assert_eq!(
            render(&to_fixture(&back, &history)),
            text,
            "re-export is byte-stable"
        );
        file
    }

    #[test]
    fn pretty_json_bodies_stay_json_and_exact() {
        let body = b"{\n  \"id\": \"chatcmpl-1\",\n  \"z\": 1.0,\n  \"a\": [],\n  \"n\": 1e-7\n}\n";
        let file = round_trip(&entry(body, None));
        assert!(matches!(
            file.response.body,
            FixtureBody::Json {
                format: JsonFormat::PrettyNewline,
                ..
            }
        ));
    }

    #[test]
    fn compact_json_and_odd_layouts() {
        let file = round_trip(&entry(b"{\"b\":1,\"a\":2}", None));
        assert!(matches!(
            file.response.body,
            FixtureBody::Json {
                format: JsonFormat::Compact,
                ..
            }
        ));
        let file = round_trip(&entry(b"{ \"spaced\" :1 }", None));
        assert!(matches!(file.response.body, FixtureBody::Text { .. }));
        let file = round_trip(&entry(b"\xff\x00binary", None));
        assert!(matches!(file.response.body, FixtureBody::Base64 { .. }));
    }

    #[test]
    fn streams_become_readable_events() {
        let body: &'static [u8] = b"data: {\"id\":\"c\",\"choices\":[]}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\"}\n\n: comment\r\n\r\ndata: [DONE]\n\n";
        let events = crate::record::sse::EventSplitter::new().push(&Bytes::from_static(body));
        assert_eq!(events.len(), 4);
        let stream = events
            .iter()
            .enumerate()
            .map(|(i, e)| StreamEvent {
                offset_ms: 10 * i as u64,
                len: e.len(),
            })
            .collect();
        let file = round_trip(&entry(body, Some(stream)));
        let FixtureBody::Events { events } = &file.response.body else {
            panic!("events expected");
        };
        assert_eq!(events[0].data.as_ref().unwrap()["id"], "c");
        assert_eq!(events[1].event.as_deref(), Some("response.completed"));
        assert!(events[2].raw.is_some(), "a comment is kept raw");
        assert_eq!(events[3].data, Some(Value::String("[DONE]".into())));
    }

    #[test]
    fn binary_answers_are_base64_even_when_their_bytes_are_utf8() {
        for (content_type, body) in [
            ("audio/mpeg", &b"ID3\x04\x00 mock audio"[..]),
            ("image/png", &b"\x89PNG\r\n\x1a\n\x00\xff"[..]),
            ("application/octet-stream", &b"plain"[..]),
        ] {
            let mut e = entry(b"", None);
            e.body = Bytes::copy_from_slice(body);
            e.meta.response.headers = vec![("content-type".into(), content_type.into())];
            let file = round_trip(&e);
            assert!(
                matches!(file.response.body, FixtureBody::Base64 { .. }),
                "{content_type}"
            );
        }
        assert!(is_binary_type("Audio/MPEG; charset=binary"));
        assert!(!is_binary_type("image/svg+xml"));
        assert!(!is_binary_type("application/json"));
        assert!(!is_binary_type("text/plain"));
    }

    #[test]
    fn a_multipart_request_files_under_its_model_part() {
        let mut e = entry(b"{\"text\":\"hi\"}", None);
        e.meta.model = None;
        e.meta.request.path = "/v1/audio/transcriptions".into();
        e.meta.request.body = RequestBody::Json(serde_json::json!([
            {"headers": ["content-disposition: form-data; name=\"file\"; filename=\"a.wav\"", "content-type: audio/wav"], "content_base64": "UklGRg=="},
            {"headers": ["content-disposition: form-data; name=\"model\""], "content_base64": "d2hpc3Blci0x"},
        ]));
        assert_eq!(
            relative_path(&e),
            PathBuf::from("audio.transcriptions/whisper-1/0123456789abcdef.json")
        );
    }

    #[test]
    fn paths_are_route_model_and_short_key() {
        let e = entry(b"{}", None);
        assert_eq!(
            relative_path(&e),
            PathBuf::from("chat.completions/gpt-4o-mini/0123456789abcdef.json")
        );
    }
}
