//! The command endpoint's handler, `POST /_llmtape/command`: a command
//! (`ls`, `show`, `rm`, `import`, ...) that finds the store held by this
//! `serve` sends it here, and the server runs it on its own tier.
//!
//! Owns the answer: the token check (required from every client, loopback
//! included: only the user who started `serve` can read it, in
//! `serve.json`), the request body's limit, the heartbeats that tell the
//! caller the server is alive while a long command runs, and the view of
//! the tier a command gets, which forgets hot-cache renderings of what it
//! changes (so a replay never serves a deleted or replaced recording).
//!
//! What a command is, and how it runs, is not here: the dispatcher hands
//! in a [`CommandRunner`] ([`Proxy::accept_commands`]), since the commands
//! stand on the serve path and not the other way round. The endpoint's
//! contract (path, token, reply) is in [`crate::serve::admin`]; the client
//! side is `crate::remote`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::StreamBody;
use serde_json::json;

use crate::body::{collect_limited, json_response, BoxError, ProxyBody};
use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::serve::admin::{Commands, Reply, HEARTBEAT};
use crate::serve::proxy::{Proxy, Shared};
use crate::store::{Tier, TierError};

/// A command's request is a few hundred bytes of JSON (options and paths);
/// anything near this is not one.
const MAX_COMMAND_BYTES: usize = 1024 * 1024;

impl Proxy {
    /// Opens the command endpoint. Until then (and in a proxy that never
    /// calls this, such as the tests' in-process one) it answers 404.
    /// Only the first call counts.
    pub fn accept_commands(&self, commands: Commands) {
        let _ = self.shared.commands.set(commands);
    }

    /// Answers `POST /_llmtape/command`.
    pub(super) async fn command<B>(&self, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(commands) = self.shared.commands.get() else {
            return refusal(
                StatusCode::NOT_FOUND,
                "commands_off",
                "this llmtape serve runs no commands",
            );
        };
        if !commands.admits(request.headers()) {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "command_token_required",
                "llmtape commands need Authorization: Bearer <the token in the store's serve.json>",
            );
        }
        if request.method() != http::Method::POST {
            return refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "send commands with POST",
            );
        }
        let body = match collect_limited(request.into_body(), MAX_COMMAND_BYTES).await {
            Ok(body) => body,
            Err(_) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_command",
                    "the command's body could not be read, or is larger than 1 MiB",
                )
            }
        };
        let runner = commands.runner();
        let tier = Fresh {
            shared: self.shared.clone(),
        };
        // The command runs to its end even if the caller leaves: a write
        // it started is finished, never cut.
        let live = self.shared.live_stats();
        let task = tokio::task::spawn_blocking(move || runner.run_live(&body, &tier, live));
        let frames = futures_util::stream::unfold(Some(task), |task| async move {
            let mut task = task?;
            tokio::select! {
                done = &mut task => {
                    let reply = done.unwrap_or_else(|error| {
                        tracing::error!(%error, "a command failed inside serve");
                        Reply::failed(2, format!("the command failed inside the running llmtape serve ({error}); see its log"))
                    });
                    let json = serde_json::to_vec(&reply).expect("a reply always serialises");
                    Some((Ok::<_, BoxError>(Frame::data(Bytes::from(json))), None))
                }
                () = tokio::time::sleep(HEARTBEAT) => {
                    Some((Ok(Frame::data(Bytes::from_static(b"\n"))), Some(task)))
                }
            }
        });
        let mut response = Response::new(ProxyBody::boxed(StreamBody::new(frames)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// An OpenAI-shaped error answer, like the other admin endpoints give.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json_response(
        status,
        json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": code,
        }})
        .to_string(),
    )
}

/// The server's tier as a command sees it: every write also forgets the
/// key's hot-cache rendering, as a recording does
/// (`crate::serve::upstream_call`). The store keeps its own pointer index
/// right itself.
struct Fresh {
    shared: Arc<Shared>,
}

impl Fresh {
    fn tier(&self) -> &dyn Tier {
        self.shared.tier.as_ref()
    }

    fn forget(&self, key: &RequestKey) {
        self.shared.hot.remove(key);
        // The web view's rows are rebuilt from the tier on their next use.
        self.shared.catalog.invalidate();
    }
}

impl Tier for Fresh {
    crate::store::forward_reads!(tier);

    fn put(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, TierError> {
        let written = self.tier().put(key, recording, history, replace);
        self.forget(key);
        written
    }

    fn replace(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: &[Recording],
    ) -> Result<(), TierError> {
        let replaced = self.tier().replace(key, recording, history);
        self.forget(key);
        replaced
    }

    fn remove(&self, key: &RequestKey) -> Result<bool, TierError> {
        let removed = self.tier().remove(key);
        self.forget(key);
        removed
    }

    fn location(&self) -> &Path {
        self.tier().location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::record::recording::test_entry;
    use crate::serve::admin::{CommandRunner, COMMAND_PATH};
    use crate::serve::replay::Rendered;
    use crate::store::SledStore;
    use http_body_util::BodyExt;

    struct Echo;

    impl CommandRunner for Echo {
        fn run(&self, request: &[u8], tier: &dyn Tier) -> Reply {
            let key = RequestKey::from_hex(std::str::from_utf8(request).unwrap()).unwrap();
            let removed = tier.remove(&key).unwrap();
            Reply {
                stdout: format!("removed: {removed}\n"),
                stderr: String::new(),
                exit_code: 0,
                error: None,
            }
        }
    }

    fn command(token: Option<&str>, body: &str) -> Request<http_body_util::Full<Bytes>> {
        let mut request = Request::post(COMMAND_PATH);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    async fn text(response: Response<ProxyBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_command_needs_the_token_and_its_writes_leave_no_stale_rendering() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let hex = "ab".repeat(32);
        let key = RequestKey::from_hex(&hex).unwrap();
        let entry = test_entry(&hex, "{}", "fp", Some("m"), "t");
        store.put(&key, &entry, 5).unwrap();
        let config = Config::defaults();
        let proxy = Proxy::new(&config, Arc::new(store)).unwrap();
        let rendered =
            Rendered::from_replayable(proxy.tier().replayable(&key).unwrap().unwrap(), &key);
        proxy.shared.hot.insert(key, Arc::new(rendered));

        let off = proxy.command(command(Some("t0k"), &hex)).await;
        assert_eq!(
            off.status(),
            StatusCode::NOT_FOUND,
            "no commands until accepted"
        );
        proxy.accept_commands(Commands::new("t0k".into(), Arc::new(Echo)));
        for token in [None, Some("t0j"), Some("t0k0")] {
            let refused = proxy.command(command(token, &hex)).await;
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        }
        assert!(proxy.shared.hot.get(&key).is_some(), "nothing ran");

        let answer = proxy.command(command(Some("t0k"), &hex)).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let reply: Reply = serde_json::from_str(&text(answer).await).unwrap();
        assert_eq!(reply.stdout, "removed: true\n");
        assert!(
            proxy.shared.hot.get(&key).is_none(),
            "the rendering is forgotten"
        );
        assert!(proxy.tier().get(&key).unwrap().is_none());
    }
}
