//! Asking the upstream on behalf of `verify` and `probe`.
//!
//! Owns the trip from a request to a recording of its fresh answer:
//! rebuilding a recorded request ([`Outgoing`]) with its keyed headers
//! (`anthropic-version`, `anthropic-beta`), the credential (from
//! `upstream.api_key_env`, else `OPENAI_API_KEY`; for Anthropic requests
//! `upstream.anthropic_api_key_env`, else `ANTHROPIC_API_KEY`, as
//! `x-api-key`), the upstream of the request's dialect, waiting out 429 answers
//! with `retry-after`, reading a plain body or a whole event stream under
//! the upstream's timeouts, and building the [`Recording`] the proxy would have
//! recorded (through the same [`RecordingBody`]), so that audit can read it. Does not compare,
//! store or print.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::body::{collect_limited, empty, full, IdleTimeout};
use crate::config::{Config, ConfigError};
use crate::error::CommandError;
use crate::key::{Canonical, KeyRules, RequestKey, RequestParts};
use crate::record::recorder::{Exchange, NotRecorded, Recorder, State};
use crate::record::recording::{RecordedRequest, Recording, RequestBody};
use crate::record::recording_body::{End, RecordingBody, Sink};
use crate::record::redact::{strip_hop_by_hop, Redactor};
use crate::route::Dialect;
use crate::serve::error::ProxyError;
use crate::serve::upstream::Upstream;

/// Retries of one request after 429 answers. Five waits of at most
/// [`MAX_RETRY_WAIT`] bound a rate-limited request to about five minutes
/// before it is reported as an error instead of stalling the whole run.
pub const MAX_RATE_LIMIT_RETRIES: u32 = 5;

/// Longest single wait a 429 can ask for. OpenAI asks for seconds; a longer
/// wait means the quota is gone for a while, which is better reported than
/// waited out.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// The first wait after a 429 that names no time (`retry-after` missing or
/// an HTTP date); doubled on each further retry, capped by [`MAX_RETRY_WAIT`].
const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

/// Largest answer read: the cap the proxy applies to a recorded stream,
/// far beyond any completion.
const MAX_ANSWER_BYTES: usize = crate::config::DEFAULT_MAX_RECORDED_BYTES;

/// Largest error body read for its message: an OpenAI error is well under
/// 1 KiB, and a misrouted request can answer with a whole HTML page.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Characters of an upstream error message kept in a report line.
const MAX_MESSAGE_CHARS: usize = 200;

/// Where the key comes from when `upstream.api_key_env` is not configured:
/// the variable the OpenAI SDKs read.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

/// Tried first for Azure-style paths (`/openai/deployments/...`), which
/// take the key in an `api-key` header.
pub const AZURE_KEY_ENV: &str = "AZURE_OPENAI_API_KEY";

/// Where the key of Anthropic requests comes from when
/// `upstream.anthropic_api_key_env` is not configured.
pub const ANTHROPIC_KEY_ENV: &str = "ANTHROPIC_API_KEY";

/// The `anthropic-version` sent when a request has none (`probe` of an
/// Anthropic path): the version the Anthropic SDKs send.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A stand-in `api-key` for Azure paths when `upstream.api_key_env` is set:
/// the upstream client replaces it with the configured key.
const AZURE_KEY_PLACEHOLDER: &str = "replaced-by-upstream-api-key-env";

/// A request ready to be sent upstream, with what an [`Recording`] of its answer
/// needs.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// HTTP method.
    pub method: Method,
    /// Path with `?query` when there is one.
    pub path_and_query: String,
    /// `content-type` and the credential.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Bytes,
    /// The API it speaks: which upstream it goes to.
    pub dialect: Dialect,
    /// The canonical form, for the recording of the answer.
    pub canonical: Canonical,
    /// The key the answer is recorded under.
    pub key: RequestKey,
}

impl Outgoing {
    /// A request from its parts. The key is computed with `rules` (without
    /// any caller credential); `verify` replaces it with the recorded key.
    pub fn new(
        asker: &Asker,
        method: Method,
        path: &str,
        query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
        rules: &KeyRules,
    ) -> Outgoing {
        let canonical = Canonical::new(
            &RequestParts {
                method: method.as_str(),
                path,
                query: Some(query),
                content_type,
                body: &body,
                namespace: None,
                credential: None,
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            rules,
        );
        let dialect = Dialect::of(path, false);
        let mut headers = asker.credentials_for(path, dialect);
        if dialect == Dialect::Anthropic {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
            );
        }
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        let path_and_query = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        Outgoing {
            method,
            path_and_query,
            headers,
            body,
            dialect,
            key: canonical.key(),
            canonical,
        }
    }

    /// Adds the keyed request headers a recording holds (and, when they
    /// make it an Anthropic request, Anthropic's credential).
    fn with_keyed_headers(mut self, asker: &Asker, keyed: &[(String, String)]) -> Outgoing {
        for (name, value) in keyed {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                self.headers.insert(name, value);
            }
        }
        let path = self.canonical.path.clone();
        let dialect = Dialect::of(&path, self.headers.contains_key("anthropic-version"));
        if dialect != self.dialect {
            self.headers.remove(header::AUTHORIZATION);
            self.headers.extend(asker.credentials_for(&path, dialect));
            self.dialect = dialect;
        }
        self.canonical.headers = keyed.to_vec();
        self.key = self.canonical.key();
        self
    }

    /// Rebuilds the request a recording was made from: JSON bodies are sent
    /// compact as `application/json`, text as `text/plain`, base64 decoded.
    pub fn from_recorded(asker: &Asker, request: &RecordedRequest) -> Result<Outgoing, String> {
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("the recorded method {:?} is not valid", request.method))?;
        let (content_type, body) = match &request.body {
            RequestBody::Empty => (None, Bytes::new()),
            RequestBody::Json(value) if is_recorded_multipart(value) => {
                return Err("a multipart request cannot be rebuilt from its recording".into())
            }
            RequestBody::Json(value) => (
                Some("application/json"),
                Bytes::from(
                    serde_json::to_vec(value)
                        .map_err(|e| format!("the recorded body does not serialise: {e}"))?,
                ),
            ),
            RequestBody::Text(text) => {
                (Some("text/plain; charset=utf-8"), Bytes::from(text.clone()))
            }
            RequestBody::Base64(text) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("the recorded body is not valid base64: {e}"))?;
                (Some("application/octet-stream"), Bytes::from(bytes))
            }
        };
        Ok(Outgoing::new(
            asker,
            method,
            &request.path,
            &request.query,
            content_type,
            body,
            &KeyRules::default(),
        )
        .with_keyed_headers(asker, &request.headers))
    }
}

/// Multipart bodies are recorded as a list of parts (headers and base64
/// content) without their boundary, so they cannot be sent again as they were.
fn is_recorded_multipart(value: &Value) -> bool {
    value.as_array().is_some_and(|parts| {
        !parts.is_empty()
            && parts
                .iter()
                .all(|p| p.get("headers").is_some() && p.get("content_base64").is_some())
    })
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Unreachable, timed out, or the request could not be built.
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// The upstream answered with an error status.
    #[error("the upstream answered {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// The error message from the body (shortened), or the body itself.
        message: String,
    },
    /// Still 429 after every retry.
    #[error(
        "still rate limited (429) after {retries} retries; try a lower --concurrency, or later"
    )]
    RateLimited {
        /// Retries made.
        retries: u32,
    },
    /// The body broke off, stalled, or was too large.
    #[error("the upstream's answer could not be read: {0}")]
    Body(String),
    /// A stream ended without its final event, or carried an error event.
    #[error("the upstream's stream is unusable: {0}")]
    Stream(String),
}

/// What one request came back with.
#[derive(Debug)]
pub struct Asked {
    /// Requests sent (1, plus one per 429 retry).
    pub attempts: u32,
    /// The answer as a recording, or why there is none.
    pub answer: Result<Recording, AskError>,
}

/// Sends requests to the upstream for `verify` and `probe`.
pub struct Asker {
    upstream: Upstream,
    anthropic: Upstream,
    redactor: Redactor,
    api_key_env: Option<String>,
    anthropic_api_key_env: Option<String>,
}

impl Asker {
    /// The upstream client of `config`; a missing `upstream.api_key_env`
    /// variable is a configuration error (exit 2).
    pub fn new(config: &Config) -> Result<Asker, CommandError> {
        let setup = |e: crate::serve::upstream::UpstreamSetupError| {
            CommandError::Config(ConfigError::Invalid {
                origin: "upstream".into(),
                problems: vec![e.to_string()],
            })
        };
        Ok(Asker {
            upstream: Upstream::new(&config.upstream).map_err(setup)?,
            anthropic: Upstream::anthropic(&config.upstream).map_err(setup)?,
            redactor: Redactor::new(config.redact.headers.clone()),
            api_key_env: config.upstream.api_key_env.clone(),
            anthropic_api_key_env: config.upstream.anthropic_api_key_env.clone(),
        })
    }

    /// The upstream's base URL, for reports.
    pub fn display(&self) -> &str {
        self.upstream.display()
    }

    /// The credential headers for a request to `path`. With
    /// `upstream.api_key_env` the upstream client adds the key itself;
    /// otherwise it is read from [`DEFAULT_KEY_ENV`] (Azure paths:
    /// [`AZURE_KEY_ENV`] first). Marked sensitive: never logged.
    ///
    /// An Anthropic request (`dialect`) gets `x-api-key` from
    /// [`ANTHROPIC_KEY_ENV`] instead, unless `upstream.anthropic_api_key_env`
    /// has the upstream client add it.
    pub fn credentials_for(&self, path: &str, dialect: Dialect) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if dialect == Dialect::Anthropic {
            let key = std::env::var(ANTHROPIC_KEY_ENV)
                .ok()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty());
            if let (None, Some(key)) = (&self.anthropic_api_key_env, key) {
                match HeaderValue::from_str(&key) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        headers.insert(HeaderName::from_static("x-api-key"), value);
                    }
                    Err(_) => tracing::warn!(
                        "the API key in the environment is not a valid header value; sending none"
                    ),
                }
            }
            return headers;
        }
        let azure = path.starts_with("/openai/deployments/");
        let azure_header = HeaderName::from_static("api-key");
        if self.api_key_env.is_some() {
            if azure {
                headers.insert(
                    azure_header,
                    HeaderValue::from_static(AZURE_KEY_PLACEHOLDER),
                );
            }
            return headers;
        }
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
        };
        let key = if azure {
            read(AZURE_KEY_ENV).or_else(|| read(DEFAULT_KEY_ENV))
        } else {
            read(DEFAULT_KEY_ENV)
        };
        let Some(key) = key else {
            return headers;
        };
        let (name, text) = if azure {
            (azure_header, key)
        } else {
            (header::AUTHORIZATION, format!("Bearer {key}"))
        };
        match HeaderValue::from_str(&text) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            Err(_) => tracing::warn!(
                "the API key in the environment is not a valid header value; sending none"
            ),
        }
        headers
    }

    /// Sends `request`, waiting out 429 answers (`retry-after-ms` or
    /// `retry-after`, at most [`MAX_RETRY_WAIT`] each, at most
    /// [`MAX_RATE_LIMIT_RETRIES`] times), and reads the answer whole.
    pub async fn ask(&self, request: &Outgoing) -> Asked {
        let mut retries = 0u32;
        loop {
            let sent = Instant::now();
            let body = if request.body.is_empty() {
                empty()
            } else {
                full(request.body.clone())
            };
            let upstream = match request.dialect {
                Dialect::OpenAi => &self.upstream,
                Dialect::Anthropic => &self.anthropic,
            };
            let response = match upstream
                .send(
                    request.method.clone(),
                    &request.path_and_query,
                    &request.headers,
                    body,
                )
                .await
            {
                Ok(response) => response,
                Err(error) => {
                    return Asked {
                        attempts: retries + 1,
                        answer: Err(error.into()),
                    }
                }
            };
            let (mut head, incoming) = response.into_parts();
            if head.status == StatusCode::TOO_MANY_REQUESTS {
                if retries >= MAX_RATE_LIMIT_RETRIES {
                    return Asked {
                        attempts: retries + 1,
                        answer: Err(AskError::RateLimited { retries }),
                    };
                }
                let wait = retry_wait(&head.headers, retries);
                tracing::info!(
                    path = %request.path_and_query,
                    wait_ms = wait.as_millis() as u64,
                    "rate limited (429); waiting before retrying"
                );
                drop(incoming);
                tokio::time::sleep(wait).await;
                retries += 1;
                continue;
            }
            let attempts = retries + 1;
            let idle = self.upstream.idle_timeout();
            if !head.status.is_success() {
                let bytes = collect_limited(IdleTimeout::new(incoming, idle), MAX_ERROR_BYTES)
                    .await
                    .unwrap_or_default();
                return Asked {
                    attempts,
                    answer: Err(AskError::Status {
                        status: head.status.as_u16(),
                        message: error_message(&bytes),
                    }),
                };
            }
            strip_hop_by_hop(&mut head.headers);
            head.headers.remove(header::CONTENT_LENGTH);
            let exchange = Exchange {
                canonical: request.canonical.clone(),
                key: request.key,
                status: head.status,
                headers: head.headers,
                sent,
            };
            let answer = self.read_answer(exchange, incoming).await;
            return Asked { attempts, answer };
        }
    }

    /// Reads an answer through the recorder: a plain body to its end, a
    /// stream to its terminal event.
    async fn read_answer(
        &self,
        exchange: Exchange,
        incoming: hyper::body::Incoming,
    ) -> Result<Recording, AskError> {
        let stream = crate::record::sse::is_event_stream(&exchange.headers);
        let recorder = Recorder::new(exchange, self.redactor.clone(), MAX_ANSWER_BYTES, true);
        let upstream = IdleTimeout::new(incoming, self.upstream.idle_timeout());
        let mut body = RecordingBody::new(upstream, recorder, Keep::default());
        while let Some(frame) = body.frame().await {
            if let Err(error) = frame {
                return Err(AskError::Body(error.to_string()));
            }
            if body.state() != State::Open {
                break;
            }
        }
        let kept = body.sink_mut().and_then(|keep| keep.0.take());
        match (body.state(), kept) {
            (State::Committed, Some(recording)) => Ok(recording),
            (State::NotRecorded(NotRecorded::TooLarge), _) if !stream => Err(AskError::Body(
                format!("larger than {MAX_ANSWER_BYTES} bytes"),
            )),
            (State::NotRecorded(NotRecorded::TooLarge), _) => Err(AskError::Stream(
                "stream larger than the recording cap".into(),
            )),
            (State::NotRecorded(NotRecorded::NoFinalEvent), _) | (State::Open, _) => {
                Err(AskError::Stream("it ended without its final event".into()))
            }
            (State::NotRecorded(why), _) => Err(AskError::Stream(why.as_str().into())),
            (State::Committed, None) => Err(AskError::Stream("no complete stream".into())),
        }
    }
}

/// Keeps the recording of a re-asked answer for the caller.
#[derive(Default)]
struct Keep(Option<Recording>);

impl Sink for Keep {
    fn commit(&mut self, recording: Recording) {
        self.0 = Some(recording);
    }

    fn end(&mut self, _exchange: &Exchange, _end: End<'_>) {}
}

/// How long to wait after the `retries`-th 429: `retry-after-ms`
/// (milliseconds) or `retry-after` (seconds) when given, else 1 s doubled
/// per retry; never more than [`MAX_RETRY_WAIT`].
pub fn retry_wait(headers: &HeaderMap, retries: u32) -> Duration {
    let number = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let asked = number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number("retry-after"));
    match asked {
        Some(seconds) => Duration::from_secs_f64(seconds.min(MAX_RETRY_WAIT.as_secs_f64())),
        None => DEFAULT_RETRY_WAIT
            .saturating_mul(1u32 << retries.min(16))
            .min(MAX_RETRY_WAIT),
    }
}

/// The message of an OpenAI-shaped error body, else the body's start.
fn error_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text = text.replace(['\n', '\r'], " ");
    if text.is_empty() {
        return "(no message)".into();
    }
    shorten(&text, MAX_MESSAGE_CHARS)
}

/// At most `max` characters, with `...` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}

/// `verifying 12/100` on stderr, rewritten in place; only when stderr is a
/// terminal, so logs and CI output stay clean.
pub struct Progress {
    verb: &'static str,
    total: usize,
    on: bool,
}

impl Progress {
    /// A progress line for `total` steps.
    pub fn new(verb: &'static str, total: usize) -> Progress {
        Progress {
            verb,
            total,
            on: std::io::stderr().is_terminal(),
        }
    }

    /// `done` steps are done.
    pub fn tick(&self, done: usize) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{} {done}/{}", self.verb, self.total);
            let _ = err.flush();
        }
    }

    /// Clears the line.
    pub fn finish(&self) {
        if self.on {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded_request() -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            query: String::new(),
            namespace: String::new(),
            headers: Vec::new(),
            body: RequestBody::Empty,
        }
    }

    #[test]
    fn retry_wait_prefers_milliseconds_and_is_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_wait(&headers, 0), Duration::from_secs(1));
        assert_eq!(retry_wait(&headers, 2), Duration::from_secs(4));
        assert_eq!(retry_wait(&headers, 10), MAX_RETRY_WAIT);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_wait(&headers, 3), Duration::from_secs(2));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_wait(&headers, 0), Duration::from_millis(1500));
        headers.insert("retry-after-ms", HeaderValue::from_static("9999999"));
        assert_eq!(retry_wait(&headers, 0), MAX_RETRY_WAIT);
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_wait(&date, 1), Duration::from_secs(2));
    }

    #[test]
    fn recorded_requests_are_rebuilt_compact() {
        let config = Config::defaults();
        let asker = Asker::new(&config).unwrap();
        let mut request = recorded_request();
        request.query = "api-version=1".into();
        request.body = RequestBody::Json(serde_json::json!({"model": "m", "n": 1}));
        let out = Outgoing::from_recorded(&asker, &request).unwrap();
        assert_eq!(out.path_and_query, "/v1/chat/completions?api-version=1");
        assert_eq!(&out.body[..], br#"{"model":"m","n":1}"#);
        assert_eq!(out.headers[header::CONTENT_TYPE], "application/json");
        request.body = RequestBody::Json(
            serde_json::json!([{"headers": ["content-disposition: form-data; name=\"f\""], "content_base64": ""}]),
        );
        assert!(Outgoing::from_recorded(&asker, &request)
            .unwrap_err()
            .contains("multipart"));
    }

    #[test]
    fn recorded_anthropic_requests_keep_their_keyed_headers_and_key() {
        let config = Config::defaults();
        let asker = Asker::new(&config).unwrap();
        let mut request = recorded_request();
        request.path = "/v1/messages".into();
        request.headers = vec![
            ("anthropic-beta".into(), "a,b".into()),
            ("anthropic-version".into(), "2024-01-01".into()),
        ];
        request.body = RequestBody::Json(serde_json::json!({"model": "claude", "max_tokens": 5}));
        let out = Outgoing::from_recorded(&asker, &request).unwrap();
        assert_eq!(out.dialect, Dialect::Anthropic);
        assert_eq!(out.headers["anthropic-version"], "2024-01-01");
        assert_eq!(out.headers["anthropic-beta"], "a,b");
        assert!(!out.headers.contains_key(header::AUTHORIZATION));
        assert_eq!(out.canonical.headers, request.headers);
        assert_eq!(RecordedRequest::from_canonical(&out.canonical), request);
    }

    #[test]
    fn upstream_error_messages_are_read_and_shortened() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Invalid model\nxyz"}}"#),
            "Invalid model xyz"
        );
        assert_eq!(error_message(b""), "(no message)");
        assert_eq!(
            error_message(&[b'a'; 500]).chars().count(),
            MAX_MESSAGE_CHARS
        );
    }
}
