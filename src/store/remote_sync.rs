//! Whole-store copies between the local tier and Redis: `llmtape push`
//! (local to Redis, never over a newer recording there), `llmtape pull`
//! (Redis to local, never over a newer local one) and `ls --remote`.

use crate::record::recording::Recording;
use crate::store::remote::{Remote, RemoteError};
use crate::store::{tiered, Tier};

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Recordings written.
    pub copied: usize,
    /// Recordings left alone: the other side had the same or a newer one.
    pub kept: usize,
    /// Recordings that could not be read (skipped with a warning).
    pub unreadable: usize,
}

/// Pushes every local recording to Redis, each unless Redis holds a newer
/// one. Stops at the first Redis failure.
pub async fn push_all(local: &dyn Tier, remote: &Remote) -> Result<Copied, RemoteError> {
    let mut done = Copied::default();
    for item in local.iter() {
        let recording = match item {
            Ok(recording) => recording,
            Err(error) => {
                tracing::warn!(%error, "skipping unreadable recording");
                done.unreadable += 1;
                continue;
            }
        };
        if remote.put_unless_newer(&recording).await? {
            done.copied += 1;
        } else {
            done.kept += 1;
        }
    }
    Ok(done)
}

/// Pulls every recording under the prefix into the local tier, each
/// unless the local one is as new or newer.
pub async fn pull_all(
    local: &dyn Tier,
    remote: &Remote,
    history: usize,
) -> Result<Copied, RemoteError> {
    let mut done = Copied::default();
    for key in remote.keys().await? {
        let Some(recording) = remote.get(&key).await? else {
            done.unreadable += 1;
            continue;
        };
        let newer_here = matches!(local.get(&key), Ok(Some(here)) if here.meta.recorded_at >= recording.meta.recorded_at);
        if newer_here {
            done.kept += 1;
            continue;
        }
        // Inside a serve, `local` may be its two tiers: not pushed back.
        match tiered::from_remote(|| local.put(&key, &recording, history, true)) {
            Ok(_) => done.copied += 1,
            Err(error) => {
                tracing::error!(key = %key, %error, "recording not stored locally");
                done.unreadable += 1;
            }
        }
    }
    Ok(done)
}

/// Every checked recording under the prefix, by key.
pub async fn list(remote: &Remote) -> Result<Vec<Recording>, RemoteError> {
    let mut out = Vec::new();
    for key in remote.keys().await? {
        if let Some(recording) = remote.get(&key).await? {
            out.push(recording);
        }
    }
    Ok(out)
}
