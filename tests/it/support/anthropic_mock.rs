//! A mock Anthropic Messages upstream on 127.0.0.1:0: answers like the
//! Anthropic API (typed stream events, thinking blocks with signatures,
//! tool use, fresh ids, usage), differently on every call, and counts its
//! calls.
//!
//! Like the real API it wants `anthropic-version` (400 without) and a
//! credential, `x-api-key` or `Authorization` (401 without). Requests
//! steer it with headers: `x-mock-stream-end: done | error | cut | none`
//! (a clean `message_stop`; an `event: error` after the first block, then
//! `message_stop` anyway; the connection cut before `message_stop`; a
//! clean end without it), `x-mock-stream-gate: 1` (wait for
//! [`AnthropicMock::open_gate`] before each event after the first, and
//! before a cut: a cut right behind the head loses the head too),
//! `x-mock-status: N` (answer an Anthropic-shaped error with status N).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::mock::SeenRequest;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type MockBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Shared state of an [`AnthropicMock`].
pub struct AnthropicState {
    calls: AtomicUsize,
    seen: Mutex<Vec<SeenRequest>>,
    /// When set, answers name this model instead of the request's (a new
    /// snapshot behind the same alias).
    pub model: Mutex<Option<String>>,
    /// Gated streams wait for a permit here before each event after the first.
    pub gate: tokio::sync::Semaphore,
    /// Stream events sent so far.
    pub events_sent: AtomicUsize,
}

/// A mock Anthropic API on 127.0.0.1:0.
pub struct AnthropicMock {
    pub addr: SocketAddr,
    pub state: Arc<AnthropicState>,
}

impl AnthropicMock {
    pub async fn start() -> AnthropicMock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AnthropicState {
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            model: Mutex::new(None),
            gate: tokio::sync::Semaphore::new(0),
            events_sent: AtomicUsize::new(0),
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
        AnthropicMock { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Upstream calls so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Answers name `model` from now on (a new snapshot).
    pub fn set_model(&self, model: &str) {
        *self.state.model.lock().unwrap() = Some(model.to_string());
    }

    /// Lets gated streams send `n` more events.
    pub fn open_gate(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Stream events sent so far.
    pub fn events_sent(&self) -> usize {
        self.state.events_sent.load(Ordering::SeqCst)
    }
}

fn json_answer(status: StatusCode, n: usize, body: Value) -> Response<MockBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(serde_json::to_vec(&body).unwrap()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("request-id", format!("req_mock_{n}").parse().unwrap());
    h.insert("anthropic-organization-id", "org-mock".parse().unwrap());
    response
}

fn error_answer(status: StatusCode, n: usize, kind: &str, message: &str) -> Response<MockBody> {
    json_answer(
        status,
        n,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

async fn answer(
    state: Arc<AnthropicState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
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
    let headers = &parts.headers;
    if !headers.contains_key("x-api-key") && !headers.contains_key("authorization") {
        return Ok(error_answer(
            StatusCode::UNAUTHORIZED,
            n,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if !headers.contains_key("anthropic-version") {
        return Ok(error_answer(
            StatusCode::BAD_REQUEST,
            n,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    if let Some(status) = header(headers, "x-mock-status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return Ok(error_answer(
            status,
            n,
            "api_error",
            &format!("mock error #{n}"),
        ));
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = state
        .model
        .lock()
        .unwrap()
        .clone()
        .or_else(|| request["model"].as_str().map(String::from))
        .unwrap_or_else(|| "claude-mock".into());
    let path = parts.uri.path();
    if path == "/v1/messages/count_tokens" {
        return Ok(json_answer(
            StatusCode::OK,
            n,
            json!({"input_tokens": 100 + n}),
        ));
    }
    if path == "/v1/models" {
        return Ok(json_answer(
            StatusCode::OK,
            n,
            json!({"data": [{"type": "model", "id": format!("claude-mock-{n}"), "display_name": "Claude Mock", "created_at": "2025-01-01T00:00:00Z"}], "has_more": false, "first_id": format!("claude-mock-{n}"), "last_id": format!("claude-mock-{n}")}),
        ));
    }
    if path != "/v1/messages" {
        return Ok(error_answer(
            StatusCode::NOT_FOUND,
            n,
            "not_found_error",
            &format!("no route {path} (mock)"),
        ));
    }
    let blocks = blocks(n, &request);
    let stop_reason = if blocks.iter().any(|b| b["type"] == "tool_use") {
        "tool_use"
    } else {
        "end_turn"
    };
    let usage = json!({"input_tokens": 12, "output_tokens": 5 + n, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if request["stream"] == Value::Bool(true) {
        return Ok(stream_answer(
            state,
            n,
            &model,
            &blocks,
            stop_reason,
            headers,
        ));
    }
    Ok(json_answer(
        StatusCode::OK,
        n,
        json!({
            "id": format!("msg_mock_{n}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage,
        }),
    ))
}

/// The content blocks of call `n`: a thinking block (with its signature)
/// when the request enables thinking, a tool call when it offers tools
/// and the last message is not a tool result, else text naming the call.
fn blocks(n: usize, request: &Value) -> Vec<Value> {
    let mut blocks = Vec::new();
    if request["thinking"]["type"] == "enabled" {
        blocks.push(json!({
            "type": "thinking",
            "thinking": format!("Let me think about call #{n}."),
            "signature": format!("EqQBCkYIARgCIkB{n}sigmock{}==", "x".repeat(n % 7 + 3)),
        }));
    }
    let last_is_tool_result = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    match request["tools"].as_array().and_then(|t| t.first()) {
        Some(tool) if !last_is_tool_result => blocks.push(json!({
            "type": "tool_use",
            "id": format!("toolu_mock_{n}"),
            "name": tool["name"],
            "input": {"city": format!("Paris #{n}")},
        })),
        _ => blocks.push(json!({"type": "text", "text": format!("reply #{n}")})),
    }
    blocks
}

fn event(name: &str, data: Value) -> String {
    format!(
        "event: {name}\ndata: {}\n\n",
        serde_json::to_string(&data).unwrap()
    )
}

/// The stream of `blocks`, typed events as Anthropic sends them.
fn stream_answer(
    state: Arc<AnthropicState>,
    n: usize,
    model: &str,
    blocks: &[Value],
    stop_reason: &str,
    headers: &HeaderMap,
) -> Response<MockBody> {
    let end = header(headers, "x-mock-stream-end")
        .unwrap_or("done")
        .to_string();
    let gated = headers.contains_key("x-mock-stream-gate");
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    )];
    for (i, block) in blocks.iter().enumerate() {
        let (start, deltas) = match block["type"].as_str() {
            Some("thinking") => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": block["thinking"]}),
                    json!({"type": "signature_delta", "signature": block["signature"]}),
                ],
            ),
            Some("tool_use") => (
                json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                vec![
                    json!({"type": "input_json_delta", "partial_json": ""}),
                    json!({"type": "input_json_delta", "partial_json": serde_json::to_string(&block["input"]).unwrap()}),
                ],
            ),
            _ => {
                let text = block["text"].as_str().unwrap_or("");
                let (a, b) = text.split_at(text.len() / 2);
                (
                    json!({"type": "text", "text": ""}),
                    vec![
                        json!({"type": "text_delta", "text": a}),
                        json!({"type": "text_delta", "text": b}),
                    ],
                )
            }
        };
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        if i == 0 {
            events.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string());
        }
        for delta in deltas {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": delta}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
        if i == 0 && end == "error" {
            events.push(event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
        }
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 5 + n}}),
    ));
    if end == "done" || end == "error" {
        events.push(event("message_stop", json!({"type": "message_stop"})));
    }
    let cut = end == "cut";
    let frames = futures_util::stream::unfold(
        (events.into_iter().enumerate(), state, false),
        move |(mut events, state, done)| async move {
            if done {
                return None;
            }
            match events.next() {
                Some((i, event)) => {
                    if i > 0 && gated {
                        state.gate.acquire().await.ok()?.forget();
                    }
                    state.events_sent.fetch_add(1, Ordering::SeqCst);
                    let frame: Result<http_body::Frame<Bytes>, BoxError> =
                        Ok(http_body::Frame::data(Bytes::from(event)));
                    Some((frame, (events, state, false)))
                }
                None if cut => {
                    if gated {
                        state.gate.acquire().await.ok()?.forget();
                    }
                    Some((
                        Err::<http_body::Frame<Bytes>, BoxError>("mock cut the stream".into()),
                        (events, state, true),
                    ))
                }
                None => None,
            }
        },
    );
    let mut response = Response::new(http_body_util::StreamBody::new(frames).boxed_unsync());
    let h = response.headers_mut();
    h.insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    h.insert("cache-control", "no-cache".parse().unwrap());
    h.insert("request-id", format!("req_mock_{n}").parse().unwrap());
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}
