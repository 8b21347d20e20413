//! The dispatcher: turns a parsed command line into a command's options,
//! loads the config, opens the store or fixtures folder the command needs,
//! and runs it against stdout.
//!
//! The commands on recordings ([`Job`]) run here on the store they open,
//! or, when a running `serve` holds the store, in that server: they are
//! sent through the `serve.json` it publishes ([`crate::remote`]), and
//! what the server printed is written out here as it is, with the same
//! exit code. `serve` opens that endpoint and publishes the file.
//!
//! The only module that knows both [`crate::cli`] (clap types) and
//! [`crate::cmd`] (plain options); the conversions between them are at the
//! bottom. Failures are [`CommandError`]s, whose exit codes `main` applies.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{
    AuditArgs, Cli, Command, ExplainArgs, FilterArgs, KeyCommand, ModeArg, ProbeArgs, PruneArgs,
    RmArgs, ShowArgs, VerifyArgs,
};
use crate::cmd::job::{self, Job, Opens, JOB_VERSION};
use crate::cmd::paint::Terminal;
use crate::cmd::{
    audit, explain, filter, import, lint, ls, probe, prune, rekey, rm, show, stats, verify,
};
use crate::config::{Config, Mode, Overrides};
use crate::error::CommandError;
use crate::remote::{Published, RemoteError, ServeFile};
use crate::serve::admin::{Commands, Reply};
use crate::serve::server::{shutdown_signal, Server, StartError};
use crate::store::remote_sync;
use crate::store::{FixtureDir, SledStore, StoreError, Tier};

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
            overrides.anthropic_upstream = args.anthropic_upstream;
            overrides.mode = args.mode.map(Into::into);
            overrides.remote = args.remote;
            let config = Config::load(&overrides)?;
            let shutdown = shutdown_signal()?;
            let server = Server::bind(config.clone()).await?;
            let published = open_commands(&server, &config)?;
            // The ready line is the contract with scripts and tests: stdout,
            // one line, flushed before the first request can be served
            // (and once serve.json is in place).
            println!("{}", server.ready_line());
            std::io::stdout().flush()?;
            // serve.json goes at the signal, before the drain and while the
            // store is still held: a command never finds the store free and
            // the file still there, which would mean a stale file.
            let shutdown = async move {
                shutdown.await;
                drop(published);
            };
            server.run(shutdown).await;
            Ok(())
        }
        Command::Ls(args) if args.remote => {
            overrides.remote = std::env::var("LLMTAPE_REMOTE").ok();
            let config = Config::load(&overrides)?;
            ls_remote(&config, args.json, &mut stdout()).await
        }
        // Through the running serve when it holds the store, like the
        // other commands on recordings.
        Command::Push(args) => {
            overrides.remote = args.remote;
            let config = Config::load(&overrides)?;
            let remote = remote_config(&config)?;
            on_recordings(&config, Job::Push { remote }).await
        }
        Command::Pull(args) => {
            overrides.remote = args.remote;
            let config = Config::load(&overrides)?;
            let remote = remote_config(&config)?;
            on_recordings(&config, Job::Pull { remote }).await
        }
        Command::Ls(args) => {
            let config = Config::load(&overrides)?;
            on_recordings(
                &config,
                Job::Ls(ls::Options {
                    json: args.json,
                    routes: config.routes.clone(),
                }),
            )
            .await
        }
        Command::Show(args) => {
            let config = Config::load(&overrides)?;
            on_recordings(&config, Job::Show(args.into())).await
        }
        Command::Export(args) => {
            let config = Config::load(&overrides)?;
            let job = Job::Export {
                out: args.out,
                filter: args.filter.into(),
            };
            on_recordings(&config, job).await
        }
        Command::Import(args) => {
            let config = Config::load(&overrides)?;
            import::check_folder(&args.dir)?;
            on_recordings(&config, Job::Import { dir: args.dir }).await
        }
        Command::Rm(args) => {
            let config = Config::load(&overrides)?;
            on_recordings(&config, Job::Rm(args.into())).await
        }
        Command::Prune(args) => {
            let config = Config::load(&overrides)?;
            on_recordings(&config, Job::Prune(args.into())).await
        }
        Command::Rekey(args) => {
            let config = Config::load(&overrides)?;
            let options = rekey::Options {
                dry_run: args.dry_run,
            };
            on_recordings(&config, Job::Rekey(options)).await
        }
        Command::Lint(args) => lint::run(&args.dir, &mut stdout()),
        Command::Audit(args) => {
            let config = Config::load(&overrides)?;
            on_recordings(&config, Job::Audit(args.into())).await
        }
        Command::Stats(args) => {
            let config = Config::load(&overrides)?;
            let options = stats::Options {
                json: args.json,
                live: None,
            };
            on_recordings(&config, Job::Stats(options)).await
        }
        Command::Verify(args) => {
            overrides.upstream.clone_from(&args.upstream);
            let config = Config::load(&overrides)?;
            on_recordings(&config, Job::Verify(args.into())).await
        }
        Command::Probe(args) => {
            overrides.upstream.clone_from(&args.upstream);
            let config = Config::load(&overrides)?;
            let body = read_stdin()?;
            probe::run(&config, &args.into(), body, &mut stdout()).await
        }
        // Reads no recording, so it never needs the store (or a server).
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

/// The shared store `config` names; a usage error when none is
/// configured.
fn remote_config(config: &Config) -> Result<crate::config::RemoteConfig, CommandError> {
    config.remote.clone().ok_or_else(|| {
        CommandError::Usage(
            "no shared store configured; pass --remote redis://HOST:6379, set LLMTAPE_REMOTE, or set remote.url in proxy.toml".into(),
        )
    })
}

/// `ls --remote`: the recordings in Redis, one line each (key prefix,
/// time, status, method and path, model), or a JSON array.
async fn ls_remote(config: &Config, json: bool, out: &mut impl Write) -> Result<(), CommandError> {
    let remote = crate::cmd::share::open(&remote_config(config)?).await?;
    let recordings = remote_sync::list(&remote)
        .await
        .map_err(|source| StartError::Remote { source })?;
    if json {
        let rows: Vec<_> = recordings
            .iter()
            .map(|r| {
                serde_json::json!({
                    "key": r.key().to_hex(),
                    "recorded_at": r.meta.recorded_at,
                    "status": r.meta.response.status,
                    "method": r.meta.request.method,
                    "path": r.meta.request.path,
                    "model": r.meta.model,
                    "bytes": r.body.len(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    for r in &recordings {
        writeln!(
            out,
            "{}  {}  {}  {} {}  {}  {}B",
            &r.key().to_hex()[..12],
            r.meta.recorded_at,
            r.meta.response.status,
            r.meta.request.method,
            r.meta.request.path,
            r.meta.model.as_deref().unwrap_or("-"),
            r.body.len()
        )?;
    }
    Ok(())
}

/// The request body `probe` and `key explain` read.
fn read_stdin() -> Result<Vec<u8>, CommandError> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

/// Runs a job on the recordings it opens, or through the running `serve`
/// that holds the store.
async fn on_recordings(config: &Config, job: Job) -> Result<(), CommandError> {
    let terminal = Terminal::detect();
    match open(config, job.opens()) {
        Ok(tier) => run_here(config, tier.as_ref(), &job, &terminal).await,
        Err(CommandError::Store(StoreError::Locked { path })) => {
            through_server(config, &path, job, terminal).await
        }
        Err(error) => Err(error),
    }
}

/// Opens what `opens` names. A store opened here is held by no `serve`,
/// so a `serve.json` found in it is stale, and said so.
fn open(config: &Config, opens: Opens) -> Result<Box<dyn Tier>, CommandError> {
    let path = &config.store.path;
    let store = match (opens, &config.store.fixtures) {
        (Opens::Recordings, Some(dir)) => return Ok(Box::new(FixtureDir::load(dir)?)),
        (Opens::Recordings | Opens::Store, _) => SledStore::open_existing(path)?,
        (Opens::NewStore, _) => SledStore::open(path)?,
    };
    if let Some(file) = ServeFile::read(path)? {
        return Err(RemoteError::Stale {
            path: ServeFile::path(path),
            admin: file.admin,
            pid: file.pid,
        }
        .into());
    }
    Ok(Box::new(store))
}

async fn run_here(
    config: &Config,
    tier: &dyn Tier,
    job: &Job,
    terminal: &Terminal,
) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    job::run(
        job,
        tier,
        config,
        terminal,
        None,
        &mut out,
        &mut std::io::stderr(),
    )
    .await
}

/// Sends the job to the `serve` that holds `store`, as its `serve.json`
/// says, and writes out what it printed. A server that does not answer
/// may have just stopped: if the store is free now, the job runs here.
async fn through_server(
    config: &Config,
    store: &Path,
    job: Job,
    terminal: Terminal,
) -> Result<(), CommandError> {
    let Some(file) = ServeFile::read(store)? else {
        // Held by something that publishes nothing: an older serve, or
        // another command at work.
        return Err(StoreError::Locked {
            path: store.to_path_buf(),
        }
        .into());
    };
    let request = job::Request {
        llmtape_job: JOB_VERSION,
        job,
        terminal,
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        location: store.to_path_buf(),
    };
    let body = serde_json::to_vec(&request).expect("a job always serialises");
    match file.send(&ServeFile::path(store), body).await {
        Ok(reply) => relay(reply),
        Err(no_answer @ RemoteError::NoAnswer { .. }) => match open(config, request.job.opens()) {
            Ok(tier) => run_here(config, tier.as_ref(), &request.job, &terminal).await,
            Err(CommandError::Store(StoreError::Locked { .. })) => Err(no_answer.into()),
            Err(error) => Err(error),
        },
        Err(error) => Err(error.into()),
    }
}

/// Writes what the server's run of a command printed, and ends as it
/// ended.
fn relay(reply: Reply) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    out.write_all(reply.stdout.as_bytes())?;
    out.flush()?;
    std::io::stderr().write_all(reply.stderr.as_bytes())?;
    match (reply.exit_code, reply.error) {
        (0, None) => Ok(()),
        (code, message) => Err(CommandError::Relayed {
            message: message.unwrap_or_else(|| {
                format!("the command failed in the running llmtape serve (exit code {code})")
            }),
            code,
        }),
    }
}

/// Opens the server's command endpoint and publishes `serve.json` for it;
/// the file goes when the returned guard drops. Only for a store: a
/// fixtures folder is not locked (commands open it themselves), and a
/// JSON file in it would be read as a fixture.
fn open_commands(server: &Server, config: &Config) -> Result<Option<Published>, CommandError> {
    if config.store.fixtures.is_some() {
        return Ok(None);
    }
    let store = &config.store.path;
    let file =
        ServeFile::new(server.local_addr(), config.server.tls.is_some()).map_err(|source| {
            RemoteError::Publish {
                path: ServeFile::path(store),
                source,
            }
        })?;
    if ServeFile::path(store).exists() {
        tracing::warn!(path = %ServeFile::path(store).display(), "replacing a serve.json left by a serve that did not stop cleanly");
    }
    let runner = Arc::new(job::Runner::new(config.clone()));
    server
        .proxy()
        .accept_commands(Commands::new(file.token.clone(), runner));
    Ok(Some(file.publish(store)?))
}

impl From<RmArgs> for rm::Options {
    fn from(args: RmArgs) -> rm::Options {
        rm::Options {
            key_prefixes: args.key_prefixes,
        }
    }
}

impl From<PruneArgs> for prune::Options {
    fn from(args: PruneArgs) -> prune::Options {
        prune::Options {
            older_than: args.older_than,
            filter: args.filter.into(),
            dry_run: args.dry_run,
        }
    }
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
            html: args.html,
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
