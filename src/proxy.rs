//! The proxy: one service that turns a request into a replay, a recording
//! or a plain forward.
//!
//! Data flow: body (collected under a limit) -> key -> store -> replay on a
//! hit | upstream + record on a miss. Routes that are never cached, and
//! passthrough mode, forward the request untouched with its body streamed.
//! The service never errors: every failure becomes an OpenAI-shaped answer
//! (see [`crate::error`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::json;

use crate::body::{
    collect_limited, full, BoxError, CollectError, IdleTimeout, IdleTimeoutError, ProxyBody,
};
use crate::config::{Config, Mode, Scope};
use crate::error::{Fault, ProxyError};
use crate::key::{Canonical, KeyRules, RequestKey, RequestParts};
use crate::record;
use crate::redact::{strip_hop_by_hop, Redactor};
use crate::replay;
use crate::route::Route;
use crate::store::{Store, StoreError};
use crate::upstream::{error_chain, Upstream, UpstreamSetupError};

/// `hit`, `miss` or `bypass`.
pub const CACHE_HEADER: &str = "x-llmtape-cache";
/// The request key, 64 hex characters.
pub const KEY_HEADER: &str = "x-llmtape-key";
/// When a replayed recording was made (RFC 3339).
pub const RECORDED_AT_HEADER: &str = "x-llmtape-recorded-at";
/// Per-request mode override.
pub const MODE_HEADER: &str = "x-llmtape-mode";
/// Isolates suites sharing one store.
pub const NAMESPACE_HEADER: &str = "x-llmtape-namespace";

/// What happened to a request; the same words in headers, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the store.
    Hit,
    /// Sent upstream (and recorded if it succeeded).
    Miss,
    /// Sent upstream without looking at the store.
    Bypass,
}

impl Outcome {
    /// The word used in `x-llmtape-cache`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

/// The proxy service. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    mode: Mode,
    store: Store,
    upstream: Upstream,
    rules: KeyRules,
    redactor: Redactor,
    max_body_bytes: usize,
    record_errors: bool,
    history: usize,
}

impl Proxy {
    /// A proxy over `store` configured by `config`.
    pub fn new(config: &Config, store: Store) -> Result<Proxy, UpstreamSetupError> {
        Ok(Proxy {
            shared: Arc::new(Shared {
                mode: config.mode,
                upstream: Upstream::new(&config.upstream)?,
                store,
                rules: KeyRules {
                    ignore_fields: config.key.ignore_fields.clone(),
                    per_credential: config.key.scope == Scope::ApiKey,
                },
                redactor: Redactor::new(config.redact.headers.clone()),
                max_body_bytes: config.server.max_body_bytes,
                record_errors: config.store.record_errors,
                history: config.store.history,
            }),
        })
    }

    /// The store this proxy records into.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Answers one request. Never fails.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let (response, key) = self.route(request).await;
        let outcome = response
            .headers()
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("error");
        tracing::info!(
            %method,
            %path,
            key = key.map(|k| k.to_hex()).unwrap_or_default(),
            outcome,
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn route<B>(&self, request: Request<B>) -> (Response<ProxyBody>, Option<RequestKey>)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let s = &self.shared;
        let path = request.uri().path();
        if path.starts_with("/_llmtape/") {
            return (self.admin(path), None);
        }
        let mode = match request_mode(request.headers(), s.mode) {
            Ok(mode) => mode,
            Err(error) => return (error_response(&error, None), None),
        };
        if mode == Mode::Passthrough || Route::classify(request.method(), path).is_none() {
            let (parts, body) = request.into_parts();
            let body = body.map_err(Into::into).boxed_unsync();
            return (self.forward(&parts, body, None).await, None);
        }

        let (parts, body) = request.into_parts();
        let body = match collect_limited(body, s.max_body_bytes).await {
            Ok(body) => body,
            Err(CollectError::TooLarge) => {
                let error = ProxyError::BodyTooLarge {
                    limit: s.max_body_bytes,
                };
                return (error_response(&error, None), None);
            }
            Err(CollectError::Read(e)) => {
                let error = ProxyError::ClientBody {
                    reason: error_chain(e.as_ref()),
                };
                return (error_response(&error, None), None);
            }
        };
        let canonical = canonicalize(&parts, &body, &s.rules);
        let key = canonical.key();

        // Streams are recorded by a later stage; until then they are
        // forwarded unrecorded, except in replay mode, which never calls out.
        if canonical.wants_stream() && mode != Mode::Replay {
            return (
                self.forward(&parts, full(body), Some(&key)).await,
                Some(key),
            );
        }

        let re_record = match mode {
            Mode::Record => true,
            // Replay never calls the upstream, so `no-cache` cannot apply.
            Mode::Replay => false,
            Mode::Auto | Mode::Passthrough => wants_no_cache(&parts.headers),
        };
        if !re_record && !canonical.wants_stream() {
            match s.store.get(&key) {
                Ok(Some(entry)) => return (replay::response(entry, &key), Some(key)),
                Ok(None) => {}
                Err(error @ StoreError::Corrupt { .. }) => {
                    tracing::warn!(key = %key, %error, "corrupt recording treated as a miss; it will be replaced if re-recorded");
                }
                Err(error) => {
                    tracing::error!(key = %key, %error, "store read failed; treating as a miss")
                }
            }
        }
        if mode == Mode::Replay {
            let error = ProxyError::ReplayMiss {
                key: key.to_hex(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
            };
            return (error_response(&error, Some(&key)), Some(key));
        }
        (self.record(&parts, body, &canonical, &key).await, Some(key))
    }

    /// Forwards a miss, stores the answer if it is worth keeping, returns it.
    async fn record(
        &self,
        parts: &Parts,
        body: Bytes,
        canonical: &Canonical,
        key: &RequestKey,
    ) -> Response<ProxyBody> {
        let s = &self.shared;
        let sent = Instant::now();
        let upstream = match s
            .upstream
            .send(
                parts.method.clone(),
                path_and_query(parts),
                &parts.headers,
                full(body),
            )
            .await
        {
            Ok(response) => response,
            Err(error) => return error_response(&error, Some(key)),
        };
        let (mut head, incoming) = upstream.into_parts();
        let bytes = match IdleTimeout::new(incoming, s.upstream.idle_timeout())
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return error_response(&self.body_error(e), Some(key)),
        };
        let latency = sent.elapsed();
        if record::should_record(head.status, s.record_errors) {
            let entry = record::entry(
                canonical,
                key,
                head.status,
                &head.headers,
                bytes.clone(),
                latency,
                &s.redactor,
            );
            // The client gets its answer whether or not the write succeeds.
            if let Err(error) = s.store.put(key, &entry, s.history) {
                tracing::error!(key = %key, %error, "recording not stored");
            }
        }
        strip_hop_by_hop(&mut head.headers);
        head.headers.remove(header::CONTENT_LENGTH);
        mark(&mut head.headers, Outcome::Miss, Some(key));
        Response::from_parts(head, full(bytes))
    }

    /// Forwards a request untouched and streams the answer back.
    async fn forward(
        &self,
        parts: &Parts,
        body: ProxyBody,
        key: Option<&RequestKey>,
    ) -> Response<ProxyBody> {
        let s = &self.shared;
        match s
            .upstream
            .send(
                parts.method.clone(),
                path_and_query(parts),
                &parts.headers,
                body,
            )
            .await
        {
            Ok(response) => {
                let (mut head, incoming) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                head.headers.remove(header::CONTENT_LENGTH);
                mark(&mut head.headers, Outcome::Bypass, key);
                let body = IdleTimeout::new(incoming, s.upstream.idle_timeout()).boxed_unsync();
                Response::from_parts(head, body)
            }
            Err(error) => error_response(&error, key),
        }
    }

    fn body_error(&self, error: BoxError) -> ProxyError {
        let upstream = self.shared.upstream.display().to_string();
        match error.downcast_ref::<IdleTimeoutError>() {
            Some(IdleTimeoutError(timeout)) => ProxyError::UpstreamTimeout {
                upstream,
                what: "send the next body chunk",
                timeout: *timeout,
            },
            None => ProxyError::UpstreamBody {
                upstream,
                reason: error_chain(error.as_ref()),
            },
        }
    }

    fn admin(&self, path: &str) -> Response<ProxyBody> {
        let s = &self.shared;
        let (status, body) = match path {
            "/_llmtape/health" => (
                StatusCode::OK,
                json!({
                    "status": "ok",
                    "mode": s.mode.as_str(),
                    "upstream": s.upstream.display(),
                    "recordings": s.store.len(),
                }),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                json!({"error": {
                    "message": format!("no llmtape admin endpoint {path}; try /_llmtape/health"),
                    "type": "invalid_request_error",
                    "param": null,
                    "code": "unknown_admin_endpoint",
                }}),
            ),
        };
        json_response(status, body.to_string())
    }
}

impl tower::Service<Request<hyper::body::Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { Ok(proxy.handle(request).await) })
    }
}

fn request_mode(headers: &HeaderMap, default: Mode) -> Result<Mode, ProxyError> {
    match headers.get(MODE_HEADER) {
        None => Ok(default),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProxyError::BadHeader {
                header: MODE_HEADER,
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                expected: "auto, record, replay, passthrough",
            }),
    }
}

/// `Cache-Control: no-cache` (or `no-store`) asks for a fresh recording.
fn wants_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store")
        })
}

fn canonicalize(parts: &Parts, body: &[u8], rules: &KeyRules) -> Canonical {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .or_else(|| parts.headers.get("api-key"))
        .map(HeaderValue::as_bytes);
    Canonical::new(
        &RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            content_type: header("content-type"),
            body,
            namespace: header(NAMESPACE_HEADER),
            credential,
        },
        rules,
    )
}

fn path_and_query(parts: &Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
}

fn mark(headers: &mut HeaderMap, outcome: Outcome, key: Option<&RequestKey>) {
    headers.insert(CACHE_HEADER, HeaderValue::from_static(outcome.as_str()));
    if let Some(key) = key {
        headers.insert(KEY_HEADER, replay::hex_value(key));
    }
}

fn error_response(error: &ProxyError, key: Option<&RequestKey>) -> Response<ProxyBody> {
    match error.fault() {
        Fault::Client => tracing::debug!(%error, "client error"),
        Fault::Upstream => tracing::warn!(%error, "upstream error"),
        Fault::Proxy => tracing::error!(%error, "internal error"),
    }
    let mut response = json_response(error.status(), error.body());
    if let Some(key) = key {
        response
            .headers_mut()
            .insert(KEY_HEADER, replay::hex_value(key));
    }
    if matches!(error, ProxyError::ReplayMiss { .. }) {
        response.headers_mut().insert(
            CACHE_HEADER,
            HeaderValue::from_static(Outcome::Miss.as_str()),
        );
    }
    response
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_header_overrides_and_rejects_nonsense() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_mode(&headers, Mode::Auto).unwrap(), Mode::Auto);
        headers.insert(MODE_HEADER, HeaderValue::from_static("replay"));
        assert_eq!(request_mode(&headers, Mode::Auto).unwrap(), Mode::Replay);
        headers.insert(MODE_HEADER, HeaderValue::from_static("sometimes"));
        assert!(request_mode(&headers, Mode::Auto).is_err());
    }

    #[test]
    fn no_cache_is_found_among_directives() {
        let mut headers = HeaderMap::new();
        assert!(!wants_no_cache(&headers));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(wants_no_cache(&headers));
    }
}
