//! Runs a parsed command line: builds the config, dispatches the command,
//! and says which exit code each failure deserves.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{Cli, Command, KeyCommand};
use crate::cmd::export::{self, Filter, Summary, TransferError};
use crate::cmd::inspect::{self, Listing};
use crate::cmd::lint;
use crate::cmd::probe;
use crate::cmd::verify;
use crate::config::{Config, ConfigError, Overrides, Scope};
use crate::key::{Canonical, KeyRules, RequestParts};
use crate::serve::server::{shutdown_signal, Server, StartError};
use crate::store::fixtures::{self, FixtureError};
use crate::store::{FixtureDir, Tier, TierError};
use crate::store::{SledStore, StoreError};

/// A command that could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A recording tier failed.
    #[error(transparent)]
    Tier(#[from] TierError),
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
    /// An export or import could not run.
    #[error(transparent)]
    Transfer(#[from] TransferError),
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
            CommandError::Config(_)
            | CommandError::Store(_)
            | CommandError::Tier(_)
            | CommandError::Start(_)
            | CommandError::Fixture(_)
            | CommandError::Transfer(_)
            | CommandError::Usage(_) => ExitCode::from(2),
            CommandError::NotFound(_) | CommandError::Incomplete(_) | CommandError::Output(_) => {
                ExitCode::from(1)
            }
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
            let listing = listing(&config, false)?;
            inspect::ls(&listing, args.json, &mut std::io::stdout().lock())
        }
        Command::Show(args) => {
            let config = Config::load(&overrides)?;
            let listing = listing(&config, true)?;
            inspect::show(
                &listing,
                &args.key_prefix,
                args.json,
                &mut std::io::stdout().lock(),
            )
        }
        Command::Export(args) => {
            let config = Config::load(&overrides)?;
            let store = SledStore::open_existing(&config.store.path)?;
            let filter = Filter::from(&args.filter);
            let summary = export::export(&store, &args.out, &filter)?;
            report(&summary, "exported", &args.out)
        }
        Command::Import(args) => {
            let config = Config::load(&overrides)?;
            if !args.dir.is_dir() {
                return Err(CommandError::NotFound(format!(
                    "{} is not a folder of fixtures",
                    args.dir.display()
                )));
            }
            let store = SledStore::open(&config.store.path)?;
            let summary = export::import(&store, &args.dir)?;
            report(&summary, "imported", &args.dir)
        }
        Command::Lint(args) => lint(&args.dir),
        Command::Audit(args) => {
            let config = Config::load(&overrides)?;
            let listing = listing(&config, true)?;
            inspect::audit(&listing, &args, &mut std::io::stdout().lock())
        }
        Command::Verify(args) => {
            let config = Config::load(&overrides)?;
            let recordings = open_recordings(&config)?;
            let all_same = verify::run(
                &config,
                recordings.as_ref(),
                &args,
                &mut std::io::stdout().lock(),
            )
            .await?;
            recordings.flush()?;
            if all_same {
                Ok(())
            } else {
                Err(CommandError::Incomplete(
                    "some answers differ from their recordings".into(),
                ))
            }
        }
        Command::Probe(args) => {
            let config = Config::load(&overrides)?;
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            probe::run(&config, &args, body, &mut std::io::stdout().lock()).await
        }
        Command::Key(KeyCommand::Explain(args)) => {
            let config = Config::load(&overrides)?;
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            let rules = KeyRules {
                ignore_fields: config.key.ignore_fields.clone(),
                per_credential: false,
            };
            let canonical = Canonical::new(
                &RequestParts {
                    method: &args.method,
                    path: &args.path,
                    query: Some(&args.query),
                    content_type: args.content_type.as_deref(),
                    body: &body,
                    namespace: args.namespace.as_deref(),
                    credential: None,
                },
                &rules,
            );
            let note = (config.key.scope == Scope::ApiKey).then_some(
                "key.scope = \"api-key\" mixes a hash of the caller's key into the real key; this one is computed without it",
            );
            inspect::explain(&canonical, note, &mut std::io::stdout().lock())
        }
    }
}

/// The recordings a command works on, writable: the fixtures folder if one
/// is given, otherwise the (existing) store.
fn open_recordings(config: &Config) -> Result<Box<dyn Tier>, CommandError> {
    Ok(match &config.store.fixtures {
        Some(dir) => Box::new(FixtureDir::load(dir)?),
        None => Box::new(SledStore::open_existing(&config.store.path)?),
    })
}

/// Recordings for `ls`/`show`: the fixtures folder if one is given,
/// otherwise the store.
fn listing(config: &Config, with_history: bool) -> Result<Listing, CommandError> {
    match &config.store.fixtures {
        Some(dir) => Ok(Listing::from_fixtures(&FixtureDir::load(dir)?)),
        None => Listing::from_store(&SledStore::open_existing(&config.store.path)?, with_history),
    }
}

/// Prints an export/import summary; skipped recordings make the exit code 1.
fn report(summary: &Summary, verb: &str, place: &Path) -> Result<(), CommandError> {
    println!("{}", summary.line(verb, place));
    for (what, why) in &summary.skipped {
        eprintln!("llmtape: skipped {what}: {why}");
    }
    if summary.skipped.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Incomplete(format!(
            "{} recording(s) skipped",
            summary.skipped.len()
        )))
    }
}

/// `lint DIR`: every problem on its own line, exit 1 if any.
fn lint(dir: &Path) -> Result<(), CommandError> {
    let files = fixtures::fixture_files(dir)?;
    let mut problems = 0usize;
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                problems += 1;
                println!("{}: cannot read: {error}", path.display());
                continue;
            }
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Err(error) => {
                problems += 1;
                println!("{}: not JSON: {error}", path.display());
                continue;
            }
            Ok(value) => {
                for finding in lint::scan(&value) {
                    problems += 1;
                    println!(
                        "{}: {}: looks like {}",
                        path.display(),
                        finding.pointer,
                        finding.what
                    );
                }
            }
        }
        if let Err(error) = fixtures::parse(path, &text)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                fixtures::from_fixture(&file)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
        {
            problems += 1;
            println!("{error}");
        }
    }
    println!(
        "{} fixture file(s) checked, {problems} problem(s)",
        files.len()
    );
    if problems == 0 {
        Ok(())
    } else {
        Err(CommandError::Incomplete(format!(
            "{problems} problem(s) in {}",
            dir.display()
        )))
    }
}
