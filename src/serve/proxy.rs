//! The proxy: one service that decides what a request gets (a replay, an
//! upstream call that is recorded, or a plain forward) and delegates it.
//!
//! Data flow: body (collected under a limit) -> key -> tier -> replay on a
//! hit | single flight, then `crate::serve::upstream_call` on a miss.
//! Routes that are never cached, and passthrough mode, forward the request
//! untouched with its body streamed. Each request goes to the upstream of
//! its [`Dialect`](crate::route::Dialect) (Anthropic's or the OpenAI-compatible one). The service
//! never errors: every failure becomes an answer shaped like the dialect's
//! own errors (see `crate::serve::answer`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;

use crate::body::{collect_pieces, BoxError, CollectError, IdleTimeout, ProxyBody};
use crate::config::{Config, Mode, Timing};
use crate::key::cache::{self, KeyMemo, Keyed};
use crate::key::{Repeats, RequestKey};
use crate::record::redact::{strip_hop_by_hop, Redactor, Sensitive};
use crate::route::{RouteId, Routes};
use crate::serve::admin::{self, Commands};
use crate::serve::answer::Answer;
use crate::serve::catalog::Catalog;
use crate::serve::error::ProxyError;
use crate::serve::flight::Flights;
use crate::serve::headers::{self, Outcome};
use crate::serve::hot_cache::HotCache;
use crate::serve::metrics::{InFlight, Metrics};
use crate::serve::pending::KeyedRequest;
use crate::serve::read_timeout::BodyReadTimeoutError;
use crate::serve::replay::Rendered;
use crate::serve::request;
use crate::serve::runs::Runs;
use crate::serve::upstream::{Upstream, UpstreamSetupError};
use crate::store::{Tier, Tiered};

/// Bytes of rendered recordings kept in memory for the fastest hits: a
/// test suite's working set (thousands of ~1 KB answers) fits, and memory
/// stays bounded however large the store (the budget for a 100,000
/// recording store is 64 MB of RSS in all; see the README's Performance).
const HOT_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The proxy service. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    pub(super) shared: Arc<Shared>,
}

/// What every request of one proxy shares.
pub(super) struct Shared {
    pub(super) mode: Mode,
    pub(super) tier: Arc<dyn Tier>,
    pub(super) upstream: Upstream,
    /// Where Anthropic requests go (`upstream.anthropic_url`).
    pub(super) anthropic: Upstream,
    pub(super) redactor: Redactor,
    pub(super) max_body_bytes: usize,
    pub(super) record_errors: bool,
    pub(super) history: usize,
    pub(super) timing: Timing,
    pub(super) flights: Arc<Flights>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) max_in_flight: usize,
    pub(super) max_recorded_bytes: usize,
    pub(super) admin_token: Option<Sensitive<String>>,
    pub(super) sampling_namespaces: Vec<String>,
    pub(super) hot: HotCache,
    pub(super) memo: KeyMemo,
    pub(super) routes: Routes,
    /// `key.repeats`.
    pub(super) repeats: Repeats,
    /// The call counts of repeat sequences.
    pub(super) runs: Runs,
    /// The command endpoint, once the dispatcher opens it.
    pub(super) commands: std::sync::OnceLock<Commands>,
    /// The shared store, when `[remote]` is configured (then `tier` is
    /// this same [`Tiered`]).
    pub(super) remote: std::sync::OnceLock<Arc<Tiered>>,
    /// The list rows of the web view, built on its first use.
    pub(super) catalog: Catalog,
}

impl Proxy {
    /// A proxy over the recordings in `tier`, configured by `config`.
    pub fn new(config: &Config, tier: Arc<dyn Tier>) -> Result<Proxy, UpstreamSetupError> {
        Ok(Proxy {
            shared: Arc::new(Shared {
                mode: config.mode,
                upstream: Upstream::new(&config.upstream)?,
                anthropic: Upstream::anthropic(&config.upstream)?,
                tier,
                redactor: Redactor::new(config.redact.headers.clone()),
                max_body_bytes: config.server.max_body_bytes,
                record_errors: config.store.record_errors,
                history: config.store.history,
                timing: config.replay.timing,
                flights: Arc::new(Flights::default()),
                metrics: Arc::new(Metrics::priced(config.prices.clone())),
                max_in_flight: config.server.max_in_flight,
                max_recorded_bytes: config.store.max_recorded_bytes,
                admin_token: config.server.admin_token.clone().map(Sensitive),
                sampling_namespaces: config.key.sampling_namespaces.clone(),
                hot: HotCache::new(HOT_CACHE_BYTES),
                memo: KeyMemo::new(cache::DEFAULT_CAPACITY, config.key.rules()),
                routes: config.routes.clone(),
                repeats: config.key.repeats,
                runs: Runs::default(),
                commands: std::sync::OnceLock::new(),
                remote: std::sync::OnceLock::new(),
                catalog: Catalog::default(),
            }),
        })
    }

    /// Where this proxy reads and writes recordings.
    pub fn tier(&self) -> &dyn Tier {
        self.shared.tier.as_ref()
    }

    /// Answers one request, whatever its body type. Never fails.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        // Pinned in a box: the body is borrowed while it is collected,
        // which needs it `Unpin` (the server's own body already is and
        // goes through `respond` without this box).
        self.respond(&parts, Box::pin(body)).await
    }

    /// [`Proxy::handle`] for a request in its parts, the head lent: the
    /// connection's way in. Every async layer stores what it is given,
    /// and a request's future is allocated per request, so the head is
    /// kept in one place (its owner's) and lent to what decides the
    /// answer and to the log line.
    pub(crate) async fn respond<B>(&self, parts: &Parts, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let s = &self.shared;
        // Classified once, here, so the log line can name the route: a
        // copyable id, named by a borrow of the config (no allocation).
        let route = s.routes.classify(&parts.method, parts.uri.path());
        let _in_flight = InFlight::enter(&s.metrics);
        let answer = if s.metrics.in_flight.load(Ordering::Relaxed) > s.max_in_flight as i64 {
            s.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            let error = ProxyError::Overloaded {
                limit: s.max_in_flight,
            };
            let mut answer = Answer::error(&error, None);
            answer
                .response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            answer
        } else {
            self.route(parts, body, route).await
        };
        // One clock read for the histogram and the log line.
        let elapsed = started.elapsed();
        match answer.outcome {
            Some(Outcome::Hit) => {
                s.metrics.hits.fetch_add(1, Ordering::Relaxed);
                if let Some(saved) = answer.saved {
                    s.metrics.models.hit(saved);
                }
                s.metrics.hit_latency.observe(elapsed);
            }
            Some(Outcome::Miss) => {
                s.metrics.misses.fetch_add(1, Ordering::Relaxed);
            }
            Some(Outcome::Bypass) => {
                s.metrics.bypasses.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        crate::request_line!(
            method = %parts.method,
            path = parts.uri.path(),
            route = route.map_or("-", |id| s.routes.name(id)),
            key = %answer.key,
            nearest = %answer.nearest,
            outcome = %crate::logs::access::Word(answer.outcome_str()),
            status = answer.response.status().as_u16(),
            ms = %crate::logs::access::Millis(elapsed),
        );
        answer.response
    }

    /// Decides what the request gets; `route` is the cached route it is on
    /// (`None`: pass it through).
    ///
    /// Every path but a local hit awaits its future in a box of its own:
    /// a future holds the largest of its states, and the miss paths' made
    /// each hit's future kilobytes long, copied into its box per request.
    ///
    /// Not an `async fn`: one of those keeps a second copy of each of its
    /// arguments in its future (rust-lang/rust#62958); this block uses
    /// them where they are.
    #[allow(clippy::manual_async_fn)]
    fn route<'a, B>(
        &'a self,
        parts: &'a Parts,
        mut body: B,
        route: Option<RouteId>,
    ) -> impl Future<Output = Answer> + 'a
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        async move {
            let s = &self.shared;
            let path = parts.uri.path();
            if path.starts_with(admin::ADMIN_PREFIX) {
                // Rare: their copy of the head costs the hits nothing.
                if path == admin::COMMAND_PATH {
                    let request = Request::from_parts(parts.clone(), body);
                    return Answer::new(Box::pin(self.command(request)).await, None, None);
                }
                return Answer::new(Box::pin(self.admin(parts.clone())).await, None, None);
            }
            let asked = request::Asked::of(&parts.headers);
            let dialect = asked.dialect(parts.uri.path());
            let mode = match asked.mode(s.mode) {
                Ok(mode) => mode,
                Err(error) => return Answer::error_in(dialect, &error, None),
            };
            if mode == Mode::Passthrough || route.is_none() {
                let body = ProxyBody::boxed(body);
                return Box::pin(self.forward(parts, body)).await;
            }

            let mut pieces = match collect_pieces(&mut body, s.max_body_bytes).await {
                Ok(pieces) => pieces,
                Err(CollectError::TooLarge) => {
                    let error = ProxyError::BodyTooLarge {
                        limit: s.max_body_bytes,
                    };
                    return Answer::error_in(dialect, &error, None);
                }
                Err(CollectError::Read(e)) => {
                    let error = match e.downcast::<BodyReadTimeoutError>() {
                        Ok(stalled) => ProxyError::BodyReadTimeout { timeout: stalled.0 },
                        Err(e) => ProxyError::ClientBody { source: e },
                    };
                    return Answer::error_in(dialect, &error, None);
                }
            };
            // A repeat of exact bytes takes its key from the memo, without
            // joining the body's pieces; the canonical form is only built when
            // this request needs it.
            let remembered = s
                .memo
                .remembered(&asked.key_parts(parts, &[]), pieces.as_slice());
            let Keyed { key, canonical } = match remembered {
                Some(key) => Keyed {
                    key,
                    canonical: None,
                },
                None => s.memo.key(&asked.key_parts(parts, pieces.joined())),
            };
            let timing = match asked.replay_timing(s.timing) {
                Ok(timing) => timing,
                Err(error) => return Answer::error_in(dialect, &error, Some(&key)),
            };
            let re_record = match mode {
                Mode::Record => true,
                // Replay never calls the upstream, so `no-cache` cannot apply.
                Mode::Replay => false,
                Mode::Auto | Mode::Passthrough => asked.wants_no_cache(),
            };
            let request = KeyedRequest {
                key,
                canonical,
                mode,
                re_record,
                timing,
                dialect,
            };
            let repeats = match asked.repeats(s.repeats) {
                Ok(repeats) => repeats,
                Err(error) => return Answer::error(&error, Some(&key)),
            };
            if repeats == Repeats::Sequence {
                return Box::pin(self.sequence(parts, pieces.into_bytes(), request)).await;
            }
            if !re_record {
                if let Some(answer) = self.replay(&key, timing) {
                    return self.mark_tier(answer, "local");
                }
            }
            // Past the local store, in a box of its own: a local hit's future
            // holds none of the miss paths' state (it is moved into its box
            // for every request, and a box over 1 KB costs malloc's slow path).
            Box::pin(self.past_local(parts, asked, pieces, request)).await
        }
    }

    /// A hit for `key`, if it is recorded: from the hot cache, else from
    /// the tier (then cached). A corrupt or unreadable recording is a miss.
    pub(super) fn replay(&self, key: &RequestKey, timing: Timing) -> Option<Answer> {
        let s = &self.shared;
        let rendered = match s.hot.get(key) {
            Some(rendered) => rendered,
            None => match s.tier.replayable(key) {
                Ok(Some(recording)) => {
                    let rendered = Arc::new(Rendered::from_replayable(recording, key));
                    s.hot.insert(*key, rendered.clone());
                    rendered
                }
                Ok(None) => return None,
                Err(error) if error.is_corrupt() => {
                    tracing::warn!(key = %key, %error, "corrupt recording treated as a miss; it will be replaced if re-recorded");
                    return None;
                }
                Err(error) => {
                    tracing::error!(key = %key, %error, "store read failed; treating as a miss");
                    return None;
                }
            },
        };
        let mut answer = Answer::new(rendered.respond(timing), Some(Outcome::Hit), Some(*key));
        answer.saved = Some(rendered.saved(|body, events| s.metrics.models.saved_by(body, events)));
        Some(answer)
    }

    /// Forwards a request untouched and streams the answer back.
    async fn forward(&self, parts: &Parts, body: ProxyBody) -> Answer {
        let dialect = request::dialect_of(parts);
        let upstream = self.shared.upstream_for(dialect);
        let path = request::path_and_query(parts);
        match upstream
            .send(parts.method.clone(), path, &parts.headers, body)
            .await
        {
            Ok(response) => {
                let (mut head, incoming) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                head.headers.remove(header::CONTENT_LENGTH);
                headers::mark(&mut head.headers, Outcome::Bypass, None);
                let body = ProxyBody::boxed(IdleTimeout::new(incoming, upstream.idle_timeout()));
                Answer::new(
                    Response::from_parts(head, body),
                    Some(Outcome::Bypass),
                    None,
                )
            }
            Err(error) => Answer::error_in(dialect, &error.blame_stalled_body(), None),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handle_reads_a_body_that_is_not_unpin() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let proxy = Proxy::new(&Config::defaults(), Arc::new(store)).unwrap();
        // Not `Unpin`, as a library user's body may be: a stream made of
        // an async block.
        let body = http_body_util::StreamBody::new(futures_util::stream::once(async {
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
                b"{\"model\":\"m\"}",
            )))
        }));
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-llmtape-mode", "replay")
            .body(body)
            .unwrap();
        let response = proxy.handle(request).await;
        // Read and keyed: a replay miss names the request's key.
        assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
        assert!(response.headers().contains_key("x-llmtape-key"));
    }
}
