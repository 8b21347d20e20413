//! A small HTTP client: one request on a fresh connection, or a stream
//! read frame by frame; every wait bounded by `WAIT`.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::WAIT;

/// An HTTP/1 client that keeps connections alive between requests.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new [`HttpClient`], with a pool of its own.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
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
    send_within(WAIT, method, url, headers, body).await
}

/// [`send`], waiting at most `wait` for the answer and again for its body:
/// for the rare request that does much work in a debug build on a busy
/// machine (still bounded).
pub async fn send_within(
    wait: std::time::Duration,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client = http_client();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).unwrap();
    let response = tokio::time::timeout(wait, client.request(request))
        .await
        .expect("response in time")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(wait, body.collect())
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

/// POSTs JSON and returns the response with its body unread, for reading a
/// stream frame by frame.
pub async fn open_stream(url: &str, body: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let client = http_client();
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-dummy");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("response in time")
        .expect("request succeeds")
}

/// The next data chunk of a body: `Ok(None)` at its end, `Err` if it broke.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("chunk in time");
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads a body to its end; `Err` if it broke.
pub async fn read_all(body: &mut Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(body).await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
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
