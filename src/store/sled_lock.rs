//! Opening sled's database around its file lock: a store held by another
//! process is reported at once, a store this process has just closed is
//! waited for.
//!
//! sled 0.34 releases its file lock from background threads a moment after
//! the last handle drops (spacejam/sled#1234, #1289), so a reopen in the
//! same process can find the lock still held by nobody that is left. This
//! module remembers which stores this process opened and closed, and only
//! for those retries a locked open for a short while. Owns only that; the
//! trees and what they hold belong to the store.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::sync;

/// sled's own text for a store locked by another process; matched to turn
/// its generic I/O error into [`OpenFailure::Locked`]. Matching on text is
/// the exception here, not the rule: sled 0.34 reports a held lock only as
/// an `io::ErrorKind::Other` error with this message (no kind, no type of
/// its own), so the text is its only signal.
const SLED_LOCK_MESSAGE: &str = "could not acquire lock";

/// How long [`open_db`] waits for a store this process has just closed.
const RELEASE_WAIT: Duration = Duration::from_secs(3);
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// Stores this process has opened, by canonical path. A live mark means a
/// handle is still open here (a second open is truly locked); a dead one
/// means it was closed and sled may still be letting go of the lock.
static OPENED_HERE: Mutex<Vec<(PathBuf, Weak<OpenMark>)>> = Mutex::new(Vec::new());

/// Held by every clone of a store; dropped with the last one.
#[derive(Debug)]
pub(super) struct OpenMark;

/// Why sled's database did not open.
#[derive(Debug)]
pub(super) enum OpenFailure {
    /// Another process (or a live handle here) holds the lock.
    Locked,
    /// Anything else.
    Sled(sled::Error),
}

/// Opens the database at `path` with a page cache of `cache_bytes`; the
/// mark lives as long as the store that holds it.
pub(super) fn open_db(
    path: &Path,
    cache_bytes: u64,
) -> Result<(sled::Db, Arc<OpenMark>), OpenFailure> {
    let open = || {
        sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(classify)
    };
    let deadline = Instant::now() + RELEASE_WAIT;
    let db = loop {
        match open() {
            Err(OpenFailure::Locked) if Instant::now() < deadline && closed_here(path) => {
                std::thread::sleep(RELEASE_POLL);
            }
            result => break result?,
        }
    };
    let mark = Arc::new(OpenMark);
    mark_open(path, &mark);
    Ok((db, mark))
}

fn classify(source: sled::Error) -> OpenFailure {
    match &source {
        sled::Error::Io(e)
            if e.kind() == io::ErrorKind::Other && e.to_string().contains(SLED_LOCK_MESSAGE) =>
        {
            OpenFailure::Locked
        }
        _ => OpenFailure::Sled(source),
    }
}

/// Whether this process had the store at `path` open and has closed it.
fn closed_here(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let opened = sync::lock(&OPENED_HERE);
    opened
        .iter()
        .any(|(p, mark)| *p == path && mark.strong_count() == 0)
}

/// Records that this process holds the store at `path` until `mark` drops.
fn mark_open(path: &Path, mark: &Arc<OpenMark>) {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut opened = sync::lock(&OPENED_HERE);
    opened.retain(|(p, _)| *p != path);
    opened.push((path, Arc::downgrade(mark)));
}
