//! A miss's upstream call: the request goes upstream, the answer comes back
//! through the [`RecordingBody`] and is stored on the side, and followers
//! of the single flight get it too.
//!
//! A stream reaches the client event by event; a plain answer is read whole
//! first, so that its headers can say what recording it made (a changed
//! fingerprint) and followers get it in one piece. Either way the one
//! recorder keeps it, and [`StoreSink`] decides what happens to it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::body::{full, BoxError, IdleTimeout, IdleTimeoutError, ProxyBody};
use crate::key::RequestKey;
use crate::record::recorder::{should_record, Exchange, NotRecorded, Recorder, State};
use crate::record::recording::Recording;
use crate::record::recording_body::{End, RecordingBody, Sink};
use crate::record::sse::is_event_stream;
use crate::route::Dialect;
use crate::serve::answer::error_response_in;
use crate::serve::error::{Chain, ProxyError};
use crate::serve::flight::{Ending, Lead};
use crate::serve::headers::{self, Outcome, FINGERPRINT_CHANGED_HEADER, NOT_RECORDED_HEADER};
use crate::serve::pending::Miss;
use crate::serve::proxy::{Proxy, Shared};
use crate::serve::request;
use crate::serve::upstream::Upstream;

/// After a client leaves mid-stream, how long the proxy keeps reading the
/// upstream to record the (already paid for) answer. The idle timeout
/// between events still applies within it.
pub const DRAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(300);

impl Shared {
    /// The upstream of requests in `dialect`.
    pub(super) fn upstream_for(&self, dialect: Dialect) -> &Upstream {
        match dialect {
            Dialect::OpenAi => &self.upstream,
            Dialect::Anthropic => &self.anthropic,
        }
    }
}

impl Proxy {
    /// Forwards a miss, records the answer if it is worth keeping, returns
    /// it.
    pub(super) async fn call_upstream(
        &self,
        parts: &Parts,
        body: Bytes,
        miss: Miss,
    ) -> Response<ProxyBody> {
        let s = &self.shared;
        let sent = Instant::now();
        let path = request::path_and_query(parts);
        let dialect = miss.dialect;
        let upstream = match s
            .upstream_for(dialect)
            .send(parts.method.clone(), path, &parts.headers, full(body))
            .await
        {
            Ok(response) => response,
            Err(error) => {
                s.metrics.upstream_answered(0);
                return shared_error(dialect, &error, &miss.key, miss.lead);
            }
        };
        let (mut head, incoming) = upstream.into_parts();
        strip_for_client(&mut head.headers);
        headers::mark(&mut head.headers, Outcome::Miss, Some(&miss.key));
        let exchange = Exchange {
            canonical: miss.canonical,
            key: miss.key,
            status: head.status,
            headers: head.headers.clone(),
            sent,
        };
        let recordable = should_record(head.status, s.record_errors);
        let recorder = Recorder::new(
            exchange,
            s.redactor.clone(),
            s.max_recorded_bytes,
            recordable,
        );
        let upstream = IdleTimeout::new(incoming, s.upstream_for(dialect).idle_timeout());
        let mut sink = StoreSink {
            proxy: self.clone(),
            dialect,
            key: miss.key,
            re_record: miss.re_record,
            replace: miss.replace,
            lead: None,
            flip: None,
            call: miss.call,
            _lease: miss.lease,
        };
        if is_event_stream(&head.headers) {
            if let Some(lead) = &miss.lead {
                lead.head(head.status, &head.headers);
            }
            sink.lead = miss.lead;
            let body = ProxyBody::boxed(
                RecordingBody::new(upstream, recorder, sink)
                    .drain_after_drop(DRAIN_AFTER_DISCONNECT),
            );
            return Response::from_parts(head, body);
        }

        let mut body = RecordingBody::new(upstream, recorder, sink);
        let mut chunks = Vec::new();
        let lead = miss.lead;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(chunk) = frame.into_data() {
                        chunks.push(chunk);
                    }
                }
                Err(error) => {
                    return shared_error(
                        dialect,
                        &self.body_error(dialect, error),
                        &miss.key,
                        lead,
                    );
                }
            }
            if body.state() == State::NotRecorded(NotRecorded::TooLarge) {
                // Too large to keep: forward what we have and the rest as it
                // comes. Followers ask for themselves.
                drop(lead);
                head.headers.insert(
                    NOT_RECORDED_HEADER,
                    HeaderValue::from_static(NotRecorded::TooLarge.as_str()),
                );
                let buffered =
                    futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))));
                let rest = http_body_util::BodyStream::new(body);
                let body = ProxyBody::boxed(StreamBody::new(futures_util::StreamExt::chain(
                    buffered, rest,
                )));
                return Response::from_parts(head, body);
            }
        }
        let flip = body.sink_mut().and_then(|sink| sink.flip.take());
        if let Some(value) = flip.and_then(|flip| HeaderValue::from_str(&flip).ok()) {
            head.headers.insert(FINGERPRINT_CHANGED_HEADER, value);
        }
        let bytes = match chunks.len() {
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        };
        if let Some(lead) = lead {
            lead.answer(head.status, &head.headers, bytes.clone());
        }
        Response::from_parts(head, full(bytes))
    }

    /// The error a broken upstream body means to the client.
    fn body_error(&self, dialect: Dialect, error: BoxError) -> ProxyError {
        let upstream = self.shared.upstream_for(dialect).display().to_string();
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

    /// `old -> new` when `recording` re-records `key` with another
    /// fingerprint (`system_fingerprint`, else the model) than the
    /// recording it replaces; logs a warning.
    fn fingerprint_flip(&self, key: &RequestKey, recording: &Recording) -> Option<String> {
        let previous = self.shared.tier.get(key).ok().flatten()?;
        let old = previous.meta.fingerprint()?;
        let new = recording.meta.fingerprint()?;
        if old == new {
            return None;
        }
        tracing::warn!(key = %key, old = %old, new = %new, "fingerprint changed on re-recording");
        Some(format!("{old} -> {new}"))
    }
}

/// Headers that describe the upstream connection, not the answer.
fn strip_for_client(headers: &mut http::HeaderMap) {
    crate::record::redact::strip_hop_by_hop(headers);
    // The client's framing is hyper's to choose (the body may be re-chunked).
    headers.remove(header::CONTENT_LENGTH);
}

/// Where a miss's answer goes as it passes: into the tier, and to the
/// followers of its single flight.
struct StoreSink {
    proxy: Proxy,
    /// The upstream's dialect, for messages.
    dialect: Dialect,
    key: RequestKey,
    re_record: bool,
    replace: bool,
    /// Followers that get each chunk as it passes (streams only: a plain
    /// answer is handed to them whole, with its final headers).
    lead: Option<Lead>,
    /// Set when the recording changed the key's fingerprint.
    flip: Option<String>,
    /// A sequence call's number, kept in the recording.
    call: Option<u32>,
    /// The shared store's lease on the key: released with the sink, if
    /// the commit did not hand it to the push.
    _lease: Option<crate::store::tiered::LeaseTicket>,
}

impl Sink for StoreSink {
    fn chunk(&mut self, chunk: &Bytes) {
        if let Some(lead) = &self.lead {
            lead.chunk(chunk.clone());
        }
    }

    fn commit(&mut self, mut recording: Recording) {
        let s = &self.proxy.shared;
        recording.meta.call = self.call;
        // Only a re-recording can replace one: a plain miss just found the
        // key absent, so it has nothing to compare with.
        if self.re_record {
            self.flip = self.proxy.fingerprint_flip(&self.key, &recording);
        }
        // The client gets its answer whether or not the write succeeds.
        match s.tier.put(&self.key, &recording, s.history, self.replace) {
            Ok(true) => {
                s.hot.remove(&self.key);
                s.metrics.recordings.fetch_add(1, Ordering::Relaxed);
                s.metrics
                    .models
                    .missed(recording.meta.model.as_deref().unwrap_or("-"));
                s.catalog.committed(&s.routes, &recording, s.history);
                tracing::debug!(key = %self.key, "recorded");
            }
            Ok(false) => {}
            Err(error) => tracing::error!(key = %self.key, %error, "recording not stored"),
        }
    }

    fn not_recorded(&mut self, why: NotRecorded) {
        match why {
            NotRecorded::Status | NotRecorded::Broken | NotRecorded::Dropped => {}
            NotRecorded::TooLarge => {
                // Followers would hold the whole oversized answer in memory:
                // they ask for themselves instead.
                self.lead = None;
                let limit = self.proxy.shared.max_recorded_bytes;
                tracing::warn!(key = %self.key, limit, "response larger than store.max_recorded_bytes; forwarded, not recorded");
            }
            NotRecorded::ErrorEvent | NotRecorded::NoFinalEvent => {
                tracing::warn!(key = %self.key, reason = why.as_str(), "stream not recorded");
            }
        }
    }

    fn end(&mut self, exchange: &Exchange, end: End<'_>) {
        let s = &self.proxy.shared;
        // Every upstream answer is counted here, once.
        match end {
            End::Complete | End::Dropped => {
                s.metrics.upstream_answered(exchange.status.as_u16());
                s.metrics.upstream_latency.observe(exchange.sent.elapsed());
            }
            End::Broken(error) => {
                s.metrics.upstream_answered(0);
                let upstream = s.upstream_for(self.dialect).display();
                tracing::warn!(key = %self.key, upstream, error = %Chain(error.as_ref()), "upstream answer broke off; not recorded");
            }
        }
        if let Some(lead) = self.lead.take() {
            match end {
                End::Complete => lead.end(Ending::Complete),
                End::Broken(_) => lead.end(Ending::Broken),
                // Dropping the lead abandons the flight.
                End::Dropped => drop(lead),
            }
        }
    }

    fn wants_rest(&self) -> bool {
        self.lead.is_some()
    }
}

/// The error answer for a leader's request, shared with its followers.
fn shared_error(
    dialect: Dialect,
    error: &ProxyError,
    key: &RequestKey,
    lead: Option<Lead>,
) -> Response<ProxyBody> {
    let response = error_response_in(dialect, error, Some(key));
    if let Some(lead) = lead {
        lead.answer(
            response.status(),
            response.headers(),
            Bytes::from(error.body_in(dialect)),
        );
    }
    response
}
