//! Configuration: `proxy.toml` plus command-line and environment overrides.
//!
//! Two stages, as the contract asks. [`RawConfig`] mirrors the TOML file with
//! every field optional; [`Config`] holds validated types (`SocketAddr`,
//! `Uri`, `Duration`, [`Mode`]). Every problem found is reported at once, in
//! one line, naming the key and the fix. This module does not read flags or
//! the environment itself: the CLI hands it an [`Overrides`] value, which
//! keeps precedence (flag > environment > file > defaults) in one place and
//! lets tests build configs from strings.
//!
//! This file holds the validated types and the second stage
//! ([`Config::from_raw`]); `raw` the first (the serde types, known and
//! renamed keys); `choices` the few-word settings; `error` [`ConfigError`].

mod choices;
mod error;
mod prices;
mod raw;
mod remote;
mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};

use crate::key::{KeyRules, Preset, Repeats, DEFAULT_PRESETS};
use crate::route::Routes;

pub use choices::{Mode, Scope, Timing};
pub use error::ConfigError;
pub use prices::{Price, Prices};
pub use raw::{RawConfig, RawKey, RawRedact, RawReplay, RawServer, RawStore, RawUpstream};
pub use remote::{redact_url, Access, OnUnavailable, RawRemote, RemoteConfig};
pub use routes::RawRoutes;

use raw::parse_raw;

/// Default listen address: loopback only, so a fresh start exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default upstream: the OpenAI API.
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com";
/// Default upstream of Anthropic requests (`route::Dialect::Anthropic`).
pub const DEFAULT_ANTHROPIC_UPSTREAM: &str = "https://api.anthropic.com";
/// Default store directory, relative to the working directory.
pub const DEFAULT_STORE: &str = ".llmtape/store";
/// 32 MiB: larger than any chat request with inline images we have seen,
/// small enough that a runaway client cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Time to open a TCP (and TLS) connection to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the upstream's response headers; long completions take minutes.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest gap between two chunks of an upstream body.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight requests before giving up on them.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Earlier recordings kept per key.
pub const DEFAULT_HISTORY: usize = 20;
/// Requests handled at once before answering 503: far above what one
/// machine's test suites send, low enough to bound memory under a flood.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Largest request head (request line and headers); hyper's default is
/// ~400 KiB, far more than any API client sends.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest response recorded (plain or stream); larger ones are forwarded
/// but not recorded. A 128k-token completion is a few MiB.
pub const DEFAULT_MAX_RECORDED_BYTES: usize = 64 * 1024 * 1024;
/// Time for a request head (request line and headers) to arrive, from the
/// first byte (or from the start of a connection): a client sends its head
/// in one go, so only a stalled or hostile one takes this long.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause while a request body is read: generous for a large upload
/// on a slow link, short enough that a stalled one frees its connection.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept-alive connection with no request is closed after this long:
/// clients' pools reuse a connection within seconds or not at all.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Client connections open at once; more are refused at once. Well under
/// the file limits servers run with (the start raises the soft limit and
/// warns when even the hard one is lower, see `serve::admission`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The name of the config file picked up from the working directory.
pub const LOCAL_CONFIG_FILE: &str = "proxy.toml";

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Default mode for requests without an `x-llmtape-mode` header.
    pub mode: Mode,
    /// The listener.
    pub server: ServerConfig,
    /// Where misses go.
    pub upstream: UpstreamConfig,
    /// Where recordings live.
    pub store: StoreConfig,
    /// What goes into a request key.
    pub key: KeyConfig,
    /// How hits are replayed.
    pub replay: ReplayConfig,
    /// What is never stored.
    pub redact: RedactConfig,
    /// `[routes]`: which routes are cached besides (or instead of) the
    /// built-in ones.
    pub routes: Routes,
    /// `[remote]`: the team store on Redis, when a URL is configured.
    pub remote: Option<RemoteConfig>,
    /// `[prices]`: what each model's tokens cost (for the cost saved).
    pub prices: Prices,
    /// The file this came from, if any (for the ready line and errors).
    pub source: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted on a cached route (413 beyond).
    pub max_body_bytes: usize,
    /// Certificate and key for TLS on the listener.
    pub tls: Option<TlsFiles>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Requests handled at once; more get 503 with `retry-after`.
    pub max_in_flight: usize,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Token that opens the admin endpoints to non-loopback clients.
    pub admin_token: Option<String>,
    /// Time for a request head to arrive (408 and close beyond).
    pub header_read_timeout: Duration,
    /// Longest pause while a request body is read (408 beyond).
    pub body_read_timeout: Duration,
    /// A kept-alive connection with no request is closed after this.
    pub idle_timeout: Duration,
    /// Client connections open at once; more are refused.
    pub max_connections: usize,
}

/// PEM files for the optional TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL; a path prefix (e.g. `/openai`) is kept in front of request paths.
    pub url: Uri,
    /// Environment variable holding the key sent upstream instead of the caller's.
    pub api_key_env: Option<String>,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub first_byte_timeout: Duration,
    /// Longest gap between body chunks.
    pub idle_timeout: Duration,
    /// Base URL of Anthropic requests (`/v1/messages`, or any request
    /// with `anthropic-version`); the timeouts above apply to it too.
    pub anthropic_url: Uri,
    /// Environment variable holding the key sent to `anthropic_url` as
    /// `x-api-key` instead of the caller's.
    pub anthropic_api_key_env: Option<String>,
}

/// `[store]`
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The sled directory.
    pub path: PathBuf,
    /// Serve from a fixtures folder instead of the store.
    pub fixtures: Option<PathBuf>,
    /// Record upstream 4xx/5xx answers too.
    pub record_errors: bool,
    /// Earlier recordings kept per key.
    pub history: usize,
    /// Largest response recorded.
    pub max_recorded_bytes: usize,
}

/// `[key]`
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// JSON pointers removed from the body before hashing.
    pub ignore_fields: Vec<String>,
    /// Whether the caller's API key partitions the cache.
    pub scope: Scope,
    /// Namespaces whose identical concurrent misses each go upstream
    /// instead of sharing one call (for suites that sample on purpose).
    pub sampling_namespaces: Vec<String>,
    /// Named sets of volatile fields the key ignores (`key.presets`).
    pub presets: Vec<Preset>,
    /// What an identical request sent again gets (`key.repeats`).
    pub repeats: Repeats,
}

impl KeyConfig {
    /// The rules a key is computed under.
    pub fn rules(&self) -> KeyRules {
        KeyRules {
            presets: self.presets.clone(),
            ignore_fields: self.ignore_fields.clone(),
            per_credential: self.scope == Scope::ApiKey,
        }
    }
}

/// `[replay]`
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Pacing of replayed streams.
    pub timing: Timing,
}

/// `[redact]`
#[derive(Debug, Clone, Default)]
pub struct RedactConfig {
    /// Extra headers never stored (on top of the built-in credentials).
    pub headers: Vec<HeaderName>,
}

/// Values from flags and the environment; `None` means "not given".
///
/// clap resolves flag-over-environment before this is built, so this type
/// only has to sit above the file in the precedence order.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `LLMTAPE_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--mode` / `LLMTAPE_MODE`.
    pub mode: Option<Mode>,
    /// `--listen` / `LLMTAPE_LISTEN`.
    pub listen: Option<String>,
    /// `--upstream` / `LLMTAPE_UPSTREAM`.
    pub upstream: Option<String>,
    /// `--anthropic-upstream` / `LLMTAPE_ANTHROPIC_UPSTREAM`.
    pub anthropic_upstream: Option<String>,
    /// `--store` / `LLMTAPE_STORE`.
    pub store: Option<PathBuf>,
    /// `--fixtures` / `LLMTAPE_FIXTURES`.
    pub fixtures: Option<PathBuf>,
    /// `--remote` / `LLMTAPE_REMOTE`.
    pub remote: Option<String>,
}

impl Config {
    /// Builds the configuration the way `llmtape` does on the command line:
    /// the `--config` file if given, else `./proxy.toml` if present, else
    /// defaults; then the overrides on top.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config {
            Some(path) => Some(path.clone()),
            None => {
                let local = Path::new(LOCAL_CONFIG_FILE);
                local.is_file().then(|| local.to_path_buf())
            }
        };
        let (raw, origin) = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                (
                    parse_raw(&text, &path.display().to_string())?,
                    path.display().to_string(),
                )
            }
            None => (RawConfig::default(), "configuration".to_string()),
        };
        let mut config = Config::from_raw(raw, overrides, &origin)?;
        config.source = file;
        Ok(config)
    }

    /// Parses a TOML document (no overrides); used by tests and `load`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, "configuration")?;
        Config::from_raw(raw, &Overrides::default(), "configuration")
    }

    /// The built-in defaults.
    pub fn defaults() -> Config {
        Config::from_raw(RawConfig::default(), &Overrides::default(), "defaults")
            .expect("the built-in defaults are valid")
    }

    /// Validates a raw config with overrides applied, reporting every problem.
    pub fn from_raw(
        raw: RawConfig,
        overrides: &Overrides,
        origin: &str,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();

        let fixtures = overrides.fixtures.clone().or(raw.store.fixtures);
        // Serving fixtures is for tests: replay unless a mode is asked for.
        let default_mode = if fixtures.is_some() {
            Mode::Replay
        } else {
            Mode::Auto
        };
        let mode = match (overrides.mode, raw.mode.as_deref()) {
            (Some(mode), _) => mode,
            (None, Some(text)) => text.parse().unwrap_or_else(|e: String| {
                problems.push(format!("mode: {e}"));
                default_mode
            }),
            (None, None) => default_mode,
        };

        let listen_text = overrides
            .listen
            .clone()
            .or(raw.server.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "server.listen: {listen_text:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8080\" (port 0 picks a free port)"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });

        let max_body_bytes = match raw.server.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(0) => {
                problems.push("server.max_body_bytes: must be greater than 0".into());
                DEFAULT_MAX_BODY_BYTES
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };

        let tls = match (raw.server.tls_cert, raw.server.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                problems.push(
                    "server.tls_cert is set but server.tls_key is not; set both or neither".into(),
                );
                None
            }
            (None, Some(_)) => {
                problems.push(
                    "server.tls_key is set but server.tls_cert is not; set both or neither".into(),
                );
                None
            }
        };

        let mut duration = |name: &str, value: Option<String>, default: Duration| match value {
            None => default,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if d.is_zero() => {
                    problems.push(format!("{name}: must be longer than 0"));
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!(
                        "{name}: {text:?} is not a duration ({e}); write e.g. \"10s\", \"2m\" or \"500ms\""
                    ));
                    default
                }
            },
        };
        let shutdown_timeout = duration(
            "server.shutdown_timeout",
            raw.server.shutdown_timeout,
            DEFAULT_SHUTDOWN_TIMEOUT,
        );
        let header_read_timeout = duration(
            "server.header_read_timeout",
            raw.server.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        );
        let body_read_timeout = duration(
            "server.body_read_timeout",
            raw.server.body_read_timeout,
            DEFAULT_BODY_READ_TIMEOUT,
        );
        let client_idle_timeout = duration(
            "server.idle_timeout",
            raw.server.idle_timeout,
            DEFAULT_CLIENT_IDLE_TIMEOUT,
        );
        let connect_timeout = duration(
            "upstream.connect_timeout",
            raw.upstream.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        );
        let first_byte_timeout = duration(
            "upstream.first_byte_timeout",
            raw.upstream.first_byte_timeout,
            DEFAULT_FIRST_BYTE_TIMEOUT,
        );
        let idle_timeout = duration(
            "upstream.idle_timeout",
            raw.upstream.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
        );

        let url_text = overrides
            .upstream
            .clone()
            .or(raw.upstream.url)
            .unwrap_or_else(|| DEFAULT_UPSTREAM.to_string());
        let url = parse_upstream_url(&url_text).unwrap_or_else(|e| {
            problems.push(format!("upstream.url: {e}"));
            Uri::from_static(DEFAULT_UPSTREAM)
        });

        let anthropic_text = overrides
            .anthropic_upstream
            .clone()
            .or(raw.upstream.anthropic_url)
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_UPSTREAM.to_string());
        let anthropic_url = parse_upstream_url(&anthropic_text).unwrap_or_else(|e| {
            problems.push(format!("upstream.anthropic_url: {e}"));
            Uri::from_static(DEFAULT_ANTHROPIC_UPSTREAM)
        });

        let mut key_env = |setting: &str, value: Option<String>, example: &str| {
            value.filter(|name| {
                let valid = !name.is_empty() && !name.contains('=') && !name.starts_with("sk-");
                if !valid {
                    problems.push(format!(
                        "{setting}: {:?} is not an environment variable name; write the variable's name, e.g. \"{example}\", never the key itself",
                        redact_preview(name)
                    ));
                }
                valid
            })
        };
        let api_key_env = key_env(
            "upstream.api_key_env",
            raw.upstream.api_key_env,
            "OPENAI_API_KEY",
        );
        let anthropic_api_key_env = key_env(
            "upstream.anthropic_api_key_env",
            raw.upstream.anthropic_api_key_env,
            "ANTHROPIC_API_KEY",
        );

        let mut positive = |name: &str, value: Option<u64>, default: usize| match value {
            None => default,
            Some(0) => {
                problems.push(format!("{name}: must be greater than 0"));
                default
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let max_in_flight = positive(
            "server.max_in_flight",
            raw.server.max_in_flight,
            DEFAULT_MAX_IN_FLIGHT,
        );
        let max_header_bytes = positive(
            "server.max_header_bytes",
            raw.server.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
        );
        let max_connections = positive(
            "server.max_connections",
            raw.server.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        );
        let max_recorded_bytes = positive(
            "store.max_recorded_bytes",
            raw.store.max_recorded_bytes,
            DEFAULT_MAX_RECORDED_BYTES,
        );
        if max_header_bytes < 8192 {
            problems.push(
                "server.max_header_bytes: must be at least 8192 (HTTP/1 needs that much buffer)"
                    .into(),
            );
        }
        let admin_token = match raw.server.admin_token_env {
            None => None,
            Some(name) => match std::env::var(&name) {
                Ok(token) if !token.trim().is_empty() => Some(token.trim().to_string()),
                _ => {
                    problems.push(format!(
                        "server.admin_token_env names {name}, but {name} is not set; export it or remove the key"
                    ));
                    None
                }
            },
        };

        let history = match raw.store.history {
            None => DEFAULT_HISTORY,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };

        let (presets, repeats) = key_presets_and_repeats(&raw.key, &mut problems);
        let ignore_fields = raw
            .key
            .ignore_fields
            .unwrap_or_else(|| vec!["/user".to_string()]);
        for pointer in &ignore_fields {
            if !pointer.starts_with('/') {
                problems.push(format!(
                    "key.ignore_fields: {pointer:?} is not a JSON pointer; write it as \"/{}\"",
                    pointer.trim_start_matches('/')
                ));
            }
        }

        let scope = match raw.key.scope.as_deref().map(str::trim) {
            None | Some("global") => Scope::Global,
            Some("api-key") => Scope::ApiKey,
            Some(other) => {
                problems.push(format!(
                    "key.scope: unknown scope {other:?}; expected \"global\" or \"api-key\""
                ));
                Scope::Global
            }
        };

        let timing = match raw.replay.timing.as_deref() {
            None => Timing::Instant,
            Some(text) => text.parse().unwrap_or_else(|e: String| {
                problems.push(format!("replay.timing: {e}"));
                Timing::Instant
            }),
        };

        let mut redact_headers = Vec::new();
        for name in raw.redact.headers.unwrap_or_default() {
            match HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
                Ok(h) => redact_headers.push(h),
                Err(_) => problems.push(format!(
                    "redact.headers: {name:?} is not a valid header name"
                )),
            }
        }

        let routes = routes::routes_from_raw(raw.routes, &mut problems);
        let remote = remote::remote_from_raw(raw.remote, overrides.remote.clone(), &mut problems);
        let prices = prices::prices_from_raw(raw.prices, &mut problems);

        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            });
        }

        Ok(Config {
            mode,
            server: ServerConfig {
                listen,
                max_body_bytes,
                tls,
                shutdown_timeout,
                max_in_flight,
                max_header_bytes,
                admin_token,
                header_read_timeout,
                body_read_timeout,
                idle_timeout: client_idle_timeout,
                max_connections,
            },
            upstream: UpstreamConfig {
                url,
                api_key_env,
                connect_timeout,
                first_byte_timeout,
                idle_timeout,
                anthropic_url,
                anthropic_api_key_env,
            },
            store: StoreConfig {
                path: overrides
                    .store
                    .clone()
                    .or(raw.store.path)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE)),
                fixtures,
                record_errors: raw.store.record_errors.unwrap_or(false),
                history,
                max_recorded_bytes,
            },
            key: KeyConfig {
                ignore_fields,
                scope,
                sampling_namespaces: raw.key.sampling_namespaces.unwrap_or_default(),
                presets,
                repeats,
            },
            replay: ReplayConfig { timing },
            redact: RedactConfig {
                headers: redact_headers,
            },
            routes,
            remote,
            prices,
            source: None,
        })
    }
}

/// `key.presets` (default `["claude-code"]`, each named once) and
/// `key.repeats` (default `"same"`).
fn key_presets_and_repeats(key: &RawKey, problems: &mut Vec<String>) -> (Vec<Preset>, Repeats) {
    let mut presets = Vec::new();
    match &key.presets {
        None => presets.extend(DEFAULT_PRESETS),
        Some(names) => {
            for name in names {
                match name.parse::<Preset>() {
                    Ok(preset) if presets.contains(&preset) => {
                        problems.push(format!("key.presets: {preset} is named twice"))
                    }
                    Ok(preset) => presets.push(preset),
                    Err(e) => problems.push(format!("key.presets: {e}")),
                }
            }
        }
    }
    let repeats = match key.repeats.as_deref() {
        None => Repeats::Same,
        Some(text) => text.parse().unwrap_or_else(|e: String| {
            problems.push(format!("key.repeats: {e}"));
            Repeats::Same
        }),
    };
    (presets, repeats)
}

/// Parses and checks the upstream base URL.
fn parse_upstream_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.trim().parse().map_err(|e| {
        format!("{text:?} is not a URL ({e}); write e.g. \"https://api.openai.com\"")
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "{text:?} needs an http:// or https:// scheme, e.g. \"https://api.openai.com\""
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?} must not carry a query string"));
    }
    Ok(uri)
}

/// Shows a value that may be a secret without printing it.
fn redact_preview(value: &str) -> String {
    if value.starts_with("sk-") {
        "sk-…".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests;
