//! The command line, as clap derive types. No logic lives here: the
//! dispatcher ([`crate::app`]) turns these into each command's options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Log format on stderr (the level comes from LLMTAPE_LOG, e.g. "llmtape=debug").
    #[arg(
        long,
        global = true,
        env = "LLMTAPE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
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
    /// Write the store's recordings as fixture files (one pretty JSON file each).
    Export(ExportArgs),
    /// Load fixture files into the store.
    Import(ImportArgs),
    /// Delete recordings (history too) by key prefix; nothing is deleted if any prefix is unknown or ambiguous.
    Rm(RmArgs),
    /// Delete the recordings that match every filter given (at least one).
    Prune(PruneArgs),
    /// Recompute every recording's key under the current key rules (presets, ignore_fields); recordings whose keys meet merge.
    Rekey(RekeyArgs),
    /// Check fixture files: valid, and free of anything that looks like a credential.
    Lint(LintArgs),
    /// Request keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Keys whose fingerprint (system_fingerprint, else model) changed, and what changed with it.
    Audit(AuditArgs),
    /// Re-send recorded requests upstream and report which answers drifted.
    Verify(VerifyArgs),
    /// Send one request N times and measure how non-deterministic the upstream is.
    Probe(ProbeArgs),
    /// Copy the local store (or --fixtures DIR) into the shared Redis store, never over a newer recording.
    Push(RemoteArgs),
    /// Copy the shared Redis store into the local store, never over a newer recording.
    Pull(RemoteArgs),
    /// Hits, misses, tokens and cost saved per model (live from a running serve; offline, what the store holds).
    Stats(StatsArgs),
}

/// `llmtape push`, `llmtape pull`
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The shared Redis store, e.g. redis://127.0.0.1:6379 [default: remote.url].
    #[arg(long, env = "LLMTAPE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
}

/// `llmtape audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Print JSON (schema in the README) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only flips recorded at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only this model.
    #[arg(long)]
    pub model: Option<String>,
}

/// `llmtape stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON (schema in the README) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `llmtape verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Re-send only N recordings, picked at random.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Which recordings.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Logprob changes up to this size (absolute, natural log) do not count as drift.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub logprob_tolerance: f64,
    /// Store the new answers as re-recordings (the old ones go to history).
    #[arg(long)]
    pub update: bool,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Upstream base URL [default: upstream.url, else https://api.openai.com].
    #[arg(long, env = "LLMTAPE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
}

/// `llmtape probe`
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// How many times to send the request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub n: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// First-token logprobs closer than this are one cluster.
    #[arg(long, default_value_t = 1e-6, value_name = "X")]
    pub tolerance: f64,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub path: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (tables and the logprob chart; opens offline).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Upstream base URL [default: upstream.url, else https://api.openai.com].
    #[arg(long, env = "LLMTAPE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
}

/// `llmtape export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Folder to write into; files go to <route>/<model>/<first 16 hex of key>.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Which recordings.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Which recordings a command works on (`export`, `verify`, `prune`).
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only recordings made with this x-llmtape-namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this route, by name (chat.completions, completions, embeddings, responses, moderations, models) or path.
    #[arg(long)]
    pub route: Option<String>,
    /// Only this model.
    #[arg(long)]
    pub model: Option<String>,
}

/// `llmtape rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Starts of keys, as `ls` prints them (each must match one recording).
    #[arg(required = true, value_name = "KEY_PREFIX")]
    pub key_prefixes: Vec<String>,
}

/// `llmtape prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only recordings made longer ago than this (e.g. 30d, 12h, 90m).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Which recordings.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// List what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `llmtape rekey`
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Report which keys would change and merge, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `llmtape import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folder of fixture files (searched recursively for *.json).
    pub dir: PathBuf,
}

/// `llmtape lint`
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Folder of fixture files (searched recursively for *.json).
    pub dir: PathBuf,
}

/// `llmtape key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the canonical form and key of a request body read from stdin.
    Explain(ExplainArgs),
}

/// `llmtape key explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub path: String,
    /// Query string, without `?` (e.g. api-version=2024-06-01).
    #[arg(long, default_value = "")]
    pub query: String,
    /// The x-llmtape-namespace header.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Content type of the body (only multipart bodies need it).
    #[arg(long)]
    pub content_type: Option<String>,
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
    /// Upstream of Anthropic requests (/v1/messages, or any with anthropic-version) [default: https://api.anthropic.com].
    #[arg(long, env = "LLMTAPE_ANTHROPIC_UPSTREAM", value_name = "URL")]
    pub anthropic_upstream: Option<String>,
    /// Default mode for requests without an x-llmtape-mode header [default: auto].
    #[arg(long, env = "LLMTAPE_MODE", value_enum)]
    pub mode: Option<ModeArg>,
    /// A Redis store shared by several proxies, e.g. redis://127.0.0.1:6379 (remote.url).
    #[arg(long, env = "LLMTAPE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
}

/// `llmtape ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
    /// List the shared Redis store (remote.url, or LLMTAPE_REMOTE) instead of the local one.
    #[arg(long)]
    pub remote: bool,
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
