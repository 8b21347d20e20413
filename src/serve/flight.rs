//! Single-flight: identical concurrent misses share one upstream call.
//!
//! The first miss for a key becomes the leader and holds a [`Lead`]; later
//! identical misses join its [`Flight`] and receive the same answer: the
//! head once it is known, then every body chunk as the leader forwards it
//! (a late joiner first gets the chunks so far). Streams are shared the
//! same way, chunk by chunk. If the leader goes away before answering (its
//! client hung up), the flight is abandoned and followers try again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::watch;

use crate::body::{BoxError, IdleTimeoutError, ProxyBody};
use crate::key::RequestKey;
use crate::serve::error::ProxyError;
use crate::serve::headers::{self, Outcome};

/// How a flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every chunk was delivered.
    Complete,
    /// The upstream broke off; followers see the break too.
    Broken,
    /// The leader left before answering; followers must ask again.
    Abandoned,
}

#[derive(Debug, Default)]
struct Shared {
    head: Option<(StatusCode, HeaderMap)>,
    chunks: Vec<Bytes>,
    ending: Option<Ending>,
}

/// One upstream call that several identical requests wait on.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<Shared>,
    /// Bumped on every change, so waiters never miss one.
    version: watch::Sender<u64>,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            state: Mutex::new(Shared::default()),
            version: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Each update is a single push or assignment, so a panic elsewhere
        // cannot leave the state half-written.
        crate::sync::lock(&self.state)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Waits for the next change (bounded by the caller).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The head, once the leader has it.
    pub fn head(&self) -> Option<(StatusCode, HeaderMap)> {
        self.lock().head.clone()
    }

    /// Chunks from index `from` on, and how the flight ended (if it has).
    pub fn chunks_from(&self, from: usize) -> (Vec<Bytes>, Option<Ending>) {
        let state = self.lock();
        (
            state.chunks.get(from..).unwrap_or_default().to_vec(),
            state.ending,
        )
    }

    /// How the flight ended, if it has.
    pub fn ending(&self) -> Option<Ending> {
        self.lock().ending
    }
}

/// The flights in the air, by key.
#[derive(Debug, Default)]
pub struct Flights {
    by_key: Mutex<HashMap<RequestKey, Arc<Flight>>>,
}

/// What a miss should do.
pub enum Role {
    /// Ask the upstream and publish the answer through the lead.
    Leader(Lead),
    /// Wait for the leader's answer.
    Follower(Arc<Flight>),
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: RequestKey) -> Role {
        let mut map = crate::sync::lock(&self.by_key);
        if let Some(flight) = map.get(&key) {
            return Role::Follower(flight.clone());
        }
        let flight = Arc::new(Flight::new());
        map.insert(key, flight.clone());
        Role::Leader(Lead {
            flights: self.clone(),
            key,
            flight,
        })
    }

    fn land(&self, key: &RequestKey, flight: &Arc<Flight>) {
        let mut map = crate::sync::lock(&self.by_key);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    /// Flights currently in the air.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.by_key).len()
    }

    /// True when no flight is in the air.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The leader's handle. Dropping it without [`Lead::end`] abandons the
/// flight, so followers never wait on a leader that is gone.
pub struct Lead {
    flights: Arc<Flights>,
    key: RequestKey,
    flight: Arc<Flight>,
}

impl Lead {
    /// Publishes the head of the answer.
    pub fn head(&self, status: StatusCode, headers: &HeaderMap) {
        self.flight.lock().head = Some((status, headers.clone()));
        self.flight.bump();
    }

    /// Publishes one body chunk.
    pub fn chunk(&self, chunk: Bytes) {
        self.flight.lock().chunks.push(chunk);
        self.flight.bump();
    }

    /// Ends the flight; new identical requests start their own afterwards
    /// (and, once recorded, hit the store instead).
    pub fn end(self, ending: Ending) {
        self.finish(ending);
    }

    /// Publishes a whole answer at once and ends the flight.
    pub fn answer(self, status: StatusCode, headers: &HeaderMap, body: Bytes) {
        self.head(status, headers);
        self.chunk(body);
        self.end(Ending::Complete);
    }

    fn finish(&self, ending: Ending) {
        {
            let mut state = self.flight.lock();
            if state.ending.is_some() {
                return;
            }
            state.ending = Some(ending);
        }
        self.flights.land(&self.key, &self.flight);
        self.flight.bump();
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.finish(Ending::Abandoned);
    }
}

/// How a follower waits: bounds taken from the upstream settings, since a
/// follower waits on the same upstream answer its leader does.
#[derive(Debug, Clone)]
pub struct Patience {
    /// Longest wait for the head of the answer.
    pub first_byte: Duration,
    /// Longest gap between chunks.
    pub idle: Duration,
    /// The upstream's base URL, for the timeout message.
    pub upstream: String,
}

impl Flight {
    /// Answers from this flight's upstream call, marked as a hit for `key`.
    /// `None` when the leader went away before its answer began: the
    /// caller tries again.
    pub async fn follow(
        self: &Arc<Self>,
        key: &RequestKey,
        patience: &Patience,
    ) -> Option<Result<Response<ProxyBody>, ProxyError>> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + patience.first_byte;
        let (status, mut headers) = loop {
            if let Some(head) = self.head() {
                break head;
            }
            if self.ending().is_some() {
                return None;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => {
                    return Some(Err(ProxyError::UpstreamTimeout {
                        upstream: patience.upstream.clone(),
                        what: "send response headers",
                        timeout: patience.first_byte,
                    }))
                }
            }
        };
        // Served without calling the upstream: to this caller, a hit.
        headers::mark(&mut headers, Outcome::Hit, Some(key));
        let following = Following {
            flight: self.clone(),
            changes,
            next: 0,
            pending: VecDeque::new(),
            done: false,
            idle: patience.idle,
        };
        let frames = futures_util::stream::unfold(following, Following::next_frame);
        let mut response = Response::new(ProxyBody::boxed(StreamBody::new(frames)));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Some(Ok(response))
    }
}

/// A follower's place in the leader's answer.
struct Following {
    flight: Arc<Flight>,
    changes: watch::Receiver<u64>,
    /// Index of the next chunk to take from the flight.
    next: usize,
    /// Chunks taken but not yet sent.
    pending: VecDeque<Bytes>,
    /// The answer broke off and the break was sent.
    done: bool,
    idle: Duration,
}

impl Following {
    /// The next body frame, waiting (at most `idle`) for the leader to
    /// publish it.
    async fn next_frame(mut self) -> Option<(Result<Frame<Bytes>, BoxError>, Following)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some((Ok(Frame::data(chunk)), self));
            }
            if self.done {
                return None;
            }
            let (chunks, ending) = self.flight.chunks_from(self.next);
            self.next += chunks.len();
            self.pending.extend(chunks);
            if !self.pending.is_empty() {
                continue;
            }
            match ending {
                Some(Ending::Complete) => return None,
                Some(Ending::Broken | Ending::Abandoned) => {
                    self.done = true;
                    let error: BoxError = "the shared upstream answer broke off".into();
                    return Some((Err(error), self));
                }
                None => {
                    if tokio::time::timeout(self.idle, self.changes.changed())
                        .await
                        .is_err()
                    {
                        self.done = true;
                        let error: BoxError = Box::new(IdleTimeoutError(self.idle));
                        return Some((Err(error), self));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_identical_miss_follows_and_a_dropped_lead_abandons() {
        let flights = Arc::new(Flights::default());
        let key = RequestKey::from_bytes([3; 32]);
        let Role::Leader(lead) = flights.join(key) else {
            panic!("first is leader")
        };
        let Role::Follower(flight) = flights.join(key) else {
            panic!("second follows")
        };
        lead.head(StatusCode::OK, &HeaderMap::new());
        lead.chunk(Bytes::from_static(b"a"));
        assert_eq!(flight.chunks_from(0).0, vec![Bytes::from_static(b"a")]);
        drop(lead);
        assert_eq!(flight.ending(), Some(Ending::Abandoned));
        assert!(flights.is_empty());
        assert!(
            matches!(flights.join(key), Role::Leader(_)),
            "a new flight starts"
        );
    }

    #[test]
    fn an_answer_lands_the_flight() {
        let flights = Arc::new(Flights::default());
        let key = RequestKey::from_bytes([4; 32]);
        let Role::Leader(lead) = flights.join(key) else {
            panic!()
        };
        let Role::Follower(flight) = flights.join(key) else {
            panic!()
        };
        lead.answer(
            StatusCode::CREATED,
            &HeaderMap::new(),
            Bytes::from_static(b"x"),
        );
        assert_eq!(flight.head().unwrap().0, StatusCode::CREATED);
        assert_eq!(
            flight.chunks_from(0),
            (vec![Bytes::from_static(b"x")], Some(Ending::Complete))
        );
        assert!(flights.is_empty());
    }
}
