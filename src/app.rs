//! The dispatcher: turns a parsed command line into a command's options,
//! loads the config, opens the store or fixtures folder the command needs,
//! and runs it against stdout.
//!
//! The only module that knows both [`crate::cli`] (clap types) and
//! [`crate::cmd`] (plain options); the conversions between them are at the
//! bottom. Failures are [`CommandError`]s, whose exit codes `main` applies.

use std::io::{Read, Write};

use crate::cli::{
    AuditArgs, Cli, Command, ExplainArgs, FilterArgs, KeyCommand, ModeArg, ProbeArgs, ShowArgs,
    VerifyArgs,
};
use crate::cmd::listing::Listing;
use crate::cmd::paint::Terminal;
use crate::cmd::{audit, explain, export, filter, import, lint, ls, probe, show, verify};
use crate::config::{Config, Mode, Overrides};
use crate::error::CommandError;
use crate::serve::server::{shutdown_signal, Server};
use crate::store::FixtureDir;
use crate::store::{SledStore, Tier};

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<(), CommandError> {
    let mut overrides = Overrides {
        config: cli.global.config.clone(),
        store: cli.global.store.clone(),
        fixtures: cli.global.fixtures.clone(),
        ..Overrides::default()
    };
    // Each arm locks stdout itself: `serve` must not hold the lock while
    // its tasks run on other threads.
    let stdout = || std::io::stdout().lock();
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
            std::io::stdout().flush()?;
            server.run(shutdown).await;
            Ok(())
        }
        Command::Ls(args) => {
            let config = Config::load(&overrides)?;
            let listing = open_listing(&config, false)?;
            let options = ls::Options {
                json: args.json,
                routes: config.routes.clone(),
            };
            ls::run(&listing, &options, &Terminal::detect(), &mut stdout())
        }
        Command::Show(args) => {
            let config = Config::load(&overrides)?;
            let listing = open_listing(&config, true)?;
            show::run(&listing, &args.into(), &mut stdout())
        }
        Command::Export(args) => {
            let config = Config::load(&overrides)?;
            let store = SledStore::open_existing(&config.store.path)?;
            let summary = export::export(&store, &args.out, &args.filter.into())?;
            summary.report("exported", &args.out, &mut stdout(), &mut std::io::stderr())
        }
        Command::Import(args) => {
            let config = Config::load(&overrides)?;
            import::check_folder(&args.dir)?;
            let store = SledStore::open(&config.store.path)?;
            let summary = import::import(&store, &args.dir)?;
            summary.report("imported", &args.dir, &mut stdout(), &mut std::io::stderr())
        }
        Command::Lint(args) => lint::run(&args.dir, &mut stdout()),
        Command::Audit(args) => {
            let config = Config::load(&overrides)?;
            let listing = open_listing(&config, true)?;
            audit::run(&listing, &args.into(), &Terminal::detect(), &mut stdout())
        }
        Command::Verify(args) => {
            overrides.upstream.clone_from(&args.upstream);
            let config = Config::load(&overrides)?;
            let recordings = open_recordings(&config)?;
            let options = verify::Options::from(args);
            let all_same = verify::run(
                &config,
                recordings.as_ref(),
                &options,
                &Terminal::detect(),
                &mut stdout(),
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
            overrides.upstream.clone_from(&args.upstream);
            let config = Config::load(&overrides)?;
            let body = read_stdin()?;
            probe::run(&config, &args.into(), body, &mut stdout()).await
        }
        Command::Key(KeyCommand::Explain(args)) => {
            let config = Config::load(&overrides)?;
            let body = read_stdin()?;
            explain::run(
                &args.into(),
                &config.key,
                &config.routes,
                &body,
                &mut stdout(),
            )
        }
    }
}

/// The request body `probe` and `key explain` read.
fn read_stdin() -> Result<Vec<u8>, CommandError> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

/// The recordings a command works on, writable: the fixtures folder if one
/// is given, otherwise the (existing) store.
fn open_recordings(config: &Config) -> Result<Box<dyn Tier>, CommandError> {
    Ok(match &config.store.fixtures {
        Some(dir) => Box::new(FixtureDir::load(dir)?),
        None => Box::new(SledStore::open_existing(&config.store.path)?),
    })
}

/// Recordings for `ls`, `show` and `audit`: the fixtures folder if one is
/// given, otherwise the store.
fn open_listing(config: &Config, with_history: bool) -> Result<Listing, CommandError> {
    Ok(match &config.store.fixtures {
        Some(dir) => Listing::from_tier(&FixtureDir::load(dir)?, with_history)?,
        None => Listing::from_tier(&SledStore::open_existing(&config.store.path)?, with_history)?,
    })
}

impl From<FilterArgs> for filter::Filter {
    fn from(args: FilterArgs) -> filter::Filter {
        filter::Filter {
            namespace: args.namespace,
            route: args.route,
            model: args.model,
        }
    }
}

impl From<ShowArgs> for show::Options {
    fn from(args: ShowArgs) -> show::Options {
        show::Options {
            key_prefix: args.key_prefix,
            json: args.json,
        }
    }
}

impl From<AuditArgs> for audit::Options {
    fn from(args: AuditArgs) -> audit::Options {
        audit::Options {
            json: args.json,
            since: args.since,
            model: args.model,
        }
    }
}

impl From<VerifyArgs> for verify::Options {
    fn from(args: VerifyArgs) -> verify::Options {
        verify::Options {
            sample: args.sample,
            filter: args.filter.into(),
            logprob_tolerance: args.logprob_tolerance,
            update: args.update,
            concurrency: usize::from(args.concurrency),
            json: args.json,
        }
    }
}

impl From<ProbeArgs> for probe::Options {
    fn from(args: ProbeArgs) -> probe::Options {
        probe::Options {
            n: args.n,
            concurrency: usize::from(args.concurrency),
            tolerance: args.tolerance,
            method: args.method,
            path: args.path,
            json: args.json,
        }
    }
}

impl From<ExplainArgs> for explain::Options {
    fn from(args: ExplainArgs) -> explain::Options {
        explain::Options {
            method: args.method,
            path: args.path,
            query: args.query,
            namespace: args.namespace,
            content_type: args.content_type,
        }
    }
}

impl From<ModeArg> for Mode {
    fn from(arg: ModeArg) -> Mode {
        match arg {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Record => Mode::Record,
            ModeArg::Replay => Mode::Replay,
            ModeArg::Passthrough => Mode::Passthrough,
        }
    }
}
