//! One upstream call across proxies: a lease in Redis per key.
//!
//! The proxy that misses first takes `{PREFIX:KEYHEX}:lease` with `SET NX
//! PX` (its own random token as the value), renews it while its answer
//! runs, and releases it (only if the value is still its token) once the
//! recording is in Redis and announced on `{PREFIX:KEYHEX}:recorded`.
//! Another proxy missing the same key meanwhile subscribes to that channel,
//! then re-checks Redis (so an announcement sent before it listened is not
//! lost), and replays the recording when it is there. A leader that dies
//! stops renewing: its lease expires and a waiter takes it over. Every
//! wait ends at the caller's deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::remote::{Remote, RemoteError};

/// How long a lease lives without renewal: a dead leader delays the others
/// by at most this much.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often a live leader renews its lease (well inside [`LEASE_TTL`]).
const RENEW_EVERY: Duration = Duration::from_millis(1000);
/// How often a waiter re-checks Redis besides the announcement (to notice
/// an expired lease).
const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// Deletes the lease only if it still holds our token.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
/// Extends the lease only if it still holds our token.
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

static TOKENS: AtomicU64 = AtomicU64::new(0);

/// A held lease: renewed while it lives, released when dropped.
pub struct LeaseGuard {
    remote: Arc<Remote>,
    key: RequestKey,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        // Outside a runtime (the process is ending) the lease just expires.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let remote = self.remote.clone();
        let name = lease_key(&remote, &self.key);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            let _ = remote
                .script::<i64>(RELEASE, &name, &[token.as_bytes()])
                .await;
        });
    }
}

/// What a waiter saw.
pub enum Waited {
    /// The recording arrived (checked).
    Recorded(Box<Recording>),
    /// The lease is gone and no recording came: take over.
    LeaseGone,
    /// The deadline passed, or Redis stopped answering.
    GaveUp,
}

/// The outcome of asking for the lease.
pub enum Leased {
    /// Ours: go upstream, and keep the guard until the push is done.
    Held(LeaseGuard),
    /// Another proxy holds it: wait.
    Taken,
    /// Redis did not answer: go upstream without one.
    Unavailable(RemoteError),
}

fn lease_key(remote: &Remote, key: &RequestKey) -> String {
    format!("{}:lease", remote.record_key(key))
}

/// Tries to take the lease for `key`.
pub async fn take(remote: &Arc<Remote>, key: &RequestKey) -> Leased {
    let token = format!(
        "{}-{}-{}",
        std::process::id(),
        TOKENS.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let name = lease_key(remote, key);
    match remote.set_nx_px(&name, &token, LEASE_TTL).await {
        Ok(true) => {
            let renewing = remote.clone();
            let (renew_name, renew_token) = (name.clone(), token.clone());
            let renewer = tokio::spawn(async move {
                let ttl = LEASE_TTL.as_millis().to_string();
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let _ = renewing
                        .script::<i64>(
                            RENEW,
                            &renew_name,
                            &[renew_token.as_bytes(), ttl.as_bytes()],
                        )
                        .await;
                }
            });
            Leased::Held(LeaseGuard {
                remote: remote.clone(),
                key: *key,
                token,
                renewer,
            })
        }
        Ok(false) => Leased::Taken,
        Err(error) => Leased::Unavailable(error),
    }
}

/// For a proxy that never takes leases (`access = "read-only"`): when
/// another proxy holds `key`'s lease, waits for its recording as a waiter
/// does ([`wait`]); `None` when nobody holds it, it went away unrecorded,
/// or the wait gave up (the caller then asks the upstream itself).
pub async fn follow(remote: &Remote, key: &RequestKey, deadline: Instant) -> Option<Recording> {
    if !remote.exists(&lease_key(remote, key)).await.ok()? {
        return None;
    }
    match wait(remote, key, deadline).await {
        Waited::Recorded(recording) => Some(*recording),
        Waited::LeaseGone | Waited::GaveUp => None,
    }
}

/// Waits until `key` is recorded in Redis, its lease goes away, or
/// `deadline`.
pub async fn wait(remote: &Remote, key: &RequestKey, deadline: Instant) -> Waited {
    // Listen first, then look: an announcement between the two is seen.
    let mut pubsub =
        match tokio::time::timeout(remote.config().timeout, remote.client().get_async_pubsub())
            .await
        {
            Ok(Ok(pubsub)) => Some(pubsub),
            _ => None,
        };
    if let Some(p) = pubsub.as_mut() {
        if !matches!(
            tokio::time::timeout(remote.config().timeout, p.subscribe(remote.channel(key))).await,
            Ok(Ok(()))
        ) {
            pubsub = None;
        }
    }
    let name = lease_key(remote, key);
    loop {
        match remote.get(key).await {
            Ok(Some(recording)) => return Waited::Recorded(Box::new(recording)),
            Ok(None) => {}
            Err(_) => return Waited::GaveUp,
        }
        match remote.exists(&name).await {
            Ok(false) => return Waited::LeaseGone,
            Ok(true) => {}
            Err(_) => return Waited::GaveUp,
        }
        let next = (Instant::now() + RECHECK_EVERY).min(deadline);
        if Instant::now() >= deadline {
            return Waited::GaveUp;
        }
        match pubsub.as_mut() {
            Some(p) => {
                let _ = tokio::time::timeout_at(next, p.on_message().next()).await;
            }
            None => tokio::time::sleep_until(next).await,
        }
    }
}
