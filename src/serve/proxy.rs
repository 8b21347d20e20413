//! The proxy: one service that turns a request into a replay, a recording
//! or a plain forward.
//!
//! Data flow: body (collected under a limit) -> key -> store -> replay on a
//! hit | upstream + record on a miss. Routes that are never cached, and
//! passthrough mode, forward the request untouched with its body streamed.
//! The service never errors: every failure becomes an OpenAI-shaped answer
//! (see [`crate::serve::error`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use crate::body::{
    collect_limited, full, json_response, BoxError, CollectError, IdleTimeout, IdleTimeoutError,
    ProxyBody,
};
use crate::config::{Config, Mode, Scope, Timing};
use crate::key::cache::{self, KeyMemo, Keyed};
use crate::key::{Canonical, KeyRules, RequestKey, RequestParts};
use crate::record::recording::Recording;
use crate::record::redact::Sensitive;
use crate::record::redact::{strip_hop_by_hop, Redactor};
use crate::record::{self, StreamRecorder, StreamState};
use crate::route::Route;
use crate::serve::admin::{self, AdminView};
use crate::serve::error::{Fault, ProxyError};
use crate::serve::flight::{Ending, Flight, Flights, Lead, Role};
use crate::serve::hot_cache::HotCache;
use crate::serve::metrics::Metrics;
use crate::serve::nearest::{self, Nearest};
use crate::serve::replay::{self, Rendered};
use crate::serve::upstream::{Upstream, UpstreamSetupError};
use crate::store::Recordings;
use crate::store::StoreError;

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
/// On a replay miss: the nearest recording's key and the paths that differ.
pub const MISS_NEAREST_HEADER: &str = "x-llmtape-miss-nearest";
/// On a re-recording whose fingerprint differs: `old -> new`.
pub const FINGERPRINT_CHANGED_HEADER: &str = "x-llmtape-fingerprint-changed";
/// Set when an answer was forwarded but not recorded, with the reason.
pub const NOT_RECORDED_HEADER: &str = "x-llmtape-not-recorded";
/// Per-request override of `replay.timing`.
pub const REPLAY_TIMING_HEADER: &str = "x-llmtape-replay-timing";

/// Counts a request as in flight while it lives.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A streamed miss being forwarded and recorded.
struct PendingStream {
    canonical: Canonical,
    key: RequestKey,
    /// When the request went upstream (event offsets count from here).
    sent: Instant,
    /// Rewrite an existing fixture (record mode).
    replace: bool,
    /// Followers to share the stream with.
    lead: Option<Lead>,
}

/// Bytes of rendered recordings kept in memory for the fastest hits: a
/// test suite's working set (thousands of ~1 KB answers) fits, and memory
/// stays bounded however large the store (the budget for a 100,000
/// recording store is 64 MB of RSS in all; see the README's Performance).
const HOT_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// How often a request re-joins after the request it waited on went away
/// (each such wait is bounded); past it, it simply asks the upstream.
const MAX_FOLLOW_ATTEMPTS: usize = 3;

/// Chunks buffered between the upstream reader and a slow client. Small:
/// back-pressure should reach the upstream rather than memory.
const STREAM_CHANNEL_FRAMES: usize = 16;

/// After a client leaves mid-stream, how long the proxy keeps reading the
/// upstream to record the (already paid for) answer. The idle timeout
/// between events still applies within it.
pub const DRAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(300);

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
    recordings: Recordings,
    upstream: Upstream,
    rules: KeyRules,
    redactor: Redactor,
    max_body_bytes: usize,
    record_errors: bool,
    history: usize,
    timing: Timing,
    flights: Arc<Flights>,
    metrics: Metrics,
    max_in_flight: usize,
    max_recorded_bytes: usize,
    admin_token: Option<Sensitive<String>>,
    sampling_namespaces: Vec<String>,
    hot: HotCache,
    memo: KeyMemo,
}

impl Proxy {
    /// A proxy over `recordings` configured by `config`.
    pub fn new(config: &Config, recordings: Recordings) -> Result<Proxy, UpstreamSetupError> {
        Ok(Proxy {
            shared: Arc::new(Shared {
                mode: config.mode,
                upstream: Upstream::new(&config.upstream)?,
                recordings,
                rules: KeyRules {
                    ignore_fields: config.key.ignore_fields.clone(),
                    per_credential: config.key.scope == Scope::ApiKey,
                },
                redactor: Redactor::new(config.redact.headers.clone()),
                max_body_bytes: config.server.max_body_bytes,
                record_errors: config.store.record_errors,
                history: config.store.history,
                timing: config.replay.timing,
                flights: Arc::new(Flights::default()),
                metrics: Metrics::default(),
                max_in_flight: config.server.max_in_flight,
                max_recorded_bytes: config.store.max_recorded_bytes,
                admin_token: config.server.admin_token.clone().map(Sensitive),
                sampling_namespaces: config.key.sampling_namespaces.clone(),
                hot: HotCache::new(HOT_CACHE_BYTES),
                memo: KeyMemo::new(cache::DEFAULT_CAPACITY),
            }),
        })
    }

    /// Where this proxy reads and writes recordings.
    pub fn recordings(&self) -> &Recordings {
        &self.shared.recordings
    }

    /// Answers one request. Never fails.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let s = &self.shared;
        let method = request.method().clone();
        // A refcounted handle for the log line, not a copy of the path.
        let uri = request.uri().clone();
        let _in_flight = InFlight::enter(&s.metrics);
        let (response, key) =
            if s.metrics.in_flight.load(Ordering::Relaxed) > s.max_in_flight as i64 {
                s.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                let error = ProxyError::Overloaded {
                    limit: s.max_in_flight,
                };
                let mut response = error_response(&error, None);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                (response, None)
            } else {
                self.route(request).await
            };
        let outcome = response
            .headers()
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("error");
        match outcome {
            "hit" => {
                s.metrics.hits.fetch_add(1, Ordering::Relaxed);
                s.metrics.hit_latency.observe(started.elapsed());
            }
            "miss" => {
                s.metrics.misses.fetch_add(1, Ordering::Relaxed);
            }
            "bypass" => {
                s.metrics.bypasses.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        tracing::info!(
            %method,
            path = uri.path(),
            key = key.as_ref().map(tracing::field::display),
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
        if path.starts_with(admin::ADMIN_PREFIX) {
            return (self.admin(&request), None);
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
                let error = ProxyError::ClientBody { source: e };
                return (error_response(&error, None), None);
            }
        };
        // A repeat of exact bytes takes its key from the memo; the
        // canonical form is only built when this request needs it.
        let Keyed { key, canonical } = s.memo.key(&request_parts(&parts, &body), &s.rules);

        let timing = match replay_timing(&parts.headers, s.timing) {
            Ok(timing) => timing,
            Err(error) => return (error_response(&error, Some(&key)), Some(key)),
        };

        let re_record = match mode {
            Mode::Record => true,
            // Replay never calls the upstream, so `no-cache` cannot apply.
            Mode::Replay => false,
            Mode::Auto | Mode::Passthrough => wants_no_cache(&parts.headers),
        };
        if !re_record {
            if let Some(rendered) = s.hot.get(&key) {
                return (rendered.respond(timing), Some(key));
            }
            match s.recordings.replayable(&key) {
                Ok(Some(recording)) => {
                    let rendered = Arc::new(Rendered::from_replayable(recording, &key));
                    s.hot.insert(key, rendered.clone());
                    return (rendered.respond(timing), Some(key));
                }
                Ok(None) => {}
                Err(error @ StoreError::Corrupt { .. }) => {
                    tracing::warn!(key = %key, %error, "corrupt recording treated as a miss; it will be replaced if re-recorded");
                }
                Err(error) => {
                    tracing::error!(key = %key, %error, "store read failed; treating as a miss")
                }
            }
        }
        let canonical =
            canonical.unwrap_or_else(|| Canonical::new(&request_parts(&parts, &body), &s.rules));
        if mode == Mode::Replay {
            let nearest = nearest::nearest(&s.recordings, &canonical);
            let error = ProxyError::ReplayMiss {
                key: key.to_hex(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                nearest: nearest.as_ref().map(Nearest::describe),
            };
            let mut response = error_response(&error, Some(&key));
            if let Some(value) = nearest.and_then(|n| HeaderValue::from_str(&n.header()).ok()) {
                response.headers_mut().insert(MISS_NEAREST_HEADER, value);
            }
            return (response, Some(key));
        }
        // Identical concurrent misses share one upstream call. Not when the
        // caller asked for a fresh answer (record mode, no-cache), nor in a
        // namespace that samples the upstream on purpose.
        let mut lead = None;
        if !re_record && !s.sampling_namespaces.contains(&canonical.namespace) {
            for _ in 0..MAX_FOLLOW_ATTEMPTS {
                match s.flights.join(key) {
                    Role::Leader(l) => {
                        // A flight that landed between our store lookup and
                        // the join has just been recorded: use it.
                        if let Ok(Some(entry)) = s.recordings.get(&key) {
                            return (replay::response(entry, &key, timing), Some(key));
                        }
                        lead = Some(l);
                        break;
                    }
                    Role::Follower(flight) => {
                        if let Some(response) = self.follow(&flight, &key).await {
                            return (response, Some(key));
                        }
                    }
                }
            }
        }
        // A committed fixture is only rewritten by an explicit re-record.
        let replace = mode == Mode::Record;
        (
            self.record(&parts, body, &canonical, &key, replace, lead)
                .await,
            Some(key),
        )
    }

    /// Forwards a miss, stores the answer if it is worth keeping, returns it.
    async fn record(
        &self,
        parts: &Parts,
        body: Bytes,
        canonical: &Canonical,
        key: &RequestKey,
        replace: bool,
        lead: Option<Lead>,
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
            Err(error) => {
                s.metrics.upstream_answered(0);
                return shared_error(&error, key, lead);
            }
        };
        let (mut head, incoming) = upstream.into_parts();
        strip_hop_by_hop(&mut head.headers);
        head.headers.remove(header::CONTENT_LENGTH);
        mark(&mut head.headers, Outcome::Miss, Some(key));
        if crate::record::sse::is_event_stream(&head.headers) {
            let miss = PendingStream {
                canonical: canonical.clone(),
                key: *key,
                sent,
                replace,
                lead,
            };
            return self.record_stream(head, incoming, miss);
        }
        let mut upstream_body = IdleTimeout::new(incoming, s.upstream.idle_timeout());
        let mut chunks = Vec::new();
        let mut size = 0usize;
        while let Some(frame) = upstream_body.frame().await {
            let chunk = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(chunk) => chunk,
                    Err(_) => continue,
                },
                Err(e) => {
                    s.metrics.upstream_answered(0);
                    return shared_error(&self.body_error(e), key, lead);
                }
            };
            size += chunk.len();
            chunks.push(chunk);
            if size > s.max_recorded_bytes {
                // Too large to keep: forward what we have and the rest as it
                // comes, record nothing. Followers ask for themselves.
                drop(lead);
                tracing::warn!(key = %key, limit = s.max_recorded_bytes, "response larger than store.max_recorded_bytes; forwarded, not recorded");
                head.headers.insert(
                    NOT_RECORDED_HEADER,
                    HeaderValue::from_static("response larger than store.max_recorded_bytes"),
                );
                let buffered =
                    futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))));
                let rest = http_body_util::BodyStream::new(upstream_body);
                let body =
                    StreamBody::new(futures_util::StreamExt::chain(buffered, rest)).boxed_unsync();
                return Response::from_parts(head, body);
            }
        }
        let bytes = match chunks.len() {
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        };
        let latency = sent.elapsed();
        s.metrics.upstream_answered(head.status.as_u16());
        s.metrics.upstream_latency.observe(latency);
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
            if let Some(flip) = self.fingerprint_flip(key, &entry) {
                if let Ok(value) = HeaderValue::from_str(&flip) {
                    head.headers.insert(FINGERPRINT_CHANGED_HEADER, value);
                }
            }
            // The client gets its answer whether or not the write succeeds.
            match s.recordings.put(key, &entry, s.history, replace) {
                Ok(true) => {
                    s.hot.remove(key);
                    s.metrics.recordings.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(error) => tracing::error!(key = %key, %error, "recording not stored"),
            }
        }
        if let Some(lead) = lead {
            lead.answer(head.status, &head.headers, bytes.clone());
        }
        Response::from_parts(head, full(bytes))
    }

    /// Forwards an event stream as it arrives and records it on the side.
    ///
    /// A task reads the upstream and hands each chunk to the client through
    /// a small channel (forward first: recording never delays a chunk by
    /// more than splitting it into events). The recording is committed the
    /// moment the terminal event arrives, before that event is forwarded,
    /// so a client that has seen the end of the stream finds it stored. If
    /// the client goes away, the task keeps reading (at most
    /// [`DRAIN_AFTER_DISCONNECT`]) so that a paid-for answer is still kept.
    fn record_stream(
        &self,
        head: http::response::Parts,
        incoming: hyper::body::Incoming,
        miss: PendingStream,
    ) -> Response<ProxyBody> {
        let PendingStream {
            canonical,
            key,
            sent,
            replace,
            lead,
        } = miss;
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(STREAM_CHANNEL_FRAMES);
        let proxy = self.clone();
        let recordable = record::should_record(head.status, proxy.shared.record_errors);
        let status = head.status;
        let headers = head.headers.clone();
        if let Some(lead) = &lead {
            lead.head(status, &headers);
        }
        tokio::spawn(async move {
            let s = &proxy.shared;
            let mut lead = lead;
            let mut upstream = IdleTimeout::new(incoming, s.upstream.idle_timeout());
            let mut recorder = StreamRecorder::new(s.max_recorded_bytes);
            let mut client_open = true;
            let mut drain_deadline = None;
            loop {
                let next = match drain_deadline {
                    None => upstream.frame().await,
                    Some(deadline) => {
                        match tokio::time::timeout_at(deadline, upstream.frame()).await {
                            Ok(next) => next,
                            Err(_) => {
                                tracing::warn!(key = %key, "client left and the upstream stream did not finish within the drain bound; not recorded");
                                break;
                            }
                        }
                    }
                };
                let frame = match next {
                    None => {
                        if recordable && recorder.state() == StreamState::Open {
                            tracing::warn!(key = %key, "upstream stream ended without its final event; not recorded");
                        }
                        if let Some(lead) = lead.take() {
                            lead.end(Ending::Complete);
                        }
                        break;
                    }
                    Some(Err(error)) => {
                        let error = proxy.body_error(error);
                        tracing::warn!(key = %key, %error, "upstream stream broke off; not recorded");
                        if let Some(lead) = lead.take() {
                            lead.end(Ending::Broken);
                        }
                        if client_open {
                            let _ = tx.send(Err(Box::new(error))).await;
                        }
                        break;
                    }
                    Some(Ok(frame)) => frame,
                };
                if let (Some(lead), Some(chunk)) = (&lead, frame.data_ref()) {
                    lead.chunk(chunk.clone());
                }
                if let (Some(chunk), true) = (frame.data_ref(), recordable) {
                    let before = recorder.state();
                    let after = recorder.push(chunk, sent.elapsed());
                    match (before, after) {
                        (StreamState::Open, StreamState::Complete) => {
                            let entry = recorder.entry(
                                &canonical,
                                &key,
                                status,
                                &headers,
                                sent.elapsed(),
                                &s.redactor,
                            );
                            if let Some(entry) = entry {
                                // Headers are long gone: a flip is only logged.
                                proxy.fingerprint_flip(&key, &entry);
                                s.metrics.upstream_answered(status.as_u16());
                                s.metrics.upstream_latency.observe(sent.elapsed());
                                match s.recordings.put(&key, &entry, s.history, replace) {
                                    Ok(_) => {
                                        s.hot.remove(&key);
                                        s.metrics.recordings.fetch_add(1, Ordering::Relaxed);
                                        tracing::debug!(key = %key, "stream recorded");
                                    }
                                    Err(error) => {
                                        tracing::error!(key = %key, %error, "stream recording not stored")
                                    }
                                }
                            }
                        }
                        (StreamState::Open, StreamState::Spoiled(reason)) => {
                            tracing::warn!(key = %key, reason, "stream will not be recorded");
                        }
                        _ => {}
                    }
                }
                if client_open && tx.send(Ok(frame)).await.is_err() {
                    client_open = false;
                    if !recordable || recorder.state() != StreamState::Open {
                        break;
                    }
                    tracing::info!(key = %key, "client left mid-stream; reading the upstream to the end to record it");
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_AFTER_DISCONNECT);
                }
                if !client_open && recorder.state() != StreamState::Open && lead.is_none() {
                    break;
                }
            }
        });
        let body = StreamBody::new(ReceiverStream(rx)).boxed_unsync();
        Response::from_parts(head, body)
    }

    /// Answers from another request's upstream call. `None` when that
    /// request went away before its answer began: the caller tries again.
    async fn follow(&self, flight: &Arc<Flight>, key: &RequestKey) -> Option<Response<ProxyBody>> {
        let s = &self.shared;
        let mut changes = flight.subscribe();
        let deadline = tokio::time::Instant::now() + s.upstream.first_byte_timeout();
        let (status, mut headers) = loop {
            if let Some(head) = flight.head() {
                break head;
            }
            if flight.ending().is_some() {
                return None;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => {
                    let error = ProxyError::UpstreamTimeout {
                        upstream: s.upstream.display().to_string(),
                        what: "send response headers",
                        timeout: s.upstream.first_byte_timeout(),
                    };
                    return Some(error_response(&error, Some(key)));
                }
            }
        };
        // Served without calling the upstream: to this caller, a hit.
        mark(&mut headers, Outcome::Hit, Some(key));
        let idle = s.upstream.idle_timeout();
        let state = (
            flight.clone(),
            changes,
            0usize,
            std::collections::VecDeque::<Bytes>::new(),
            false,
        );
        let frames = futures_util::stream::unfold(
            state,
            move |(flight, mut changes, mut next, mut pending, done)| async move {
                loop {
                    if let Some(chunk) = pending.pop_front() {
                        return Some((
                            Ok(Frame::data(chunk)),
                            (flight, changes, next, pending, done),
                        ));
                    }
                    if done {
                        return None;
                    }
                    let (chunks, ending) = flight.chunks_from(next);
                    next += chunks.len();
                    pending.extend(chunks);
                    if !pending.is_empty() {
                        continue;
                    }
                    match ending {
                        Some(Ending::Complete) => return None,
                        Some(Ending::Broken | Ending::Abandoned) => {
                            let error: BoxError = "the shared upstream answer broke off".into();
                            return Some((Err(error), (flight, changes, next, pending, true)));
                        }
                        None => {
                            if tokio::time::timeout(idle, changes.changed()).await.is_err() {
                                let error: BoxError = Box::new(IdleTimeoutError(idle));
                                return Some((Err(error), (flight, changes, next, pending, true)));
                            }
                        }
                    }
                }
            },
        );
        let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Some(response)
    }

    /// `old -> new` when `entry` re-records `key` with another
    /// `system_fingerprint` than the recording it replaces; logs a warning.
    fn fingerprint_flip(&self, key: &RequestKey, entry: &Recording) -> Option<String> {
        let previous = self.shared.recordings.get(key).ok().flatten()?;
        let old = previous.meta.system_fingerprint?;
        let new = entry.meta.system_fingerprint.as_deref()?;
        if old == new {
            return None;
        }
        tracing::warn!(key = %key, old = %old, new = %new, "system_fingerprint changed on re-recording");
        Some(format!("{old} -> {new}"))
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
                source: error,
            },
        }
    }

    fn admin<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        let s = &self.shared;
        admin::respond(
            request,
            &AdminView {
                mode: s.mode,
                upstream: s.upstream.display(),
                recordings: s.recordings.indexed_len(),
                metrics: &s.metrics,
                token: s.admin_token.as_ref().map(|Sensitive(t)| t.as_str()),
            },
        )
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
    header_choice(
        headers,
        MODE_HEADER,
        default,
        "auto, record, replay, passthrough",
    )
}

fn replay_timing(headers: &HeaderMap, default: Timing) -> Result<Timing, ProxyError> {
    header_choice(headers, REPLAY_TIMING_HEADER, default, "instant, recorded")
}

/// A per-request override header: absent means `default`, anything that
/// does not parse is the caller's mistake (400), never silently ignored.
fn header_choice<T: std::str::FromStr>(
    headers: &HeaderMap,
    header: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, ProxyError> {
    match headers.get(header) {
        None => Ok(default),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProxyError::BadHeader {
                header,
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                expected,
            }),
    }
}

/// An mpsc receiver as a stream of body frames.
struct ReceiverStream(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl futures_util::Stream for ReceiverStream {
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
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

/// What the key is computed from.
fn request_parts<'a>(parts: &'a Parts, body: &'a [u8]) -> RequestParts<'a> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .or_else(|| parts.headers.get("api-key"))
        .map(HeaderValue::as_bytes);
    RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        content_type: header("content-type"),
        body,
        namespace: header(NAMESPACE_HEADER),
        credential,
    }
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

/// The error answer for a leader's request, shared with its followers.
fn shared_error(error: &ProxyError, key: &RequestKey, lead: Option<Lead>) -> Response<ProxyBody> {
    let response = error_response(error, Some(key));
    if let Some(lead) = lead {
        lead.answer(
            response.status(),
            response.headers(),
            Bytes::from(error.body()),
        );
    }
    response
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
