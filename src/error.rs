//! The one error type of the commands, and the exit code each failure
//! deserves.
//!
//! A leaf: it names the errors of the layers the commands stand on
//! (config, store, fixtures, server start-up, the running server's
//! client) and no command module, so
//! every command and the dispatcher in [`crate::app`] can use it without
//! an import cycle. The proxy's own errors (answered as HTTP statuses) are
//! not here.

use std::process::ExitCode;

use crate::config::ConfigError;
use crate::remote::RemoteError;
use crate::serve::server::StartError;
use crate::store::fixtures::FixtureError;
use crate::store::{StoreError, TierError};

/// A command that could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Nothing matched what was asked for.
    #[error("{0}")]
    NotFound(String),
    /// A flag's value is unusable.
    #[error("{0}")]
    Usage(String),
    /// The command ran but some of its work failed (listed above it).
    #[error("{0}")]
    Incomplete(String),
    /// Fixture files could not be read or written.
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The command could not go through the running `serve` that holds
    /// the store.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The running `serve` ran the command, and it failed there: its
    /// message and exit code, as they would have been here.
    #[error("{message}")]
    Relayed {
        /// The error's one-line message.
        message: String,
        /// Its exit code.
        code: u8,
    },
}

impl From<TierError> for CommandError {
    /// Either tier's failure keeps its own variant, so the message and the
    /// exit code are the same whichever tier a command spoke to.
    fn from(error: TierError) -> CommandError {
        match error {
            TierError::Store(error) => CommandError::Store(error),
            TierError::Fixtures(error) => CommandError::Fixture(error),
        }
    }
}

impl CommandError {
    /// 2 for problems with configuration, store or start-up (the user must
    /// fix something before trying again); 1 when the command ran but found
    /// nothing.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The exit code as a number (what [`CommandError::exit_code`] wraps;
    /// `ExitCode` cannot be compared, nor sent by a running `serve`).
    pub fn code(&self) -> u8 {
        // No `_ =>` arm: a new variant must choose its code.
        match self {
            CommandError::Config(_)
            | CommandError::Store(_)
            | CommandError::Start(_)
            | CommandError::Fixture(_)
            | CommandError::Usage(_)
            | CommandError::Remote(_) => 2,
            CommandError::NotFound(_) | CommandError::Incomplete(_) | CommandError::Output(_) => 1,
            CommandError::Relayed { code, .. } => *code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn problems_to_fix_exit_2_and_incomplete_work_exits_1() {
        let fixture = || FixtureError::Invalid {
            path: PathBuf::from("a.json"),
            message: "bad".into(),
        };
        assert_eq!(CommandError::Usage("x".into()).code(), 2);
        assert_eq!(CommandError::Fixture(fixture()).code(), 2);
        assert_eq!(CommandError::NotFound("x".into()).code(), 1);
        assert_eq!(CommandError::Incomplete("x".into()).code(), 1);
        assert_eq!(CommandError::from(std::io::Error::other("pipe")).code(), 1);
        let relayed = CommandError::Relayed {
            message: "no recording has a key starting with ef in s".into(),
            code: 1,
        };
        assert_eq!(relayed.code(), 1);
        assert_eq!(
            relayed.to_string(),
            "no recording has a key starting with ef in s"
        );
        let folded = CommandError::from(TierError::Fixtures(fixture()));
        assert!(matches!(folded, CommandError::Fixture(_)));
        assert_eq!(folded.to_string(), "a.json: bad");
    }
}
