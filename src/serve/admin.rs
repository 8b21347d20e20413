//! The admin endpoints under `/_llmtape/`: health and Prometheus metrics,
//! answered to loopback clients, or to others that bring the configured
//! token; `POST /_llmtape/runs/ID/reset`, which starts a repeat
//! sequence run's count again; and the contract of the command endpoint, `POST
//! /_llmtape/command` (its path, its per-start token, the [`Reply`] it
//! sends), whose handler is `crate::serve::admin_commands`.
//!
//! This is also where the web view's requests are admitted and routed:
//! `/_llmtape/ui*` to its assets (`crate::serve::ui`), and the JSON
//! endpoints under [`API_PREFIX`] to `crate::serve::ui_api` (they read the
//! store, so they run on a blocking thread, not here).

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use serde_json::json;

use crate::body::{full, json_response, ProxyBody};
use crate::config::Mode;
use crate::record::redact::Sensitive;
use crate::serve::metrics::{LiveStats, Metrics};
use crate::serve::runs::Runs;
use crate::serve::ui;
use crate::store::Tier;

/// The client's address, put into request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Where the admin endpoints live; the proxy routes requests under it here.
pub const ADMIN_PREFIX: &str = "/_llmtape/";

/// Where the web view's JSON endpoints live (`crate::serve::ui_api`).
pub const API_PREFIX: &str = "/_llmtape/api/";

/// An admin error answer: `{"error": {message, type, param, code}}`, the
/// OpenAI shape every admin endpoint uses.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let kind = match status.is_server_error() {
        true => "server_error",
        false => "invalid_request_error",
    };
    json_response(
        status,
        json!({"error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": code,
        }})
        .to_string(),
    )
}

/// Tells the admin endpoints who is asking: attaches [`Peer`] to requests
/// under [`ADMIN_PREFIX`] (only those, to spare every other request the
/// extension map's allocation). The server calls it on every request.
pub fn tag_peer<B>(request: &mut Request<B>, peer: std::net::SocketAddr) {
    if request.uri().path().starts_with(ADMIN_PREFIX) {
        request.extensions_mut().insert(Peer(peer));
    }
}

/// What the admin endpoints report and check.
pub struct AdminView<'a> {
    /// The default mode.
    pub mode: Mode,
    /// The upstream base URL.
    pub upstream: &'a str,
    /// The base URL of Anthropic requests.
    pub anthropic_upstream: &'a str,
    /// Recordings in the store or fixtures folder.
    pub recordings: usize,
    /// The counters.
    pub metrics: &'a Metrics,
    /// The token that admits non-loopback clients, if configured.
    pub token: Option<&'a str>,
    /// The counts of repeat sequences, by run.
    pub runs: &'a Runs,
    /// The shared store: `"up"`, `"down"` or `"off"` (none configured).
    pub remote: &'static str,
    /// The shared store's metrics (Prometheus text; empty when off).
    pub remote_metrics: String,
}

/// The run a `/_llmtape/runs/ID/reset` path names (ID as sent, not
/// percent-decoded: the same text as its `x-llmtape-run` header).
fn run_to_reset(path: &str) -> Option<&str> {
    path.strip_prefix("/_llmtape/runs/")?
        .strip_suffix("/reset")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Answers a request for `/_llmtape/...`; `None` for one under
/// [`API_PREFIX`] that passed the access check, which
/// `crate::serve::ui_api` answers.
pub fn respond(request: &Parts, view: &AdminView<'_>) -> Option<Response<ProxyBody>> {
    let path = request.uri.path();
    let loopback = request
        .extensions
        .get::<Peer>()
        .is_none_or(|Peer(addr)| addr.ip().is_loopback());
    let token_ok = view.token.is_some_and(|token| {
        request
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| given == token)
    });
    if !loopback && !token_ok {
        return Some(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": {
                "message": "llmtape's admin endpoints answer loopback clients only; set server.admin_token_env and send Authorization: Bearer <token> to reach them from elsewhere",
                "type": "invalid_request_error",
                "param": null,
                "code": "admin_forbidden",
            }})
            .to_string(),
        ));
    }
    if path.starts_with(API_PREFIX) {
        return None;
    }
    Some(answer(request, path, view))
}

/// The admin endpoints that are not the API's.
fn answer(request: &Parts, path: &str, view: &AdminView<'_>) -> Response<ProxyBody> {
    if ui::is_ui_path(path) {
        if request.method != http::Method::GET && request.method != http::Method::HEAD {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{path} is the web view: send GET"),
            );
        }
        return ui::asset(path).unwrap_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "unknown_admin_endpoint",
                &format!("the web view has no asset {path}; open /_llmtape/ui"),
            )
        });
    }
    if path == "/_llmtape/metrics" {
        let mut text = view.metrics.render(view.recordings);
        text.push_str(&view.remote_metrics);
        let mut response = Response::new(full(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return response;
    }
    if let Some(run) = run_to_reset(path) {
        if request.method != http::Method::POST {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": {
                    "message": format!("{path} resets a run: send POST"),
                    "type": "invalid_request_error",
                    "param": null,
                    "code": "method_not_allowed",
                }})
                .to_string(),
            );
        }
        let had_calls = view.runs.reset(run);
        return json_response(
            StatusCode::OK,
            json!({"run": run, "reset": true, "had_calls": had_calls}).to_string(),
        );
    }
    let (status, body) = match path {
        "/_llmtape/health" => (
            StatusCode::OK,
            json!({
                "status": "ok",
                "mode": view.mode.as_str(),
                "upstream": view.upstream,
                "anthropic_upstream": view.anthropic_upstream,
                "recordings": view.recordings,
                "remote": view.remote,
            }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": {
                "message": format!("no llmtape admin endpoint {path}; try /_llmtape/health, /_llmtape/metrics, /_llmtape/ui or /_llmtape/api/stats"),
                "type": "invalid_request_error",
                "param": null,
                "code": "unknown_admin_endpoint",
            }}),
        ),
    };
    json_response(status, body.to_string())
}

/// Where commands are sent.
pub const COMMAND_PATH: &str = "/_llmtape/command";

/// How often a running command's answer sends a blank line, so the caller
/// can tell a long command from a dead server (it gives up after a
/// multiple of this without a byte).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs one command, sent as JSON bytes, on the server's tier. Called on a
/// blocking thread, inside the server's runtime.
pub trait CommandRunner: Send + Sync {
    /// The command's output and outcome; a request it cannot read is a
    /// [`Reply`] with an error too.
    fn run(&self, request: &[u8], tier: &dyn Tier) -> Reply;

    /// [`CommandRunner::run`] in a server whose counters are `live` (what
    /// `llmtape stats` prints while serving).
    fn run_live(&self, request: &[u8], tier: &dyn Tier, live: LiveStats) -> Reply {
        let _ = live;
        self.run(request, tier)
    }
}

/// What a command printed and how it ended: the caller writes `stdout` and
/// `stderr` as they are and exits with `exit_code`, after printing `error`
/// as `main` would have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr (warnings, skipped files).
    pub stderr: String,
    /// The process exit code: 0, or the error's.
    pub exit_code: u8,
    /// The error's one-line message, when the command failed.
    pub error: Option<String>,
}

impl Reply {
    /// A command that did not run: nothing printed, just the error.
    pub fn failed(exit_code: u8, error: String) -> Reply {
        Reply {
            stdout: String::new(),
            stderr: String::new(),
            exit_code,
            error: Some(error),
        }
    }
}

/// The command endpoint's configuration: the token and the runner.
pub struct Commands {
    token: Sensitive<String>,
    runner: Arc<dyn CommandRunner>,
}

impl Commands {
    /// Commands authenticated by `token`, run by `runner`.
    pub fn new(token: String, runner: Arc<dyn CommandRunner>) -> Commands {
        Commands {
            token: Sensitive(token),
            runner,
        }
    }

    /// The runner.
    pub(crate) fn runner(&self) -> Arc<dyn CommandRunner> {
        self.runner.clone()
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    pub(crate) fn admits(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same_bytes(given.as_bytes(), self.token.0.as_bytes()))
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_path_names_one_run() {
        assert_eq!(
            run_to_reset("/_llmtape/runs/suite-1/reset"),
            Some("suite-1")
        );
        assert_eq!(run_to_reset("/_llmtape/runs//reset"), None);
        assert_eq!(run_to_reset("/_llmtape/runs/a/b/reset"), None);
        assert_eq!(run_to_reset("/_llmtape/runs/a"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        assert!(!same_bytes(b"", b"a"));
    }

    fn tagged(path: &str) -> Option<std::net::SocketAddr> {
        let mut request = Request::get(path).body(()).unwrap();
        tag_peer(&mut request, "192.0.2.7:5000".parse().unwrap());
        request.extensions().get::<Peer>().map(|Peer(addr)| *addr)
    }

    #[test]
    fn admin_requests_carry_their_peer_and_others_do_not() {
        // Without a Peer a request counts as loopback, so every admin path
        // must get one.
        for path in ["/_llmtape/health", "/_llmtape/metrics", "/_llmtape/x"] {
            assert_eq!(
                tagged(path),
                Some("192.0.2.7:5000".parse().unwrap()),
                "{path}"
            );
        }
        for path in ["/v1/chat/completions", "/_llmtapex", "/"] {
            assert_eq!(tagged(path), None, "{path}");
        }
    }
}
