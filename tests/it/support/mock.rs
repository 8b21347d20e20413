//! A mock OpenAI-compatible upstream on 127.0.0.1:0 that answers
//! differently on every call and counts its calls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::WAIT;

/// What the mock saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

/// A scripted chat answer: call `n` (1-based) answers with element
/// `(n - 1) % len` of each list. With `"logprobs": true` in the request,
/// each word of the content is a token; the first token's logprob comes
/// from `first_logprobs`, the others are -0.01.
#[derive(Debug, Clone)]
pub struct Script {
    pub contents: Vec<String>,
    pub fingerprints: Vec<String>,
    pub first_logprobs: Vec<f64>,
}

/// A script with one answer: `content`, `fingerprint`, and the first
/// token's logprob.
pub fn script(content: &str, fingerprint: &str, first_logprob: f64) -> Script {
    Script {
        contents: vec![content.into()],
        fingerprints: vec![fingerprint.into()],
        first_logprobs: vec![first_logprob],
    }
}

/// Shared mock state.
pub struct MockState {
    calls: AtomicUsize,
    pub fingerprint: Mutex<String>,
    seen: Mutex<Vec<SeenRequest>>,
    /// Streams sent with `x-mock-stream-gate: 1` wait for a permit here
    /// before each event after the first.
    pub gate: tokio::sync::Semaphore,
    /// (call number, event index) of every stream event sent, in order.
    pub sent_events: Mutex<Vec<(usize, usize)>>,
    /// When set, non-stream chat completions follow this script.
    pub script: Mutex<Option<Script>>,
    /// The next this-many calls answer 429 with `retry-after: 1`.
    pub rate_limited: AtomicUsize,
    /// Requests sent with `x-mock-hold: 1` wait for a permit here before
    /// they are answered.
    pub hold: tokio::sync::Semaphore,
    /// Requests received whole so far (counted after `seen`), for waiting.
    arrived: tokio::sync::watch::Sender<usize>,
    /// False for a lean mock: `seen` and `sent_events` stay empty.
    remember: bool,
}

type MockBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A mock OpenAI-compatible upstream on 127.0.0.1:0.
///
/// Every answer carries the call number (in `id` and in the content), so a
/// test can tell a replay from a fresh upstream answer. Requests can steer
/// it with headers the proxy forwards: `x-mock-status: 500` answers with
/// that status, `x-mock-delay-ms: N` waits before the headers,
/// `x-mock-hold: 1` waits for [`MockUpstream::release`] before answering,
/// `x-mock-content-type: T` answers with [`binary_answer`] bytes of type `T`.
///
/// Audio and image routes answer as OpenAI does: `audio/speech` with
/// binary `audio/mpeg` ([`binary_answer`]), transcriptions and
/// translations with `{"text": ...}` naming the call and the size of the
/// form received, images with `{"data": [{"b64_json": ...}]}`.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl MockUpstream {
    /// A mock that remembers every request (see [`MockUpstream::seen`]).
    pub async fn start() -> MockUpstream {
        MockUpstream::start_with(true).await
    }

    /// A mock that keeps nothing per request, only counts: for a load
    /// test that sends very many ([`MockUpstream::seen`] and
    /// [`MockUpstream::events_sent`] stay empty).
    pub async fn start_lean() -> MockUpstream {
        MockUpstream::start_with(false).await
    }

    async fn start_with(remember: bool) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MockState {
            calls: AtomicUsize::new(0),
            fingerprint: Mutex::new("fp_mock_1".into()),
            seen: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
            sent_events: Mutex::new(Vec::new()),
            script: Mutex::new(None),
            rate_limited: AtomicUsize::new(0),
            hold: tokio::sync::Semaphore::new(0),
            arrived: tokio::sync::watch::Sender::new(0),
            remember,
        });
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockUpstream { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Upstream calls so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Waits (at most [`WAIT`]) until `n` requests have arrived whole.
    pub async fn wait_for_calls(&self, n: usize) {
        let mut arrived = self.state.arrived.subscribe();
        let reached = tokio::time::timeout(WAIT, arrived.wait_for(|count| *count >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{n} requests reached the mock within {WAIT:?} (got {})",
            *self.state.arrived.borrow()
        );
    }

    /// Lets `n` more requests sent with `x-mock-hold: 1` be answered.
    pub fn release(&self, n: usize) {
        self.state.hold.add_permits(n);
    }

    /// Makes chat completions follow `script` from the next call on.
    pub fn script(&self, script: Script) {
        *self.state.script.lock().unwrap() = Some(script);
    }

    /// Answers the next `n` calls with 429 and `retry-after: 1`.
    pub fn rate_limit_next(&self, n: usize) {
        self.state.rate_limited.store(n, Ordering::SeqCst);
    }

    /// Lets gated streams send `n` more events.
    pub fn open_gate(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// How many stream events have been sent so far.
    pub fn events_sent(&self) -> usize {
        self.state.sent_events.lock().unwrap().len()
    }

    pub fn set_fingerprint(&self, fp: &str) {
        *self.state.fingerprint.lock().unwrap() = fp.to_string();
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests seen whose path (without the query) ends with `suffix`.
    pub fn calls_to(&self, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|r| {
                let path = r.path_and_query.split('?').next().unwrap_or("");
                path.ends_with(suffix)
            })
            .count()
    }
}

/// The binary body the mock sends for call `n`: not UTF-8 (an MP3 frame
/// header, NUL and 0xff bytes, every byte value once), different per call.
pub fn binary_answer(n: usize) -> Vec<u8> {
    let mut bytes = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00".to_vec();
    bytes.extend_from_slice(format!("mock audio #{n}").as_bytes());
    bytes.extend(0..=255u8);
    bytes
}

/// A response with `body` of `content_type`, as the mock sends it.
fn typed_answer(n: usize, content_type: &str, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    let h = response.headers_mut();
    h.insert("content-type", content_type.parse().unwrap());
    h.insert("x-request-id", format!("req_mock_{n}").parse().unwrap());
    response
}

async fn answer(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    if state.remember {
        state.seen.lock().unwrap().push(SeenRequest {
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body: body.clone(),
            at: std::time::Instant::now(),
        });
    }
    state.arrived.send_modify(|count| *count += 1);
    if parts.headers.contains_key("x-mock-hold") {
        state
            .hold
            .acquire()
            .await
            .expect("the hold is never closed")
            .forget();
    }
    if state
        .rate_limited
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let body = "{\"error\":{\"message\":\"Rate limit reached (mock)\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
        let mut response = Response::new(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return Ok(response);
    }
    if let Some(ms) = header_u64(&parts.headers, "x-mock-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let fp = state.fingerprint.lock().unwrap().clone();
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| "gpt-4o-mini".into());

    let request_json = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    if request_json["stream"] == serde_json::Value::Bool(true)
        && !parts.headers.contains_key("x-mock-status")
    {
        return Ok(stream_answer(
            state,
            n,
            &path,
            &model,
            &fp,
            &parts.headers,
            &request_json,
        ));
    }
    if let Some(content_type) = parts
        .headers
        .get("x-mock-content-type")
        .and_then(|v| v.to_str().ok())
    {
        return Ok(typed_answer(n, content_type, binary_answer(n)));
    }
    if !parts.headers.contains_key("x-mock-status") {
        if path.ends_with("/audio/speech") {
            return Ok(typed_answer(n, "audio/mpeg", binary_answer(n)));
        }
        if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
            let text = format!(
                "{{\"text\":\"transcript #{n} of a {} byte form\"}}",
                body.len()
            );
            return Ok(typed_answer(n, "application/json", text));
        }
        if path.ends_with("/images/generations")
            || path.ends_with("/images/edits")
            || path.ends_with("/images/variations")
        {
            use base64::Engine;
            let image = base64::engine::general_purpose::STANDARD.encode(binary_answer(n));
            let text = format!(
                "{{\"created\":{},\"data\":[{{\"b64_json\":\"{image}\",\"revised_prompt\":\"image #{n}\"}}]}}",
                1_700_000_000 + n
            );
            return Ok(typed_answer(n, "application/json", text));
        }
    }
    let scripted = state.script.lock().unwrap().clone();
    if let (Some(script), true) = (scripted, path.ends_with("/chat/completions")) {
        return Ok(scripted_answer(&script, n, &model, &request_json));
    }
    let status = header_u64(&parts.headers, "x-mock-status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let text = if !status.is_success() {
        format!(
            "{{\"error\":{{\"message\":\"mock error #{n}\",\"type\":\"server_error\",\"param\":null,\"code\":null}}}}"
        )
    } else if path.ends_with("/chat/completions") {
        // Pretty-printed with OpenAI's key order and a float written as
        // `1.0`, so any re-serialisation by the proxy would show.
        format!(
            "{{\n  \"id\": \"chatcmpl-mock-{n}\",\n  \"object\": \"chat.completion\",\n  \"created\": {created},\n  \"model\": \"{model}\",\n  \"choices\": [\n    {{\n      \"index\": 0,\n      \"message\": {{\n        \"role\": \"assistant\",\n        \"content\": \"reply #{n}\"\n      }},\n      \"logprobs\": null,\n      \"finish_reason\": \"stop\"\n    }}\n  ],\n  \"usage\": {{\"prompt_tokens\": 9, \"completion_tokens\": 3, \"total_tokens\": 12, \"score\": 1.0}},\n  \"system_fingerprint\": \"{fp}\"\n}}\n",
            created = 1_700_000_000 + n
        )
    } else if path.ends_with("/embeddings") {
        format!(
            "{{\"object\":\"list\",\"data\":[{{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.25,-0.5,{n}.0]}}],\"model\":\"{model}\",\"usage\":{{\"prompt_tokens\":2,\"total_tokens\":2}}}}"
        )
    } else if path.ends_with("/models") {
        format!("{{\"object\":\"list\",\"data\":[{{\"id\":\"gpt-mock-{n}\",\"object\":\"model\",\"owned_by\":\"mock\"}}]}}")
    } else if path.ends_with("/responses") {
        format!(
            "{{\"id\":\"resp_mock_{n}\",\"object\":\"response\",\"model\":\"{model}\",\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"reply #{n}\"}}]}}]}}"
        )
    } else {
        format!("{{\"id\":\"generic-{n}\",\"path\":\"{path}\",\"model\":\"{model}\"}}")
    };
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-request-id", format!("req_mock_{n}").parse().unwrap());
    h.insert("openai-processing-ms", "7".parse().unwrap());
    h.insert(
        "set-cookie",
        "__cf_bm=mock-cookie-secret; path=/".parse().unwrap(),
    );
    Ok(response)
}

fn scripted_answer(
    script: &Script,
    n: usize,
    model: &str,
    request: &serde_json::Value,
) -> Response<MockBody> {
    let pick = |len: usize| (n - 1) % len;
    let content = &script.contents[pick(script.contents.len())];
    let fp = &script.fingerprints[pick(script.fingerprints.len())];
    let logprobs = if request["logprobs"] == serde_json::Value::Bool(true) {
        let first = script.first_logprobs[pick(script.first_logprobs.len())];
        let tokens: Vec<serde_json::Value> = content
            .split_inclusive(' ')
            .enumerate()
            .map(|(i, token)| {
                let lp = if i == 0 { first } else { -0.01 };
                serde_json::json!({"token": token, "logprob": lp, "bytes": token.as_bytes(), "top_logprobs": []})
            })
            .collect();
        serde_json::json!({"content": tokens})
    } else {
        serde_json::Value::Null
    };
    let body = serde_json::json!({
        "id": format!("chatcmpl-mock-{n}"),
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        "system_fingerprint": fp,
    });
    let mut response = Response::new(
        Full::new(Bytes::from(serde_json::to_vec_pretty(&body).unwrap()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// A server-sent-event answer, shaped like OpenAI's, steered by headers:
/// `x-mock-stream-events: N` content events (default 3),
/// `x-mock-stream-delay-ms: D` between events, `x-mock-stream-gate: 1`
/// (wait for [`MockUpstream::open_gate`] before each event after the
/// first), `x-mock-stream-split: 1` (each event in two writes),
/// `x-mock-stream-end: done | cut | error | none`.
fn stream_answer(
    state: Arc<MockState>,
    n: usize,
    path: &str,
    model: &str,
    fp: &str,
    headers: &HeaderMap,
    request: &serde_json::Value,
) -> Response<MockBody> {
    let count = header_u64(headers, "x-mock-stream-events").unwrap_or(3) as usize;
    let delay = Duration::from_millis(header_u64(headers, "x-mock-stream-delay-ms").unwrap_or(0));
    let gated = headers.contains_key("x-mock-stream-gate");
    let split = headers.contains_key("x-mock-stream-split");
    let end = headers
        .get("x-mock-stream-end")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("done")
        .to_string();
    let usage = request["stream_options"]["include_usage"] == serde_json::Value::Bool(true);
    let mut events: Vec<String> = Vec::new();
    let created = 1_700_000_000 + n;
    if path.ends_with("/responses") {
        events.push(format!("event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"id\":\"resp_mock_{n}\",\"model\":\"{model}\",\"status\":\"in_progress\"}}}}\n\n"));
        for i in 0..count {
            events.push(format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"tok{i} #{n}\"}}\n\n"));
        }
        if end == "done" {
            events.push(format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_mock_{n}\",\"model\":\"{model}\",\"status\":\"completed\"}}}}\n\n"));
        }
    } else {
        let chat = path.ends_with("/chat/completions");
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let id = if chat {
            format!("chatcmpl-mock-{n}")
        } else {
            format!("cmpl-mock-{n}")
        };
        for i in 0..count {
            let choice = if chat {
                format!("{{\"index\":0,\"delta\":{{\"content\":\"tok{i} #{n}\"}},\"logprobs\":null,\"finish_reason\":null}}")
            } else {
                format!("{{\"index\":0,\"text\":\"tok{i} #{n}\",\"logprobs\":null,\"finish_reason\":null}}")
            };
            events.push(format!("data: {{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{created},\"model\":\"{model}\",\"system_fingerprint\":\"{fp}\",\"choices\":[{choice}]}}\n\n"));
        }
        if end == "done" {
            if usage {
                events.push(format!("data: {{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{created},\"model\":\"{model}\",\"system_fingerprint\":\"{fp}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{count},\"total_tokens\":{}}}}}\n\n", 5 + count));
            }
            events.push("data: [DONE]\n\n".to_string());
        }
    }
    if end == "error" {
        events.push("data: {\"error\":{\"message\":\"mock overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_string());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<FrameResult>(4);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                if gated {
                    match state.gate.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            let bytes = Bytes::from(event);
            let parts = if split {
                let mid = bytes.len() / 2;
                vec![bytes.slice(..mid), bytes.slice(mid..)]
            } else {
                vec![bytes]
            };
            let last = parts.len() - 1;
            for (j, part) in parts.into_iter().enumerate() {
                if tx.send(Ok(http_body::Frame::data(part))).await.is_err() {
                    return;
                }
                if split && j < last {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if state.remember {
                state.sent_events.lock().unwrap().push((n, i));
            }
        }
        if end == "cut" {
            let _ = tx.send(Err("mock cut the stream".into())).await;
        }
    });
    let body = http_body_util::StreamBody::new(ChannelStream(rx)).boxed_unsync();
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    h.insert("x-request-id", format!("req_mock_{n}").parse().unwrap());
    h.insert("cache-control", "no-cache".parse().unwrap());
    response
}

type FrameResult = Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

/// An mpsc receiver as a stream of body frames.
struct ChannelStream(tokio::sync::mpsc::Receiver<FrameResult>);

impl futures_util::Stream for ChannelStream {
    type Item = FrameResult;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<FrameResult>> {
        self.0.poll_recv(cx)
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}
