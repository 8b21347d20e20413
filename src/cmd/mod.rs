//! The commands: each reads or changes recordings (or asks the upstream)
//! and prints a report. One file per command (`share` is push and pull), plus the pieces two commands
//! share (`listing`, `paint`, `filter`, `transfer`), and [`job`], the
//! commands on recordings as one value, run offline or by a running
//! `serve`.
//!
//! A command takes a plain options struct and a writer, and fails with
//! [`crate::error::CommandError`]. It knows nothing of clap ([`crate::cli`])
//! or of the dispatcher ([`crate::app`]) that loads the config, opens the
//! recordings and picks stdout; so each report can be rendered into a
//! `Vec<u8>` in a unit test.

pub(crate) mod audit;
pub(crate) mod explain;
pub mod export;
pub(crate) mod filter;
pub(crate) mod import;
pub mod job;
pub(crate) mod lint;
pub(crate) mod listing;
pub(crate) mod ls;
pub(crate) mod paint;
pub(crate) mod probe;
pub(crate) mod prune;
pub(crate) mod rekey;
pub(crate) mod rm;
pub(crate) mod share;
pub(crate) mod show;
pub(crate) mod stats;
pub(crate) mod transfer;
pub(crate) mod verify;

use std::io::Write;

/// Writes `value` as pretty JSON and a final newline: the shape of every
/// `--json` report.
pub fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}
