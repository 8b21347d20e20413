//! Errors the proxy answers with, and who is at fault for each.
//!
//! The proxy service never fails: every problem becomes an error response
//! shaped like the caller's API's own ([`ProxyError::body_in`]): OpenAI's
//! `{"error":{"message","type","param","code"}}`, or Anthropic's
//! `{"type":"error","error":{"type","message"}}`, so SDKs raise their
//! usual exceptions with our message inside. The status of each
//! variant is decided in one exhaustive `match`, so a new variant forces a
//! decision.
//!
//! Variants keep the error that caused them as their `source`. The message
//! a caller reads names the whole chain ([`Chain`]), because an SDK shows
//! only the message: "could not reach the upstream ...: tcp connect error:
//! Connection refused" says what to fix, "client error (Connect)" does not.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::body::BoxError;
use crate::route::Dialect;
use crate::serve::read_timeout::BodyReadTimeoutError;

/// Who caused a failure: picks the status class and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller sent something we cannot serve.
    Client,
    /// The upstream failed or was unreachable.
    Upstream,
    /// llmtape itself.
    Proxy,
}

/// A request that could not be answered normally.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request body exceeds `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes; raise server.max_body_bytes in proxy.toml to accept it")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request body could not be read from the client.
    #[error("could not read the request body: {}", Chain(source.as_ref()))]
    ClientBody {
        /// What went wrong.
        source: BoxError,
    },
    /// The request head did not arrive within `server.header_read_timeout`
    /// (written by the connection's watchdog, not by the proxy service).
    #[error("the request head did not arrive within {} (server.header_read_timeout); llmtape closed the connection", humantime::format_duration(*timeout))]
    HeaderReadTimeout {
        /// The configured limit.
        timeout: Duration,
    },
    /// The request body paused longer than `server.body_read_timeout`.
    #[error("the request body stalled: no data for {} (server.body_read_timeout); llmtape closed the connection", humantime::format_duration(*timeout))]
    BodyReadTimeout {
        /// The configured limit.
        timeout: Duration,
    },
    /// A `x-llmtape-*` header has a value we do not understand.
    #[error("invalid {header} header {value:?}: expected one of {expected}")]
    BadHeader {
        /// The header.
        header: &'static str,
        /// What it said.
        value: String,
        /// What it may say.
        expected: &'static str,
    },
    /// Replay mode and no recording.
    #[error("llmtape has no recording for this request (key {key}, {method} {path}) and mode=replay, so it did not call the upstream; {}", match nearest {
        Some(nearest) => format!("the nearest recording is {nearest}"),
        None => "no recording exists for this route; record it first with mode=auto or mode=record".to_string(),
    })]
    ReplayMiss {
        /// Hex key.
        key: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// The nearest recording and how it differs, if any.
        nearest: Option<String>,
    },
    /// Replay mode, `x-llmtape-repeats: sequence`, and fewer calls of the
    /// request recorded than this one's number in its run.
    #[error("llmtape has no recording for call {call} of this request (x-llmtape-repeats: sequence, {run}): {recorded} of its calls are recorded (key {key}, {method} {path}) and mode=replay, so it did not call the upstream; record call {call} with mode=auto, or start the run's count again with POST /_llmtape/runs/ID/reset")]
    SequenceMiss {
        /// Hex key of this call.
        key: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// This request's number in its run.
        call: u32,
        /// Calls recorded, 1 to this many.
        recorded: u32,
        /// The run, as the message names it.
        run: String,
    },
    /// The upstream could not be reached.
    #[error("llmtape could not reach the upstream {upstream}: {}", Chain(source))]
    UpstreamUnreachable {
        /// The upstream base URL.
        upstream: String,
        /// The client's error (connect, TLS, DNS, or the connection failing
        /// before response headers).
        source: hyper_util::client::legacy::Error,
    },
    /// The upstream did not answer in time.
    #[error("the upstream {upstream} did not {what} within {}", humantime::format_duration(*timeout))]
    UpstreamTimeout {
        /// The upstream base URL.
        upstream: String,
        /// "send response headers", "send the next body chunk".
        what: &'static str,
        /// The limit that expired.
        timeout: Duration,
    },
    /// The upstream broke off its response.
    #[error("the upstream {upstream} failed while sending its response: {}", Chain(source.as_ref()))]
    UpstreamBody {
        /// The upstream base URL.
        upstream: String,
        /// The body's error.
        source: BoxError,
    },
    /// Too many requests in flight.
    #[error("llmtape is already handling {limit} requests (server.max_in_flight); retry shortly")]
    Overloaded {
        /// The configured limit.
        limit: usize,
    },
    /// Too many client connections open (written to the refused socket,
    /// not by the proxy service).
    #[error(
        "llmtape already has {limit} connections open (server.max_connections); retry shortly"
    )]
    TooManyConnections {
        /// The limit in force.
        limit: usize,
    },
    /// A local miss while the shared store (`[remote]`) is unreachable, in
    /// replay mode or with `remote.on_unavailable = "fail"`.
    #[error("the shared store {remote} is unreachable and this recording is not in the local store; retry when Redis is back, or set remote.on_unavailable = \"local\"")]
    RemoteUnavailable {
        /// The Redis URL, without its password.
        remote: String,
    },
    /// We could not build the upstream request.
    #[error("llmtape could not build the upstream request: {source}")]
    Internal {
        /// Why.
        source: UpstreamRequestError,
    },
}

/// Why the request to the upstream could not be built (a bug or a path
/// the upstream URL cannot carry, never the upstream's fault).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamRequestError {
    /// The request builder refused a part.
    #[error(transparent)]
    Request(#[from] http::Error),
    /// The base path joined with the request's path is not a valid URI path.
    #[error("bad upstream path {path:?}: {source}")]
    Path {
        /// The joined path and query.
        path: String,
        /// Why it does not parse.
        source: http::uri::InvalidUri,
    },
    /// The URI parts do not form a URI.
    #[error(transparent)]
    Uri(#[from] http::uri::InvalidUriParts),
}

/// Shows an error and its sources in one line, `error: source: source`,
/// leaving out a source whose text the line already holds (many errors
/// repeat their cause in their own message).
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(inner) = source {
            let next = inner.to_string();
            if !text.contains(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            source = inner.source();
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ProxyError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::BodyTooLarge { .. }
            | ProxyError::ClientBody { .. }
            | ProxyError::HeaderReadTimeout { .. }
            | ProxyError::BodyReadTimeout { .. }
            | ProxyError::BadHeader { .. }
            | ProxyError::ReplayMiss { .. }
            | ProxyError::SequenceMiss { .. } => Fault::Client,
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamBody { .. } => Fault::Upstream,
            ProxyError::Internal { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::RemoteUnavailable { .. }
            | ProxyError::TooManyConnections { .. } => Fault::Proxy,
        }
    }

    /// The HTTP status the caller receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody { .. } | ProxyError::BadHeader { .. } => StatusCode::BAD_REQUEST,
            ProxyError::HeaderReadTimeout { .. } | ProxyError::BodyReadTimeout { .. } => {
                StatusCode::REQUEST_TIMEOUT
            }
            ProxyError::ReplayMiss { .. } | ProxyError::SequenceMiss { .. } => {
                StatusCode::NOT_FOUND
            }
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamBody { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Overloaded { .. }
            | ProxyError::TooManyConnections { .. }
            | ProxyError::RemoteUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The OpenAI error `type` and `code` fields.
    pub fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            ProxyError::BodyTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            ProxyError::ClientBody { .. } => ("invalid_request_error", "unreadable_body"),
            ProxyError::HeaderReadTimeout { .. } => {
                ("invalid_request_error", "request_head_timeout")
            }
            ProxyError::BodyReadTimeout { .. } => ("invalid_request_error", "request_body_timeout"),
            ProxyError::BadHeader { .. } => ("invalid_request_error", "invalid_llmtape_header"),
            ProxyError::ReplayMiss { .. } | ProxyError::SequenceMiss { .. } => {
                ("llmtape_miss", "replay_miss")
            }
            ProxyError::UpstreamUnreachable { .. } => {
                ("llmtape_upstream_error", "upstream_unreachable")
            }
            ProxyError::UpstreamTimeout { .. } => ("llmtape_upstream_error", "upstream_timeout"),
            ProxyError::UpstreamBody { .. } => {
                ("llmtape_upstream_error", "upstream_broken_response")
            }
            ProxyError::Internal { .. } => ("llmtape_internal_error", "internal"),
            ProxyError::Overloaded { .. } => ("llmtape_overloaded", "too_many_in_flight"),
            ProxyError::TooManyConnections { .. } => ("llmtape_overloaded", "too_many_connections"),
            ProxyError::RemoteUnavailable { .. } => {
                ("llmtape_remote_unavailable", "remote_unavailable")
            }
        }
    }

    /// This error, or [`ProxyError::BodyReadTimeout`] when somewhere in its
    /// chain the request body stalled: a forwarded (passthrough) body that
    /// stops fails the upstream call, but the client is at fault.
    pub fn blame_stalled_body(self) -> ProxyError {
        let mut source: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(inner) = source {
            if let Some(stalled) = inner.downcast_ref::<BodyReadTimeoutError>() {
                return ProxyError::BodyReadTimeout { timeout: stalled.0 };
            }
            source = inner.source();
        }
        self
    }

    /// The Anthropic error `type` (Anthropic's own words, which its
    /// SDKs and clients act on: `overloaded_error` is retried,
    /// `not_found_error` is not).
    pub fn anthropic_type(&self) -> &'static str {
        match self {
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::ClientBody { .. }
            | ProxyError::BadHeader { .. }
            | ProxyError::HeaderReadTimeout { .. }
            | ProxyError::BodyReadTimeout { .. } => "invalid_request_error",
            ProxyError::ReplayMiss { .. } | ProxyError::SequenceMiss { .. } => "not_found_error",
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamBody { .. }
            | ProxyError::Internal { .. } => "api_error",
            ProxyError::UpstreamTimeout { .. } => "timeout_error",
            ProxyError::Overloaded { .. }
            | ProxyError::TooManyConnections { .. }
            | ProxyError::RemoteUnavailable { .. } => "overloaded_error",
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Vec<u8> {
        self.body_in(Dialect::OpenAi)
    }

    /// The JSON body, shaped like `dialect`'s own errors. The Anthropic
    /// shape carries llmtape's code (`replay_miss`, ...) in
    /// `error.llmtape_code`, next to Anthropic's `type` and `message`.
    pub fn body_in(&self, dialect: Dialect) -> Vec<u8> {
        let (kind, code) = self.type_and_code();
        let value = match dialect {
            Dialect::OpenAi => json!({
                "error": {
                    "message": self.to_string(),
                    "type": kind,
                    "param": null,
                    "code": code,
                }
            }),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": {
                    "type": self.anthropic_type(),
                    "message": self.to_string(),
                    "llmtape_code": code,
                }
            }),
        };
        serde_json::to_vec(&value).expect("a JSON literal always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_miss_is_openai_shaped() {
        let err = ProxyError::ReplayMiss {
            key: "ab".repeat(32),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            nearest: None,
        };
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(body["error"]["type"], "llmtape_miss");
        assert_eq!(body["error"]["code"], "replay_miss");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&"ab".repeat(32)) && message.contains("mode=replay"));
    }

    #[test]
    fn replay_miss_is_anthropic_shaped_for_anthropic() {
        let err = ProxyError::ReplayMiss {
            key: "ab".repeat(32),
            method: "POST".into(),
            path: "/v1/messages".into(),
            nearest: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&err.body_in(Dialect::Anthropic)).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "not_found_error");
        assert_eq!(body["error"]["llmtape_code"], "replay_miss");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mode=replay"));
        let overloaded = ProxyError::Overloaded { limit: 1 };
        let body: serde_json::Value =
            serde_json::from_slice(&overloaded.body_in(Dialect::Anthropic)).unwrap();
        assert_eq!(body["error"]["type"], "overloaded_error");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_message_names_the_whole_chain_and_the_source_is_kept() {
        let cause: BoxError = Box::new(Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        let err = ProxyError::ClientBody { source: cause };
        assert_eq!(
            err.to_string(),
            "could not read the request body: outer: connection reset"
        );
        let source = err.source().expect("the cause is kept");
        assert!(source.downcast_ref::<Outer>().is_some());
    }

    #[test]
    fn a_chain_leaves_out_a_cause_the_message_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("read failed: {0}")]
        struct Repeats(#[source] std::io::Error);
        let err = Repeats(std::io::Error::other("disk on fire"));
        assert_eq!(Chain(&err).to_string(), "read failed: disk on fire");
    }

    #[test]
    fn slow_clients_get_408_and_are_at_fault() {
        for err in [
            ProxyError::HeaderReadTimeout {
                timeout: Duration::from_secs(10),
            },
            ProxyError::BodyReadTimeout {
                timeout: Duration::from_secs(30),
            },
        ] {
            assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT);
            assert_eq!(err.fault(), Fault::Client);
            assert!(err.to_string().contains("server."), "{err}");
        }
    }

    #[test]
    fn a_stalled_body_deep_in_a_chain_is_blamed_on_the_client() {
        #[derive(Debug, thiserror::Error)]
        #[error("send failed")]
        struct Wrapper(#[source] BodyReadTimeoutError);
        let err = ProxyError::UpstreamBody {
            upstream: "http://127.0.0.1:9".into(),
            source: Box::new(Wrapper(BodyReadTimeoutError(Duration::from_secs(3)))),
        };
        match err.blame_stalled_body() {
            ProxyError::BodyReadTimeout { timeout } => assert_eq!(timeout, Duration::from_secs(3)),
            other => panic!("not blamed on the body: {other}"),
        }
        let err = ProxyError::UpstreamBody {
            upstream: "http://127.0.0.1:9".into(),
            source: Box::new(std::io::Error::other("reset")),
        };
        assert!(matches!(
            err.blame_stalled_body(),
            ProxyError::UpstreamBody { .. }
        ));
    }

    #[test]
    fn timeouts_name_the_upstream_and_the_limit() {
        let err = ProxyError::UpstreamTimeout {
            upstream: "http://127.0.0.1:9".into(),
            what: "send response headers",
            timeout: Duration::from_secs(2),
        };
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.fault(), Fault::Upstream);
        assert!(err.to_string().contains("http://127.0.0.1:9") && err.to_string().contains("2s"));
    }
}
