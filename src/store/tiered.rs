//! Two tiers as one: the local store first, the shared Redis tier
//! ([`Remote`]) behind it.
//!
//! Through the [`Tier`] seam this is the local tier, unchanged: every read
//! is local (a hit never touches the network), and a write commits locally
//! first. What the seam adds: a committed recording is queued for Redis
//! (when this proxy may write), and [`Tiered::fill`] answers a local miss
//! from Redis, copying the recording into the local store so the next hit
//! is local. The proxy calls `fill` (it is async; the seam is not).
//!
//! Pushes run on one background task, so a slow Redis never delays a
//! client. A push that fails (Redis down, breaker open) leaves its key in
//! the pending set; the same task probes Redis while keys are pending and
//! pushes them once it answers, never overwriting a newer recording there.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::lease::LeaseGuard;
use crate::store::remote::{Remote, RemoteError};
use crate::store::remote_changes;
use crate::store::{forward_reads, forward_replace_remove, Tier, TierError};

/// How often pending pushes are retried while Redis is away: the breaker's
/// pace, so a retry is also its probe.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What Redis had for a local miss.
pub enum Fill {
    /// A checked recording, now copied into the local store.
    Copied(Box<Recording>),
    /// Redis has no (usable) recording of the key.
    Absent,
    /// Redis did not answer (timeout, error, breaker open).
    Unavailable(RemoteError),
}

/// The local tier with the shared one behind it.
pub struct Tiered {
    local: Arc<dyn Tier>,
    remote: Arc<Remote>,
    history: usize,
    pushes: mpsc::UnboundedSender<Push>,
    pending: Arc<Mutex<HashSet<RequestKey>>>,
    /// Leases this proxy holds for misses on their way upstream; each is
    /// released once its recording is pushed (or the miss ends unrecorded).
    held: Mutex<HashMap<RequestKey, LeaseGuard>>,
    /// Called after a local copy is replaced by a newer recording from
    /// Redis (the proxy drops its rendering of the key).
    on_replaced: OnceLock<Replaced>,
}

/// See [`Tiered::on_replaced`].
type Replaced = Box<dyn Fn(&RequestKey) + Send + Sync>;

thread_local! {
    /// Set while a recording just read from Redis is written into the
    /// local store through some wrapper of this tier (`pull` run inside
    /// `serve`): it is in Redis already, so [`Tiered::put`] does not push
    /// it back. Thread-local, and only around a synchronous write: nothing
    /// else runs on the thread meanwhile.
    static FROM_REMOTE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `write`, a local write of a recording read from Redis, so that a
/// [`Tiered`] it reaches commits it locally without pushing it back.
pub fn from_remote<T>(write: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FROM_REMOTE.with(|flag| flag.set(false));
        }
    }
    FROM_REMOTE.with(|flag| flag.set(true));
    let _reset = Reset;
    write()
}

/// A recording to push, with the lease to release once it is in Redis.
type Push = (Recording, Option<LeaseGuard>);

/// Releases the lease of one miss when the miss ends without a recording
/// (with one, the push has already taken the lease).
pub struct LeaseTicket {
    tiered: Arc<Tiered>,
    key: RequestKey,
}

impl Drop for LeaseTicket {
    fn drop(&mut self) {
        crate::sync::lock(&self.tiered.held).remove(&self.key);
    }
}

impl Tiered {
    /// Both tiers, with the push task started on the current runtime.
    /// `history` is what a copy from Redis keeps (as for any recording).
    pub fn start(local: Arc<dyn Tier>, remote: Arc<Remote>, history: usize) -> Arc<Tiered> {
        let (pushes, queue) = mpsc::unbounded_channel();
        let tiered = Arc::new(Tiered {
            local: local.clone(),
            remote: remote.clone(),
            history,
            pushes,
            pending: Arc::default(),
            held: Mutex::default(),
            on_replaced: OnceLock::new(),
        });
        tokio::spawn(push_loop(local, remote, tiered.pending.clone(), queue));
        tokio::spawn(remote_changes::follow(Arc::downgrade(&tiered)));
        tiered
    }

    /// Sets what runs after a local copy is replaced by a newer recording
    /// another proxy wrote; only the first call counts.
    pub fn on_replaced(&self, hook: Replaced) {
        let _ = self.on_replaced.set(hook);
    }

    /// A local copy of `key` was just replaced from Redis.
    pub(crate) fn replaced(&self, key: &RequestKey) {
        if let Some(hook) = self.on_replaced.get() {
            hook(key);
        }
    }

    /// The local tier alone (writes here are not pushed).
    pub(crate) fn local(&self) -> &dyn Tier {
        self.local.as_ref()
    }

    /// What a recording copied from Redis keeps as history.
    pub(crate) fn history(&self) -> usize {
        self.history
    }

    /// The Redis tier.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Keeps `guard` until the recording of its key is pushed; the ticket
    /// releases it if the miss ends unrecorded.
    pub fn hold(self: &Arc<Self>, key: RequestKey, guard: LeaseGuard) -> LeaseTicket {
        crate::sync::lock(&self.held).insert(key, guard);
        LeaseTicket {
            tiered: self.clone(),
            key,
        }
    }

    /// The shared handle to the Redis tier (for leases).
    pub fn remote_handle(&self) -> &Arc<Remote> {
        &self.remote
    }

    /// Recordings committed locally and not yet in Redis.
    pub fn pending(&self) -> usize {
        crate::sync::lock(&self.pending).len()
    }

    /// Answers a local miss from Redis; a recording found is copied into
    /// the local store (a failed copy is logged: it is still served).
    pub async fn fill(&self, key: &RequestKey) -> Fill {
        match self.remote.get(key).await {
            Ok(Some(recording)) => {
                self.copy_local(key, &recording);
                Fill::Copied(Box::new(recording))
            }
            Ok(None) => Fill::Absent,
            Err(error) => Fill::Unavailable(error),
        }
    }
}

impl Tiered {
    /// Copies a recording read from Redis into the local store (a failed
    /// copy is logged: the recording is still served).
    pub fn copy_local(&self, key: &RequestKey, recording: &Recording) {
        if let Err(error) = self.local.put(key, recording, self.history, false) {
            tracing::error!(key = %key, %error, "recording from the shared store not copied locally");
        }
    }
}

/// Pushes committed recordings; retries the pending ones while Redis is
/// away. Ends when the tier is dropped (its sender with it).
async fn push_loop(
    local: Arc<dyn Tier>,
    remote: Arc<Remote>,
    pending: Arc<Mutex<HashSet<RequestKey>>>,
    mut queue: mpsc::UnboundedReceiver<Push>,
) {
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = queue.recv() => {
                let Some((recording, lease)) = next else { return };
                let key = recording.key();
                match remote.put(&recording).await {
                    Ok(()) => {
                        crate::sync::lock(&pending).remove(&key);
                        // Waiting proxies replay it now; then the lease goes.
                        let _ = remote.announce(&key).await;
                        drop(lease);
                    }
                    Err(error) => {
                        tracing::warn!(key = %key, %error, "recording kept locally; pushed to the shared store when it is back");
                        crate::sync::lock(&pending).insert(key);
                    }
                }
            }
            _ = retry.tick() => {
                let keys: Vec<RequestKey> = crate::sync::lock(&pending).iter().copied().collect();
                if keys.is_empty() || remote.ping().await.is_err() {
                    continue;
                }
                push_pending(local.as_ref(), &remote, &pending, keys).await;
            }
        }
    }
}

/// Pushes the local recordings of `keys`, each unless Redis holds a newer
/// one; stops at the first failure (the rest stay pending).
async fn push_pending(
    local: &dyn Tier,
    remote: &Remote,
    pending: &Mutex<HashSet<RequestKey>>,
    keys: Vec<RequestKey>,
) {
    let mut pushed = 0usize;
    let mut skipped = 0usize;
    for key in keys {
        let recording = match local.get(&key) {
            Ok(Some(recording)) => recording,
            // Removed or unreadable since: nothing to push.
            Ok(None) | Err(_) => {
                crate::sync::lock(pending).remove(&key);
                continue;
            }
        };
        match remote.put_unless_newer(&recording).await {
            Ok(written) => {
                crate::sync::lock(pending).remove(&key);
                if written {
                    pushed += 1;
                } else {
                    skipped += 1;
                }
            }
            Err(_) => break,
        }
    }
    if pushed + skipped > 0 {
        tracing::info!(
            pushed,
            skipped_newer = skipped,
            "pending recordings pushed to the shared store"
        );
    }
}

impl Tier for Tiered {
    // Every read is local: a hit never touches the network.
    forward_reads!(local);
    // An import or a removal is this proxy's own business: not pushed.
    forward_replace_remove!(local);

    /// Commits locally, then queues the recording for Redis (read-only
    /// proxies never write there, and a recording from Redis, see
    /// [`from_remote`], is not written back).
    fn put(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, TierError> {
        let written = self.local.put(key, recording, history, replace)?;
        let lease = crate::sync::lock(&self.held).remove(key);
        if written && self.remote.writable() && !FROM_REMOTE.with(std::cell::Cell::get) {
            // The receiver lives as long as the runtime; after that nothing
            // is pushed anyway.
            if self.pushes.send((recording.clone(), lease)).is_err() {
                crate::sync::lock(&self.pending).insert(*key);
            }
        }
        Ok(written)
    }

    fn location(&self) -> &Path {
        self.local.location()
    }
}

/// Counters of the shared tier for `/_llmtape/metrics`, in Prometheus text.
pub fn render_metrics(tiered: &Tiered) -> String {
    let stats = &tiered.remote.stats;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "llmtape_remote_hits_total",
        "Local misses answered from the shared store.",
        stats.hits.load(Ordering::Relaxed),
    );
    counter(
        "llmtape_remote_misses_total",
        "Local misses the shared store did not hold either.",
        stats.misses.load(Ordering::Relaxed),
    );
    counter(
        "llmtape_remote_writes_total",
        "Recordings written to the shared store.",
        stats.writes.load(Ordering::Relaxed),
    );
    counter(
        "llmtape_remote_errors_total",
        "Shared store commands that failed or timed out.",
        stats.errors.load(Ordering::Relaxed),
    );
    counter(
        "llmtape_remote_bad_values_total",
        "Values in the shared store that were not a recording of their key.",
        stats.bad_values.load(Ordering::Relaxed),
    );
    counter(
        "llmtape_remote_replaced_total",
        "Local copies replaced by a newer recording from the shared store.",
        stats.replaced.load(Ordering::Relaxed),
    );
    let mut gauge = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "llmtape_remote_pending_pushes",
        "Recordings committed locally, not yet in the shared store.",
        tiered.pending() as u64,
    );
    gauge(
        "llmtape_remote_breaker_open",
        "1 while the breaker refuses to call the shared store.",
        u64::from(tiered.remote.breaker_open()),
    );
    gauge(
        "llmtape_remote_up",
        "1 while the shared store answers.",
        u64::from(tiered.remote.state() == "up"),
    );
    out
}
