//! The shared store's part of a request (a team store on Redis behind the
//! local one): a local miss asked of it, the lease that lets identical
//! misses on several proxies go upstream once, and the tier header.

use std::sync::Arc;

use http::header::HeaderValue;

use crate::config::{Config, Mode, OnUnavailable, Timing};
use crate::key::RequestKey;
use crate::serve::answer::Answer;
use crate::serve::error::ProxyError;
use crate::serve::headers::{Outcome, TIER_HEADER};
use crate::serve::proxy::Proxy;
use crate::serve::replay::Rendered;
use crate::serve::upstream::UpstreamSetupError;
use crate::store::lease::{self, Leased, Waited};
use crate::store::tiered::{Fill, LeaseTicket};
use crate::store::Tiered;

impl Proxy {
    /// A proxy over both tiers: the local store, then the shared one.
    pub fn with_remote(config: &Config, tiered: Arc<Tiered>) -> Result<Proxy, UpstreamSetupError> {
        let proxy = Proxy::new(config, tiered.clone())?;
        // A copy replaced by another proxy's re-recording must not be
        // served from memory. Weak: the tier must not keep the proxy alive.
        let shared = Arc::downgrade(&proxy.shared);
        tiered.on_replaced(Box::new(move |key| {
            if let Some(shared) = shared.upgrade() {
                shared.hot.remove(key);
            }
        }));
        // Just built: the cell is empty.
        let _ = proxy.shared.remote.set(tiered);
        Ok(proxy)
    }

    /// A local miss asked of the shared store: a hit copied from it, the
    /// 503 when it is unreachable and a miss may not go on without it
    /// (replay mode, `on_unavailable = "fail"`), or `None` (no shared
    /// store, or it has nothing: an ordinary miss).
    pub(super) async fn replay_shared(
        &self,
        key: &RequestKey,
        timing: Timing,
        mode: Mode,
    ) -> Option<Answer> {
        let s = &self.shared;
        let tiered = s.remote.get()?;
        match tiered.fill(key).await {
            Fill::Copied(recording) => Some(self.remote_hit(key, &recording, timing)),
            Fill::Absent => None,
            Fill::Unavailable(error) => {
                let remote = tiered.remote();
                let fail = remote.config().on_unavailable == OnUnavailable::Fail;
                if mode != Mode::Replay && !fail {
                    tracing::debug!(key = %key, %error, "shared store unavailable; asking the upstream");
                    return None;
                }
                let error = ProxyError::RemoteUnavailable {
                    remote: remote.url().to_string(),
                };
                Some(Answer::error(&error, Some(key)))
            }
        }
    }

    /// A hit served from a recording just read from the shared store.
    fn remote_hit(
        &self,
        key: &RequestKey,
        recording: &crate::record::recording::Recording,
        timing: Timing,
    ) -> Answer {
        let replayable = crate::store::response_log::Replayable::from_entry(recording);
        let rendered = Arc::new(Rendered::from_replayable(replayable, key));
        self.shared.hot.insert(*key, rendered.clone());
        let mut answer = Answer::new(rendered.respond(timing), Some(Outcome::Hit), Some(*key));
        let models = &self.shared.metrics.models;
        answer.saved = Some(rendered.saved(|body, events| models.saved_by(body, events)));
        self.mark_tier(answer, "remote")
    }

    /// Identical misses on several proxies go upstream once: this proxy
    /// takes the key's lease in the shared store (`Ok(ticket)`: go
    /// upstream), or waits for the proxy holding it and replays its
    /// recording (`Err(hit)`). A read-only proxy only waits, when another
    /// holds the lease. No lease (no shared store, read-only, Redis away,
    /// the wait past the upstream's first-byte timeout): `Ok(None)`, go
    /// upstream.
    pub(super) async fn lead_across_proxies(
        &self,
        key: &RequestKey,
        timing: Timing,
    ) -> Result<Option<LeaseTicket>, Answer> {
        let s = &self.shared;
        let Some(tiered) = s.remote.get() else {
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + s.upstream.first_byte_timeout();
        if !tiered.remote().writable() {
            // A read-only proxy takes no lease (it writes nothing), but
            // waits on one another proxy holds.
            return match lease::follow(tiered.remote(), key, deadline).await {
                Some(recording) => {
                    tiered.copy_local(key, &recording);
                    Err(self.remote_hit(key, &recording, timing))
                }
                None => Ok(None),
            };
        }
        loop {
            match lease::take(tiered.remote_handle(), key).await {
                Leased::Held(guard) => return Ok(Some(tiered.hold(*key, guard))),
                Leased::Unavailable(_) => return Ok(None),
                Leased::Taken => match lease::wait(tiered.remote(), key, deadline).await {
                    Waited::Recorded(recording) => {
                        tiered.copy_local(key, &recording);
                        return Err(self.remote_hit(key, &recording, timing));
                    }
                    // Its leader went away unrecorded: take over.
                    Waited::LeaseGone => {}
                    Waited::GaveUp => return Ok(None),
                },
            }
        }
    }

    /// Marks a hit with the tier that held it, when there are two (a
    /// follower of a local flight is a local hit; a miss is not marked).
    pub(super) fn mark_tier(&self, mut answer: Answer, tier: &'static str) -> Answer {
        if self.shared.remote.get().is_some() && answer.outcome == Some(Outcome::Hit) {
            answer
                .response
                .headers_mut()
                .insert(TIER_HEADER, HeaderValue::from_static(tier));
        }
        answer
    }
}
