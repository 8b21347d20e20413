//! Runs a parsed command line: builds the config, dispatches the command,
//! and says which exit code each failure deserves.

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError, Overrides};
use crate::inspect;
use crate::server::{shutdown_signal, Server, StartError};
use crate::store::{Store, StoreError};

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
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CommandError {
    /// 2 for problems with configuration, store or start-up (the user must
    /// fix something before trying again); 1 when the command ran but found
    /// nothing.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Config(_) | CommandError::Store(_) | CommandError::Start(_) => {
                ExitCode::from(2)
            }
            CommandError::NotFound(_) | CommandError::Output(_) => ExitCode::from(1),
        }
    }
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<(), CommandError> {
    let mut overrides = Overrides {
        config: cli.global.config.clone(),
        store: cli.global.store.clone(),
        fixtures: cli.global.fixtures.clone(),
        ..Overrides::default()
    };
    match cli.command {
        Command::Serve(args) => {
            overrides.listen = args.listen;
            overrides.upstream = args.upstream;
            overrides.mode = args.mode.map(Into::into);
            let config = Config::load(&overrides)?;
            let shutdown = shutdown_signal()?;
            let server = Server::bind(config).await?;
            // The ready line is the contract with scripts and tests: stdout,
            // one line, flushed before the first request can be served.
            println!("{}", server.ready_line());
            use std::io::Write;
            std::io::stdout().flush()?;
            server.run(shutdown).await;
            Ok(())
        }
        Command::Ls(args) => {
            let config = Config::load(&overrides)?;
            let store = Store::open_existing(&config.store.path)?;
            inspect::ls(&store, args.json, &mut std::io::stdout().lock())
        }
        Command::Show(args) => {
            let config = Config::load(&overrides)?;
            let store = Store::open_existing(&config.store.path)?;
            inspect::show(
                &store,
                &args.key_prefix,
                args.json,
                &mut std::io::stdout().lock(),
            )
        }
    }
}
