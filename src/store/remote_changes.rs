//! Re-recordings made on another proxy replace the copies this one holds.
//!
//! Every write to Redis ([`Remote::put`]) scores its key in the change
//! list `{PREFIX}:changes` with the time of the recording, and announces
//! `KEYHEX MS` on `{PREFIX}:changed`. Each proxy listens on that channel:
//! for a key it holds locally with an older recording, it reads the new
//! one from Redis (checked like any remote value), puts it in the local
//! store (the old one goes to history) and drops its in-memory rendering
//! (the hook the proxy sets, [`Tiered::on_replaced`]). Its own writes come
//! back too and change nothing (same time).
//!
//! An announcement sent while a proxy was not listening (its connection
//! lost, Redis restarted, or the proxy not running at all) is lost. So each
//! time it subscribes, it first listens, then reads the whole change list
//! and compares it with its local copies: a proxy catches up as soon as it
//! is connected again, and until then serves what it holds. The connection
//! is pinged every few seconds, so a Redis that stopped answering (not only
//! one that closed the connection) is noticed and the catch-up runs again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use crate::key::RequestKey;
use crate::store::remote::{recorded_ms, rfc3339_ms, Remote};
use crate::store::Tiered;

/// How often a quiet subscription is pinged (a stopped Redis sends
/// nothing, and closes nothing).
const PING_EVERY: Duration = Duration::from_secs(2);
/// The pause between attempts to subscribe while Redis is away (the
/// breaker's pace).
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);
/// Change-list entries read per command in a catch-up.
const CATCH_UP_BATCH: usize = 1000;

/// Follows the change list for `tiered` until it is dropped.
pub(crate) async fn follow(tiered: Weak<Tiered>) {
    loop {
        let Some(remote) = tiered.upgrade().map(|t| t.remote_handle().clone()) else {
            return;
        };
        if let Some(mut pubsub) = subscribe(&remote).await {
            // Listening first, then looking: nothing written in between is
            // missed.
            if catch_up(&tiered, &remote).await.is_some() {
                listen(&tiered, &remote, &mut pubsub).await;
            }
        }
        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
    }
}

/// A subscription to the channel, or `None` when Redis does not answer in
/// time.
async fn subscribe(remote: &Remote) -> Option<redis::aio::PubSub> {
    let timeout = remote.config().timeout;
    let mut pubsub = tokio::time::timeout(timeout, remote.client().get_async_pubsub())
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(timeout, pubsub.subscribe(remote.changes_channel()))
        .await
        .ok()?
        .ok()?;
    Some(pubsub)
}

/// Compares the whole change list with the local copies; `None` when
/// Redis stopped answering (the caller subscribes again).
async fn catch_up(tiered: &Weak<Tiered>, remote: &Remote) -> Option<()> {
    let mut from = 0;
    loop {
        let batch = remote.changes(from, CATCH_UP_BATCH).await.ok()?;
        let done = batch.len() < CATCH_UP_BATCH;
        from += batch.len();
        for (key, at) in batch {
            refresh(&tiered.upgrade()?, &key, at).await;
        }
        if done {
            return Some(());
        }
    }
}

/// Handles announcements until the subscription breaks or Redis stops
/// answering its pings.
async fn listen(tiered: &Weak<Tiered>, remote: &Remote, pubsub: &mut redis::aio::PubSub) {
    loop {
        let next = tokio::time::timeout(PING_EVERY, pubsub.on_message().next()).await;
        match next {
            Ok(Some(message)) => {
                let Some(tiered) = tiered.upgrade() else {
                    return;
                };
                let payload: String = message.get_payload().unwrap_or_default();
                if let Some((key, at)) = parse(&payload) {
                    refresh(&tiered, &key, at).await;
                }
            }
            Ok(None) => return,
            Err(_) => {
                // The tier is gone (its proxy stopped): so is the need.
                if tiered.strong_count() == 0 {
                    return;
                }
                let ping = pubsub.ping::<String>();
                if !matches!(
                    tokio::time::timeout(remote.config().timeout, ping).await,
                    Ok(Ok(_))
                ) {
                    return;
                }
            }
        }
    }
}

/// `KEYHEX MS`, as [`Remote::put`] announces it.
fn parse(payload: &str) -> Option<(RequestKey, u64)> {
    let (hex, at) = payload.split_once(' ')?;
    Some((RequestKey::from_hex(hex)?, at.parse().ok()?))
}

/// Replaces the local copy of `key` when it is older than `at` (the time
/// of the recording Redis now holds). Keys this proxy does not hold are
/// left alone: its next miss reads Redis anyway.
async fn refresh(tiered: &Arc<Tiered>, key: &RequestKey, at: u64) {
    let local = tiered.local();
    if !local.indexed(key) {
        return;
    }
    // From the response log, as a hit reads it: no entry is decoded for
    // the many keys a catch-up finds unchanged.
    let here = match local.replayable(key) {
        Ok(Some(held)) => rfc3339_ms(&String::from_utf8_lossy(&held.recorded_at)),
        Ok(None) | Err(_) => 0,
    };
    if here >= at {
        return;
    }
    let remote = tiered.remote();
    // Read, not assumed from the announcement: the value is checked, and
    // may be newer still.
    let Ok(Some(recording)) = remote.read(key).await else {
        return;
    };
    if recorded_ms(&recording) <= here {
        return;
    }
    if let Err(error) = local.put(key, &recording, tiered.history(), true) {
        tracing::error!(key = %key, %error, "newer recording from the shared store not stored locally");
        return;
    }
    tiered.replaced(key);
    remote.stats.replaced.fetch_add(1, Ordering::Relaxed);
    tracing::info!(key = %key, recorded_at = %recording.meta.recorded_at, "local copy replaced by a newer recording from the shared store");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_and_junk_does_not() {
        let hex = "ab".repeat(32);
        let key = RequestKey::from_hex(&hex).unwrap();
        assert_eq!(
            parse(&format!("{hex} 1700000000123")),
            Some((key, 1700000000123))
        );
        assert_eq!(parse(&hex), None);
        assert_eq!(parse("zz 12"), None);
        assert_eq!(parse(&format!("{hex} soon")), None);
    }
}
