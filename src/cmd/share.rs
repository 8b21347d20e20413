//! `llmtape push` and `llmtape pull`: whole-store copies between the
//! recordings a command opens (or a running `serve` holds) and the shared
//! store on Redis. The copying itself is `store::remote_sync`.

use std::io::Write;

use crate::config::RemoteConfig;
use crate::error::CommandError;
use crate::serve::server::StartError;
use crate::store::remote::Remote;
use crate::store::{remote_sync, Tier};

/// The shared store `config` names, once it answers a `PING`.
pub async fn open(config: &RemoteConfig) -> Result<Remote, CommandError> {
    let remote = Remote::new(config).map_err(|source| StartError::Remote { source })?;
    remote
        .ping()
        .await
        .map_err(|source| StartError::Remote { source })?;
    Ok(remote)
}

/// Copies every recording of `tier` into Redis, each unless Redis holds a
/// newer one.
pub async fn push(
    tier: &dyn Tier,
    config: &RemoteConfig,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let remote = open(config).await?;
    let done = remote_sync::push_all(tier, &remote)
        .await
        .map_err(|source| StartError::Remote { source })?;
    writeln!(
        out,
        "pushed {} recordings to {} ({} already there or newer, {} unreadable)",
        done.copied,
        remote.url(),
        done.kept,
        done.unreadable
    )?;
    Ok(())
}

/// Copies every recording in Redis into `tier`, each unless `tier` holds
/// a newer one; `history` as for any recording.
pub async fn pull(
    tier: &dyn Tier,
    config: &RemoteConfig,
    history: usize,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let remote = open(config).await?;
    let done = remote_sync::pull_all(tier, &remote, history)
        .await
        .map_err(|source| StartError::Remote { source })?;
    tier.flush()?;
    writeln!(
        out,
        "pulled {} recordings from {} ({} already here or newer, {} unreadable)",
        done.copied,
        remote.url(),
        done.kept,
        done.unreadable
    )?;
    Ok(())
}
