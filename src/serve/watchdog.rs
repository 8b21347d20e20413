//! What a client connection is doing, and when it has waited too long:
//! `server.header_read_timeout` and `server.idle_timeout`.
//!
//! Owns the decision only (a [`Phase`] per connection and the [`Verdict`]
//! on it), not the socket: `serve::connection` feeds it reads, requests
//! and answers, sleeps until the deadline it names and closes the
//! connection when it says so. hyper has no idle timeout, and its own
//! header timeout neither writes a 408 nor tells a kept-alive wait from a
//! slow head, hence this.
//!
//! The bounds are on what the client sends, never on what the upstream
//! takes: while a request is in flight (from the service call to the end
//! of its answer's body) no timeout here runs, however long the answer
//! streams or pauses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The two connection-level bounds, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// `server.header_read_timeout`.
    pub(crate) header: Duration,
    /// `server.idle_timeout`.
    pub(crate) idle: Duration,
}

/// Which client timeout fired: the same words in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientTimeout {
    /// The request head did not arrive in time.
    Header,
    /// The request body paused too long.
    Body,
    /// A kept-alive connection stayed without a request.
    Idle,
}

impl ClientTimeout {
    /// Every kind, in the order metrics list them.
    pub(crate) const ALL: [ClientTimeout; 3] = [
        ClientTimeout::Header,
        ClientTimeout::Body,
        ClientTimeout::Idle,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientTimeout::Header => "header",
            ClientTimeout::Body => "body",
            ClientTimeout::Idle => "idle",
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head: since the connection started serving,
    /// or (HTTP/1) since the first byte after an idle wait. `partial`:
    /// bytes of it arrived, so a 408 has someone to read it.
    Head { since: Instant, partial: bool },
    /// Kept alive after an answer, nothing read since.
    Idle { since: Instant },
    /// At least one request in flight.
    Busy,
}

/// What the watchdog does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing unless something changes before this instant.
    WaitUntil(Instant),
    /// A request is in flight: no deadline until it ends.
    Busy,
    /// Close the connection: the head did not come in time (`partial`: a
    /// part of it did, so HTTP/1 gets a 408 first).
    HeadTimedOut { partial: bool },
    /// Close the connection: idle too long.
    IdleTimedOut,
}

/// The pure state of one connection, driven with explicit instants.
#[derive(Debug, Clone)]
pub(crate) struct State {
    phase: Phase,
    in_flight: usize,
    h2: bool,
}

impl State {
    /// A connection that starts serving at `now`: its first head is due
    /// within the header timeout.
    pub(crate) fn new(now: Instant, h2: bool) -> State {
        State {
            phase: Phase::Head {
                since: now,
                partial: false,
            },
            in_flight: 0,
            h2,
        }
    }

    /// Bytes arrived. True when that starts a deadline the watchdog does
    /// not know yet (an idle HTTP/1 connection now reads a head).
    ///
    /// On HTTP/2 bytes between requests are pings, window updates and
    /// settings as often as a new stream, so they leave an idle wait idle:
    /// there `idle_timeout` bounds a stalled HEADERS frame too.
    pub(crate) fn read(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Idle { .. } if !self.h2 => {
                self.phase = Phase::Head {
                    since: now,
                    partial: true,
                };
                true
            }
            Phase::Head { since, .. } => {
                self.phase = Phase::Head {
                    since,
                    partial: true,
                };
                false
            }
            Phase::Idle { .. } | Phase::Busy => false,
        }
    }

    /// A request was handed to the service.
    pub(crate) fn request_started(&mut self, h2: bool) {
        self.h2 |= h2;
        self.in_flight += 1;
        self.phase = Phase::Busy;
    }

    /// A request's answer ended (or was dropped). True when the
    /// connection became idle, which starts the idle deadline.
    pub(crate) fn request_ended(&mut self, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.phase = Phase::Idle { since: now };
            true
        } else {
            false
        }
    }

    /// Whether the connection speaks HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2
    }

    /// The verdict at `now`.
    pub(crate) fn verdict(&self, now: Instant, bounds: Bounds) -> Verdict {
        match self.phase {
            Phase::Busy => Verdict::Busy,
            Phase::Head { since, partial } => {
                let deadline = since + bounds.header;
                if now >= deadline {
                    Verdict::HeadTimedOut { partial }
                } else {
                    Verdict::WaitUntil(deadline)
                }
            }
            Phase::Idle { since } => {
                let deadline = since + bounds.idle;
                if now >= deadline {
                    Verdict::IdleTimedOut
                } else {
                    Verdict::WaitUntil(deadline)
                }
            }
        }
    }
}

/// One connection's [`State`], shared by its IO (reads), its service
/// (requests, possibly on several HTTP/2 stream tasks) and its watchdog.
pub(crate) struct Activity {
    state: Mutex<State>,
    /// A request body stalled on this (HTTP/1) connection: its answer
    /// closes the connection.
    body_stalled: AtomicBool,
    /// Told of each stalled body (the server counts them): set once per
    /// connection, so a request's body wrapper holds only the activity.
    on_body_stall: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("state", &self.state)
            .field("body_stalled", &self.body_stalled)
            .finish_non_exhaustive()
    }
}

impl Activity {
    /// A connection starting to serve now whose stalled bodies are
    /// reported to `on_body_stall`.
    pub(crate) fn new(
        h2: bool,
        on_body_stall: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State::new(Instant::now(), h2)),
            body_stalled: AtomicBool::new(false),
            on_body_stall,
        })
    }

    /// Bytes arrived from the client. The watchdog is not woken: the
    /// deadline this may start is at least `header_read_timeout` away,
    /// and it looks again sooner than that (`serve::connection`).
    pub(crate) fn read(&self) {
        crate::sync::lock(&self.state).read(Instant::now());
    }

    /// Notes the connection speaks HTTP/2 (its preface was seen).
    pub(crate) fn saw_h2_preface(&self) {
        crate::sync::lock(&self.state).h2 = true;
    }

    /// A request is handed to the service; it counts as in flight until
    /// the returned guard drops (with the answer's body).
    pub(crate) fn request_started(self: &Arc<Self>, h2: bool) -> InFlightRequest {
        crate::sync::lock(&self.state).request_started(h2);
        InFlightRequest(self.clone())
    }

    /// Whether the connection speaks HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        crate::sync::lock(&self.state).is_h2()
    }

    /// The verdict at `now`.
    pub(crate) fn verdict_at(&self, now: Instant, bounds: Bounds) -> Verdict {
        crate::sync::lock(&self.state).verdict(now, bounds)
    }

    /// A request body stalled past `server.body_read_timeout`.
    pub(crate) fn body_stalled(&self) {
        self.body_stalled.store(true, Ordering::Relaxed);
        if let Some(report) = &self.on_body_stall {
            report();
        }
    }

    /// Whether a body stalled since the last call.
    pub(crate) fn take_body_stalled(&self) -> bool {
        self.body_stalled.swap(false, Ordering::Relaxed)
    }
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlightRequest(Arc<Activity>);

impl InFlightRequest {
    /// The connection's activity this request counts in.
    pub(crate) fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        // The idle deadline this may start is `idle_timeout` away: the
        // watchdog looks again before (see [`Activity::read`]).
        crate::sync::lock(&self.0.state).request_ended(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let t0 = Instant::now();
        let state = State::new(t0, false);
        assert_eq!(state.verdict(t0, BOUNDS), Verdict::WaitUntil(t0 + secs(10)));
        assert_eq!(
            state.verdict(t0 + secs(10), BOUNDS),
            Verdict::HeadTimedOut { partial: false },
            "nothing was sent: closed without a 408"
        );
    }

    #[test]
    fn a_partial_head_times_out_from_its_first_byte_with_a_408() {
        let t0 = Instant::now();
        let mut state = State::new(t0, false);
        state.request_started(false);
        assert!(state.request_ended(t0 + secs(1)), "now idle");
        assert_eq!(
            state.verdict(t0 + secs(2), BOUNDS),
            Verdict::WaitUntil(t0 + secs(61))
        );
        assert!(state.read(t0 + secs(5)), "an idle wait became a head");
        assert!(!state.read(t0 + secs(6)), "more of the same head");
        assert_eq!(
            state.verdict(t0 + secs(14), BOUNDS),
            Verdict::WaitUntil(t0 + secs(15))
        );
        assert_eq!(
            state.verdict(t0 + secs(15), BOUNDS),
            Verdict::HeadTimedOut { partial: true }
        );
    }

    #[test]
    fn a_request_in_flight_has_no_deadline_however_long_it_takes() {
        let t0 = Instant::now();
        let mut state = State::new(t0, false);
        state.read(t0);
        state.request_started(false);
        // Body bytes, or a pipelined head, while the answer streams.
        assert!(!state.read(t0 + secs(500)));
        assert_eq!(state.verdict(t0 + secs(3600), BOUNDS), Verdict::Busy);
        assert!(state.request_ended(t0 + secs(3600)));
        assert_eq!(
            state.verdict(t0 + secs(3659), BOUNDS),
            Verdict::WaitUntil(t0 + secs(3660))
        );
        assert_eq!(
            state.verdict(t0 + secs(3660), BOUNDS),
            Verdict::IdleTimedOut
        );
    }

    #[test]
    fn http2_streams_overlap_and_frames_between_them_leave_it_idle() {
        let t0 = Instant::now();
        let mut state = State::new(t0, true);
        state.request_started(true);
        state.request_started(true);
        assert!(!state.request_ended(t0 + secs(1)), "one stream still open");
        assert_eq!(state.verdict(t0 + secs(100), BOUNDS), Verdict::Busy);
        assert!(state.request_ended(t0 + secs(2)));
        assert!(!state.read(t0 + secs(30)), "a ping is not a head");
        assert_eq!(
            state.verdict(t0 + secs(61), BOUNDS),
            Verdict::WaitUntil(t0 + secs(62))
        );
        assert_eq!(state.verdict(t0 + secs(62), BOUNDS), Verdict::IdleTimedOut);
    }

    #[test]
    fn the_first_request_tells_http2_apart() {
        let t0 = Instant::now();
        let mut state = State::new(t0, false);
        assert!(!state.is_h2());
        state.request_started(true);
        assert!(state.is_h2());
    }

    #[test]
    fn timeouts_have_one_word_each() {
        let words: Vec<&str> = ClientTimeout::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(words, ["header", "body", "idle"]);
    }

    /// What lets the watchdog go untold of changes (`serve::connection`
    /// looks again at least every `min(header, idle)`): a deadline a
    /// change starts is never sooner than that after it.
    #[test]
    fn no_change_starts_a_deadline_sooner_than_the_shorter_bound() {
        let shorter = BOUNDS.header.min(BOUNDS.idle);
        for h2 in [false, true] {
            let t0 = Instant::now();
            let mut state = State::new(t0, h2);
            let mut now = t0;
            for step in 0..400u64 {
                now += Duration::from_millis(step % 7 * 700);
                let before = state.verdict(now, BOUNDS);
                match step % 5 {
                    0 | 3 => {
                        state.read(now);
                    }
                    1 => state.request_started(h2),
                    2 | 4 => {
                        state.request_ended(now);
                    }
                    _ => unreachable!(),
                }
                let after = state.verdict(now, BOUNDS);
                if let Verdict::WaitUntil(deadline) = after {
                    if after != before {
                        assert!(
                            deadline >= now + shorter,
                            "step {step} (h2 {h2}): {before:?} -> {after:?} at {:?}",
                            now - t0
                        );
                    }
                }
            }
        }
    }
}
