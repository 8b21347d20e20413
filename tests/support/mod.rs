//! Test support: a mock upstream that answers differently on every call and
//! counts its calls, an in-process llmtape on 127.0.0.1:0, and a small
//! HTTP client. Only loopback traffic.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use llmtape::config::Config;
use llmtape::server::Server;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the mock saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Shared mock state.
#[derive(Default)]
pub struct MockState {
    calls: AtomicUsize,
    pub fingerprint: Mutex<String>,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A mock OpenAI-compatible upstream on 127.0.0.1:0.
///
/// Every answer carries the call number (in `id` and in the content), so a
/// test can tell a replay from a fresh upstream answer. Requests can steer
/// it with headers the proxy forwards: `x-mock-status: 500` answers with
/// that status, `x-mock-delay-ms: N` waits before the headers.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MockState {
            fingerprint: Mutex::new("fp_mock_1".into()),
            ..MockState::default()
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

    pub fn set_fingerprint(&self, fp: &str) {
        *self.state.fingerprint.lock().unwrap() = fp.to_string();
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn answer(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    state.seen.lock().unwrap().push(SeenRequest {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if let Some(ms) = header_u64(&parts.headers, "x-mock-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let fp = state.fingerprint.lock().unwrap().clone();
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| "gpt-4o-mini".into());

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
    let mut response = Response::new(Full::new(Bytes::from(text)));
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

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// A running in-process llmtape.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub store_dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    /// Starts llmtape in front of `upstream` with extra TOML (sections and
    /// keys other than listen, upstream.url and store.path).
    pub async fn start(upstream: &str, extra_toml: &str) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut proxy = TestProxy::start_with_store(upstream, extra_toml, &store).await;
        proxy._tempdir = Some(dir);
        proxy
    }

    pub async fn start_with_store(upstream: &str, extra_toml: &str, store: &Path) -> TestProxy {
        let mut config = Config::from_toml(extra_toml).expect("test config parses");
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.upstream.url = upstream.parse().unwrap();
        config.store.path = store.to_path_buf();
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            store_dir: store.to_path_buf(),
            _tempdir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server (drains, flushes) and returns the store directory.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .unwrap();
        }
    }
}

/// What a test sees of a response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cache(&self) -> &str {
        self.header("x-llmtape-cache").unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request on a fresh connection.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("response in time")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body reads")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POST JSON with a dummy key.
pub async fn post(url: &str, body: &str) -> Reply {
    post_with(url, body, &[]).await
}

pub async fn post_with(url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    // Headers the caller gives replace the defaults of the same name.
    let mut all: Vec<(&str, &str)> = [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-test-dummy"),
    ]
    .into_iter()
    .filter(|(name, _)| !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
    .collect();
    all.extend_from_slice(headers);
    send(Method::POST, url, &all, body.to_string()).await
}

pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"seed":42,"temperature":0}"#;

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Counts of a key in a map, for readability in asserts.
pub fn count_by<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for item in items {
        *map.entry(item).or_insert(0) += 1;
    }
    map
}
