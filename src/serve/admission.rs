//! Which connections are served: `server.max_connections` with a share
//! kept for loopback peers, fitted under the process's open-file limit,
//! and the pace of the accept loop when `accept` fails.
//!
//! Owns the counting and the decisions; the accept loop
//! (`serve::server`) asks and acts. A connection beyond the limit is
//! accepted and refused at once rather than left in the listen backlog,
//! where it (and every client behind it) would wait unanswered.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::serve::metrics::Metrics;

/// One in this many connections is kept for loopback peers, so a local
/// health probe or metrics scrape gets in while remote clients fill the
/// rest...
const LOOPBACK_SHARE: usize = 16;
/// ...but never more than this many: a few probes need a few connections.
const MAX_LOOPBACK_RESERVE: usize = 64;

/// Open files kept for everything but client connections (the store's
/// files, the runtime, upstream connections), as a share of the limit...
const SPARE_FILES_SHARE: u64 = 4;
/// ...within these bounds.
const MIN_SPARE_FILES: u64 = 16;
const MAX_SPARE_FILES: u64 = 256;

/// The first pause after a failed `accept`; it doubles on each failure
/// in a row (a full file table stays full for a while)...
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
/// ...up to this, short enough that a freed descriptor is used soon.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// A burst of failures or refusals is logged once per this, with the
/// number left out: a flood must not become a flood of log lines.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(1);

/// Counts open client connections against `server.max_connections`.
pub(crate) struct Admission {
    max: usize,
    loopback_reserve: usize,
    metrics: Arc<Metrics>,
    drained: Arc<Notify>,
}

impl Admission {
    /// At most `max` connections; the gauge lives in `metrics`.
    pub(crate) fn new(max: usize, metrics: Arc<Metrics>) -> Admission {
        Admission {
            max,
            loopback_reserve: loopback_reserve(max),
            metrics,
            drained: Arc::new(Notify::new()),
        }
    }

    /// The limit in force.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A place for a connection from `peer`, or `None` when full. Loopback
    /// peers may use the reserved share.
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<Admitted> {
        let limit = if is_loopback(peer) {
            self.max
        } else {
            self.max - self.loopback_reserve
        };
        self.metrics
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()?;
        Some(Admitted {
            metrics: self.metrics.clone(),
            drained: self.drained.clone(),
        })
    }

    /// Resolves once no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close in between is seen.
            notified.as_mut().enable();
            if self.metrics.connections_open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// An open connection's place; dropping it frees the place.
pub(crate) struct Admitted {
    metrics: Arc<Metrics>,
    drained: Arc<Notify>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.metrics.connections_open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// Places only loopback peers may take: 1/16 of `max`, at least one, at
/// most 64, and none when `max` is 1.
fn loopback_reserve(max: usize) -> usize {
    (max / LOOPBACK_SHARE)
        .clamp(1, MAX_LOOPBACK_RESERVE)
        .min(max.saturating_sub(1))
}

/// Loopback, IPv4-mapped IPv6 (a dual-stack listener) included.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// How many client connections fit under an open-file limit of `files`.
fn connections_within(files: u64) -> usize {
    let spare = (files / SPARE_FILES_SHARE).clamp(MIN_SPARE_FILES, MAX_SPARE_FILES);
    usize::try_from(files.saturating_sub(spare).max(1)).unwrap_or(usize::MAX)
}

/// What fitting `server.max_connections` under the file limit gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fit {
    /// The limit to serve with.
    pub(crate) max_connections: usize,
    /// The soft open-file limit now in force.
    pub(crate) files: u64,
}

/// Fits `configured` under a soft limit of `files` (after raising it).
fn fit(configured: usize, files: u64) -> Fit {
    Fit {
        max_connections: configured.min(connections_within(files)),
        files,
    }
}

/// Raises the soft open-file limit towards the hard one as far as
/// `configured` connections need, and returns the limit to serve with:
/// `configured`, or less (with a warning) when the files do not allow it.
/// Without this, connections past the file limit fail in `accept` and
/// wait in the backlog, every other client with them.
pub(crate) fn fit_to_file_limit(configured: usize) -> usize {
    #[cfg(unix)]
    {
        let wanted = u64::try_from(configured)
            .unwrap_or(u64::MAX)
            .saturating_add(MAX_SPARE_FILES);
        let files = match rlimit::increase_nofile_limit(wanted) {
            Ok(files) => files,
            Err(error) => match rlimit::getrlimit(rlimit::Resource::NOFILE) {
                Ok((soft, _)) => {
                    tracing::debug!(%error, "could not raise the open-file limit");
                    soft
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the open-file limit; server.max_connections is not checked against it");
                    return configured;
                }
            },
        };
        let fitted = fit(configured, files);
        if fitted.max_connections < configured {
            tracing::warn!(
                configured,
                open_file_limit = fitted.files,
                serving = fitted.max_connections,
                "server.max_connections cannot be reached under the open-file limit (some files are kept for the store and upstream connections); raise the limit (ulimit -n, LimitNOFILE=) or lower server.max_connections"
            );
        }
        fitted.max_connections
    }
    #[cfg(not(unix))]
    {
        configured
    }
}

/// The pause before the next `accept` after failures in a row.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: ACCEPT_BACKOFF_START,
        }
    }
}

impl AcceptBackoff {
    /// An `accept` failed: how long to pause.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(ACCEPT_BACKOFF_MAX);
        pause
    }

    /// An `accept` succeeded: the next failure pauses briefly again.
    pub(crate) fn succeeded(&mut self) {
        self.next = ACCEPT_BACKOFF_START;
    }
}

/// Lets one log line through per period.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    left_out: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            left_out: 0,
        }
    }

    /// One more event at `now`: `Some(n)` when it is to be logged, `n`
    /// being how many were left out since the last line.
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now < last + self.every => {
                self.left_out += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.left_out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn remote_peers_leave_the_loopback_share_free() {
        let metrics = Arc::new(Metrics::default());
        let admission = Admission::new(32, metrics.clone());
        let remote: Vec<Admitted> = (0..40).filter_map(|_| admission.admit(REMOTE)).collect();
        assert_eq!(remote.len(), 30, "32 less a reserve of 2");
        let local: Vec<Admitted> = (0..5).filter_map(|_| admission.admit(LOCAL)).collect();
        assert_eq!(
            local.len(),
            2,
            "loopback takes the reserve, then it is full"
        );
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 32);
        drop(local);
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 30);
        assert!(
            admission.admit(REMOTE).is_none(),
            "the freed places are the reserve"
        );
        assert!(admission.admit(LOCAL).is_some());
    }

    #[test]
    fn the_reserve_is_a_sixteenth_between_one_and_sixty_four() {
        assert_eq!(loopback_reserve(1), 0);
        assert_eq!(loopback_reserve(2), 1);
        assert_eq!(loopback_reserve(100), 6);
        assert_eq!(loopback_reserve(4096), 64);
        assert_eq!(loopback_reserve(1_000_000), 64);
    }

    #[test]
    fn mapped_ipv6_loopback_is_loopback() {
        assert!(is_loopback(IpAddr::V6(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped()
        )));
        assert!(is_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!is_loopback(REMOTE));
    }

    #[tokio::test]
    async fn draining_waits_for_the_last_connection() {
        let metrics = Arc::new(Metrics::default());
        let admission = Arc::new(Admission::new(4, metrics));
        admission.drained().await;
        let open = admission.admit(LOCAL).unwrap();
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(open);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("drained once the last one closed")
            .unwrap();
    }

    #[test]
    fn the_limit_is_fitted_under_the_open_files() {
        assert_eq!(fit(4096, 1_048_576).max_connections, 4096);
        assert_eq!(fit(4096, 1024).max_connections, 768, "256 files kept");
        assert_eq!(fit(4096, 256).max_connections, 192, "a quarter kept");
        assert_eq!(fit(10, 256).max_connections, 10);
        assert_eq!(fit(4096, 20).max_connections, 4, "at least 16 kept");
        assert_eq!(fit(4096, 3).max_connections, 1, "never zero");
    }

    #[test]
    fn accept_failures_back_off_to_a_ceiling_and_a_success_resets() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<u128> = (0..7).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 250, 250]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), ACCEPT_BACKOFF_START);
    }

    #[test]
    fn a_burst_is_logged_once_a_second_with_the_count_left_out() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(1));
        assert_eq!(throttle.note(t0), Some(0));
        let logged: Vec<Option<u64>> = (1..=999)
            .map(|ms| throttle.note(t0 + Duration::from_millis(ms)))
            .collect();
        assert!(logged.iter().all(Option::is_none), "one line per second");
        assert_eq!(throttle.note(t0 + Duration::from_millis(1000)), Some(999));
        assert_eq!(throttle.note(t0 + Duration::from_millis(1001)), None);
        assert_eq!(throttle.note(t0 + Duration::from_secs(5)), Some(1));
    }
}
