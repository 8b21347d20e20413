//! The upstream client: hyper-util's pooled client over hyper-rustls.
//!
//! Owns the connection to the real API and the rewrite of request headers
//! on the way there: hop-by-hop and `x-llmtape-*` headers are dropped, the
//! body is asked for identity-encoded (so what is stored is readable JSON),
//! and with `upstream.api_key_env` the caller's credential is replaced by
//! the real key. There is one client per [`Dialect`]: `upstream.url` for
//! OpenAI-compatible requests, `upstream.anthropic_url` for Anthropic's,
//! whose configured key (`upstream.anthropic_api_key_env`) goes as
//! `x-api-key`. Does not know about keys, the store or modes.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use crate::record::redact::{strip_hop_by_hop, Sensitive};
use crate::route::Dialect;
use crate::serve::error::{ProxyError, UpstreamRequestError};

/// Idle pooled connections are closed after this; OpenAI's edge closes
/// idle keep-alive connections after a few minutes anyway.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the upstream client could not be set up (at start, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// `upstream.api_key_env` (or `anthropic_api_key_env`) names a
    /// variable that is not set.
    #[error("{setting} names {name}, but {name} is not set in the environment; export it or remove {setting}")]
    MissingKey {
        /// The setting.
        setting: &'static str,
        /// The variable.
        name: String,
    },
    /// The key cannot be sent as a header.
    #[error("the value of {name} is not a valid header value")]
    BadKey {
        /// The variable.
        name: String,
    },
}

/// A client for one upstream base URL.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    base: Uri,
    base_path: String,
    display: String,
    api_key: Option<Sensitive<HeaderValue>>,
    dialect: Dialect,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    /// Builds the client; reads the key named by `api_key_env` now, so a
    /// missing variable stops the start instead of failing every request.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamSetupError> {
        Upstream::build(
            config,
            &config.url,
            config.api_key_env.as_deref(),
            "upstream.api_key_env",
            Dialect::OpenAi,
        )
    }

    /// The client for Anthropic requests: `upstream.anthropic_url`, with
    /// `upstream.anthropic_api_key_env` sent as `x-api-key`; timeouts as
    /// for the OpenAI upstream.
    pub fn anthropic(config: &UpstreamConfig) -> Result<Upstream, UpstreamSetupError> {
        Upstream::build(
            config,
            &config.anthropic_url,
            config.anthropic_api_key_env.as_deref(),
            "upstream.anthropic_api_key_env",
            Dialect::Anthropic,
        )
    }

    fn build(
        config: &UpstreamConfig,
        url: &Uri,
        api_key_env: Option<&str>,
        setting: &'static str,
        dialect: Dialect,
    ) -> Result<Upstream, UpstreamSetupError> {
        let api_key = match api_key_env {
            None => None,
            Some(name) => {
                let name = name.to_string();
                let key = std::env::var(&name)
                    .ok()
                    .filter(|k| !k.trim().is_empty())
                    .ok_or_else(|| UpstreamSetupError::MissingKey {
                        setting,
                        name: name.clone(),
                    })?;
                let mut value = HeaderValue::from_str(key.trim())
                    .map_err(|_| UpstreamSetupError::BadKey { name: name.clone() })?;
                value.set_sensitive(true);
                Some(Sensitive(value))
            }
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);

        let display = url.to_string().trim_end_matches('/').to_string();
        Ok(Upstream {
            client,
            base_path: url.path().trim_end_matches('/').to_string(),
            base: url.clone(),
            display,
            api_key,
            dialect,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        })
    }

    /// The base URL, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The longest wait for response headers.
    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout
    }

    /// The longest gap allowed between body chunks.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends a request and waits (bounded) for the response headers.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, ProxyError> {
        let uri = self.uri_for(path_and_query)?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|e| ProxyError::Internal { source: e.into() })?;
        *request.headers_mut() = self.forward_headers(headers);

        match tokio::time::timeout(self.first_byte_timeout, self.client.request(request)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: self.display.clone(),
                what: "send response headers",
                timeout: self.first_byte_timeout,
            }),
            Ok(Err(e)) => Err(classify_client_error(
                &self.display,
                e,
                self.first_byte_timeout,
            )),
            Ok(Ok(response)) => Ok(response),
        }
    }

    fn uri_for(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let mut parts = self.base.clone().into_parts();
        let joined = format!("{}{}", self.base_path, path_and_query);
        let path_and_query = match joined.parse() {
            Ok(path_and_query) => path_and_query,
            Err(source) => {
                return Err(ProxyError::Internal {
                    source: UpstreamRequestError::Path {
                        path: joined,
                        source,
                    },
                })
            }
        };
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| ProxyError::Internal { source: e.into() })
    }

    fn forward_headers(&self, incoming: &HeaderMap) -> HeaderMap {
        let mut headers = incoming.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        let ours: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                name.as_str()
                    .starts_with(crate::record::redact::OWN_HEADER_PREFIX)
            })
            .cloned()
            .collect();
        for name in ours {
            headers.remove(name);
        }
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let (Some(Sensitive(key)), Dialect::Anthropic) = (&self.api_key, self.dialect) {
            // The configured key replaces whatever the caller sent, an
            // auth token (`Authorization`) included.
            headers.remove(header::AUTHORIZATION);
            headers.insert(HeaderName::from_static("x-api-key"), key.clone());
        } else if let Some(Sensitive(key)) = &self.api_key {
            let azure = HeaderName::from_static("api-key");
            if headers.contains_key(&azure) {
                headers.insert(azure, key.clone());
            } else {
                let mut bearer =
                    HeaderValue::from_str(&format!("Bearer {}", key.to_str().unwrap_or_default()))
                        .expect("a valid header value prefixed with ASCII stays valid");
                bearer.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, bearer);
            }
        }
        headers
    }
}

fn classify_client_error(
    upstream: &str,
    error: hyper_util::client::legacy::Error,
    timeout: Duration,
) -> ProxyError {
    if is_timeout(&error) {
        return ProxyError::UpstreamTimeout {
            upstream: upstream.to_string(),
            what: "accept the connection",
            timeout,
        };
    }
    ProxyError::UpstreamUnreachable {
        upstream: upstream.to_string(),
        source: error,
    }
}

/// True when a timeout is anywhere in the error's chain: the connector's
/// `connect_timeout` (hyper-util reports it as an `io::Error` of kind
/// `TimedOut`), the OS giving up on a connect (`ETIMEDOUT`, the same
/// kind), or a tokio timer expiring.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            || error.is::<tokio::time::error::Elapsed>()
        {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn upstream(url: &str, key_env: Option<&str>) -> Result<Upstream, UpstreamSetupError> {
        let mut config = Config::defaults().upstream;
        config.url = url.parse().unwrap();
        config.api_key_env = key_env.map(String::from);
        Upstream::new(&config)
    }

    #[tokio::test]
    async fn paths_join_the_base_prefix() {
        let up = upstream("http://127.0.0.1:9/openai/", None).unwrap();
        assert_eq!(
            up.uri_for("/v1/models?x=1").unwrap().to_string(),
            "http://127.0.0.1:9/openai/v1/models?x=1"
        );
    }

    #[tokio::test]
    async fn headers_are_rewritten_for_the_upstream() {
        let up = upstream("http://127.0.0.1:9", None).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("proxy"));
        headers.insert("x-llmtape-mode", HeaderValue::from_static("record"));
        headers.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-test-dummy"),
        );
        headers.insert("connection", HeaderValue::from_static("close"));
        let out = up.forward_headers(&headers);
        assert!(!out.contains_key("host") && !out.contains_key("x-llmtape-mode"));
        assert!(!out.contains_key("connection"));
        assert_eq!(out["accept-encoding"], "identity");
        assert_eq!(out["authorization"], "Bearer sk-test-dummy");
    }

    #[tokio::test]
    async fn a_configured_key_replaces_the_callers() {
        std::env::set_var("LLMTAPE_TEST_UPSTREAM_KEY", "sk-test-real-dummy");
        let up = upstream("http://127.0.0.1:9", Some("LLMTAPE_TEST_UPSTREAM_KEY")).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-test-dummy"),
        );
        assert_eq!(
            up.forward_headers(&headers)["authorization"],
            "Bearer sk-test-real-dummy"
        );
        let mut azure = HeaderMap::new();
        azure.insert("api-key", HeaderValue::from_static("dummy"));
        let out = up.forward_headers(&azure);
        assert_eq!(out["api-key"], "sk-test-real-dummy");
        assert!(!out.contains_key("authorization"));
    }

    /// A client whose connector fails every connect with an `io::Error`
    /// of `kind`, wrapped by hyper-util exactly as a real connect failure.
    async fn client_error(
        kind: std::io::ErrorKind,
        message: &'static str,
    ) -> hyper_util::client::legacy::Error {
        let connector = tower::service_fn(move |_: Uri| {
            std::future::ready(Err::<
                hyper_util::rt::TokioIo<tokio::net::TcpStream>,
                std::io::Error,
            >(std::io::Error::new(kind, message)))
        });
        let client: Client<_, ProxyBody> = Client::builder(TokioExecutor::new()).build(connector);
        let request = Request::get("http://127.0.0.1:9/")
            .body(crate::body::full(bytes::Bytes::new()))
            .unwrap();
        client.request(request).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_connect_timeout_is_recognised_by_type() {
        let timeout = Duration::from_secs(7);
        // hyper-util's connect timeout: an io::Error of kind TimedOut
        // around tokio's Elapsed; the text says neither "timed out" nor
        // "Timeout".
        let error = client_error(std::io::ErrorKind::TimedOut, "deadline has elapsed").await;
        match classify_client_error("http://up", error, timeout) {
            ProxyError::UpstreamTimeout { what, timeout, .. } => {
                assert_eq!(what, "accept the connection");
                assert_eq!(timeout, Duration::from_secs(7));
            }
            other => panic!("not a timeout: {other:?}"),
        }
    }

    #[tokio::test]
    async fn other_connect_errors_are_unreachable_and_keep_their_cause() {
        // The text mentions a timeout, the kind does not: not a timeout.
        let error = client_error(
            std::io::ErrorKind::ConnectionRefused,
            "refused (the server timed out earlier)",
        )
        .await;
        let error = classify_client_error("http://up", error, Duration::from_secs(7));
        let ProxyError::UpstreamUnreachable { .. } = &error else {
            panic!("not unreachable: {error:?}");
        };
        assert!(
            error.to_string().starts_with(
                "llmtape could not reach the upstream http://up: client error (Connect)"
            ),
            "{error}"
        );
        assert!(error.to_string().contains("refused"), "{error}");
        let mut source = std::error::Error::source(&error);
        let mut kinds = Vec::new();
        while let Some(inner) = source {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                kinds.push(io.kind());
            }
            source = inner.source();
        }
        assert_eq!(kinds, vec![std::io::ErrorKind::ConnectionRefused]);
    }

    #[tokio::test]
    async fn the_anthropic_upstream_sends_its_key_as_x_api_key() {
        std::env::set_var("LLMTAPE_TEST_ANTHROPIC_KEY", "sk-ant-test-real-dummy");
        let mut config = Config::defaults().upstream;
        config.anthropic_url = "http://127.0.0.1:9/anthropic".parse().unwrap();
        config.anthropic_api_key_env = Some("LLMTAPE_TEST_ANTHROPIC_KEY".into());
        let up = Upstream::anthropic(&config).unwrap();
        assert_eq!(up.display(), "http://127.0.0.1:9/anthropic");
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("sk-ant-caller"));
        headers.insert("authorization", HeaderValue::from_static("Bearer tok"));
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        let out = up.forward_headers(&headers);
        assert_eq!(out["x-api-key"], "sk-ant-test-real-dummy");
        assert!(out["x-api-key"].is_sensitive());
        assert!(!out.contains_key("authorization"));
        assert_eq!(out["anthropic-version"], "2023-06-01");
        // Without a configured key, the caller's goes through untouched.
        config.anthropic_api_key_env = None;
        let out = Upstream::anthropic(&config)
            .unwrap()
            .forward_headers(&headers);
        assert_eq!(out["x-api-key"], "sk-ant-caller");
        // The OpenAI upstream's key setting does not reach Anthropic's.
        config.api_key_env = Some("LLMTAPE_TEST_ANTHROPIC_KEY".into());
        let out = Upstream::anthropic(&config)
            .unwrap()
            .forward_headers(&headers);
        assert_eq!(out["x-api-key"], "sk-ant-caller");
        config.anthropic_api_key_env = Some("LLMTAPE_TEST_SURELY_UNSET_TOO".into());
        let err = Upstream::anthropic(&config).err().unwrap().to_string();
        assert!(
            err.starts_with("upstream.anthropic_api_key_env names LLMTAPE_TEST_SURELY_UNSET_TOO"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_key_variable_is_a_start_error() {
        let err = upstream("http://127.0.0.1:9", Some("LLMTAPE_TEST_SURELY_UNSET"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("LLMTAPE_TEST_SURELY_UNSET"));
    }
}
