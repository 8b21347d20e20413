//! The command line, as clap derive types. No logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Mode;

/// A record-and-replay caching reverse proxy for OpenAI-compatible APIs.
///
/// Point OPENAI_BASE_URL at `llmtape serve` (e.g. http://127.0.0.1:8080/v1):
/// the first call of each distinct request goes upstream and is recorded;
/// every repeat is replayed from the store, byte for byte.
#[derive(Debug, Parser)]
#[command(name = "llmtape", version, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file (default: ./proxy.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "LLMTAPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store directory (default: store.path, i.e. .llmtape/store).
    #[arg(long, global = true, env = "LLMTAPE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Fixtures folder to serve from instead of the store.
    #[arg(long, global = true, env = "LLMTAPE_FIXTURES", value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// List recordings, one line each: key prefix, time, status, route, model, fingerprint, size.
    Ls(LsArgs),
    /// Show one recording whole: request, response headers and body, fingerprint, history.
    Show(ShowArgs),
}

/// `llmtape serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, env = "LLMTAPE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Upstream base URL [default: https://api.openai.com].
    #[arg(long, env = "LLMTAPE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Default mode for requests without an x-llmtape-mode header [default: auto].
    #[arg(long, env = "LLMTAPE_MODE", value_enum)]
    pub mode: Option<ModeArg>,
}

/// `llmtape ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `llmtape show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The start of a key, as `ls` prints it (any length; must match one recording).
    pub key_prefix: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Replay hits; forward and record misses.
    Auto,
    /// Always forward and re-record (the old recording goes to history).
    Record,
    /// Replay hits; a miss is a 404 error and never reaches the upstream.
    Replay,
    /// Forward everything, record nothing.
    Passthrough,
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
