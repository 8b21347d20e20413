//! A request the local store did not answer, or that asked for a fresh
//! answer: the shared store, a flight of identical misses to follow or
//! lead, then the upstream. Apart from `serve::proxy` so that a local
//! hit's path stays short to read, and its future holds none of this.

use http::request::Parts;
use http::Response;

use crate::body::{Pieces, ProxyBody};
use crate::config::Mode;
use crate::key::{Canonical, RequestKey};
use crate::serve::answer::Answer;
use crate::serve::flight::{Patience, Role};
use crate::serve::headers::{self, Outcome};
use crate::serve::pending::{KeyedRequest, Miss};
use crate::serve::proxy::Proxy;
use crate::serve::request;

/// How often a request re-joins after the request it waited on went away
/// (each such wait is bounded); past it, it simply asks the upstream.
const MAX_FOLLOW_ATTEMPTS: usize = 3;

impl Proxy {
    /// A request the local store did not answer (or that asked for a
    /// fresh answer): the shared store, a flight to follow, or the
    /// upstream.
    pub(super) async fn past_local(
        &self,
        parts: &Parts,
        asked: request::Asked<'_>,
        pieces: Pieces,
        request: KeyedRequest,
    ) -> Answer {
        let s = &self.shared;
        let KeyedRequest {
            key,
            canonical,
            mode,
            re_record,
            timing,
            dialect,
        } = request;
        if !re_record {
            if let Some(answer) = Box::pin(self.replay_shared(&key, timing, mode)).await {
                return answer;
            }
        }
        let body = pieces.into_bytes();
        let canonical = canonical
            .unwrap_or_else(|| Canonical::new(&asked.key_parts(parts, &body), s.memo.rules()));
        if mode == Mode::Replay {
            return self.replay_miss(parts, &canonical, &key, dialect);
        }
        // Identical concurrent misses share one upstream call. Not when the
        // caller asked for a fresh answer (record mode, no-cache), nor in a
        // namespace that samples the upstream on purpose.
        let mut lead = None;
        let mut lease = None;
        if !re_record && !s.sampling_namespaces.contains(&canonical.namespace) {
            let upstream = s.upstream_for(dialect);
            let patience = Patience {
                first_byte: upstream.first_byte_timeout(),
                idle: upstream.idle_timeout(),
                upstream: upstream.display().to_string(),
            };
            for _ in 0..MAX_FOLLOW_ATTEMPTS {
                match s.flights.join(key) {
                    Role::Leader(l) => {
                        // A flight that landed between our lookup and the
                        // join has just been recorded: replay it. Asked of
                        // the in-memory index, so a miss reads the store once.
                        if s.tier.indexed(&key) {
                            if let Some(answer) = self.replay(&key, timing) {
                                return self.mark_tier(answer, "local");
                            }
                        }
                        match Box::pin(self.lead_across_proxies(&key, timing)).await {
                            // Dropping the local lead sends its followers
                            // to the copy just made.
                            Err(answer) => return answer,
                            Ok(ticket) => lease = ticket,
                        }
                        lead = Some(l);
                        break;
                    }
                    Role::Follower(flight) => {
                        match Box::pin(flight.follow(&key, &patience)).await {
                            Some(Ok(response)) => {
                                return self.mark_tier(followed(response, key), "local")
                            }
                            Some(Err(error)) => {
                                return Answer::error_in(dialect, &error, Some(&key))
                            }
                            // The leader may have gone because the recording
                            // arrived from the shared store.
                            None if s.remote.get().is_some() && s.tier.indexed(&key) => {
                                if let Some(answer) = self.replay(&key, timing) {
                                    return self.mark_tier(answer, "local");
                                }
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        let miss = Miss {
            canonical,
            key,
            re_record,
            // A committed fixture is only rewritten by an explicit re-record.
            replace: mode == Mode::Record,
            lead,
            call: None,
            dialect,
            lease,
        };
        Answer::new(
            Box::pin(self.call_upstream(parts, body, miss)).await,
            Some(Outcome::Miss),
            Some(key),
        )
    }
}

/// A follower's answer: a hit, since it was served without calling the
/// upstream, unless it is the leader's 502 or 504 (an unreachable or slow
/// upstream), which is no recording and stays a miss.
fn followed(mut response: Response<ProxyBody>, key: RequestKey) -> Answer {
    let status = response.status();
    if status == http::StatusCode::BAD_GATEWAY || status == http::StatusCode::GATEWAY_TIMEOUT {
        headers::mark(response.headers_mut(), Outcome::Miss, Some(&key));
        return Answer::new(response, Some(Outcome::Miss), Some(key));
    }
    Answer::new(response, Some(Outcome::Hit), Some(key))
}
