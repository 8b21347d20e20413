//! Configuration: `proxy.toml` plus command-line and environment overrides.
//!
//! Two stages, as the contract asks. [`RawConfig`] mirrors the TOML file with
//! every field optional; [`Config`] holds validated types (`SocketAddr`,
//! `Uri`, `Duration`, [`Mode`]). Every problem found is reported at once, in
//! one line, naming the key and the fix. This module does not read flags or
//! the environment itself: the CLI hands it an [`Overrides`] value, which
//! keeps precedence (flag > environment > file > defaults) in one place and
//! lets tests build configs from strings.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;

/// Default listen address: loopback only, so a fresh start exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default upstream: the OpenAI API.
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com";
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
/// The name of the config file picked up from the working directory.
pub const LOCAL_CONFIG_FILE: &str = "proxy.toml";

/// What the proxy does with a request on a cached route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Replay a hit; forward and record a miss.
    #[default]
    Auto,
    /// Always forward and re-record.
    Record,
    /// Replay a hit; answer a miss with 404, never contact the upstream.
    Replay,
    /// Forward everything, store nothing.
    Passthrough,
}

impl Mode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [Mode; 4] = [Mode::Auto, Mode::Record, Mode::Replay, Mode::Passthrough];

    /// The mode's name as it appears in config, headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Record => "record",
            Mode::Replay => "replay",
            Mode::Passthrough => "passthrough",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown mode {s:?}: expected one of auto, record, replay, passthrough")
            })
    }
}

/// Whether the caller's API key is part of the request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// One cache for everyone: a replay with a dummy key hits.
    #[default]
    Global,
    /// Each API key sees only its own recordings.
    ApiKey,
}

/// How a recorded stream is paced on replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    /// Send everything at once.
    #[default]
    Instant,
    /// Reproduce the recorded gaps between events.
    Recorded,
}

impl FromStr for Timing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "instant" => Ok(Timing::Instant),
            "recorded" => Ok(Timing::Recorded),
            other => Err(format!(
                "unknown replay timing {other:?}: expected instant or recorded"
            )),
        }
    }
}

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
    /// `--store` / `LLMTAPE_STORE`.
    pub store: Option<PathBuf>,
    /// `--fixtures` / `LLMTAPE_FIXTURES`.
    pub fixtures: Option<PathBuf>,
}

/// A configuration that cannot be used; the message lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{origin}: {}", one_line(&source.to_string()))]
    Syntax {
        /// The file, or "configuration".
        origin: String,
        /// What the TOML parser said (the message shows it in one line).
        source: toml::de::Error,
    },
    /// One or more values are wrong; each names its key and the fix.
    #[error("{origin}: {}", problems.join("; "))]
    Invalid {
        /// The file, or "configuration".
        origin: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// The TOML file, as written. Every field optional; unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Top-level `mode`.
    pub mode: Option<String>,
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: RawUpstream,
    /// `[store]`
    #[serde(default)]
    pub store: RawStore,
    /// `[key]`
    #[serde(default)]
    pub key: RawKey,
    /// `[replay]`
    #[serde(default)]
    pub replay: RawReplay,
    /// `[redact]`
    #[serde(default)]
    pub redact: RawRedact,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub shutdown_timeout: Option<String>,
    pub max_in_flight: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub admin_token_env: Option<String>,
}

/// `[upstream]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub api_key_env: Option<String>,
    pub connect_timeout: Option<String>,
    pub first_byte_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawStore {
    pub path: Option<PathBuf>,
    pub fixtures: Option<PathBuf>,
    pub record_errors: Option<bool>,
    pub history: Option<u64>,
    pub max_recorded_bytes: Option<u64>,
}

/// `[key]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawKey {
    pub ignore_fields: Option<Vec<String>>,
    pub scope: Option<String>,
    pub sampling_namespaces: Option<Vec<String>>,
}

/// `[replay]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawReplay {
    pub timing: Option<String>,
}

/// `[redact]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawRedact {
    pub headers: Option<Vec<String>>,
}

/// Every key the file may hold, by section ("" is the top level).
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "mode", "server", "upstream", "store", "key", "replay", "redact",
        ],
    ),
    (
        "server",
        &[
            "listen",
            "max_body_bytes",
            "tls_cert",
            "tls_key",
            "shutdown_timeout",
            "max_in_flight",
            "max_header_bytes",
            "admin_token_env",
        ],
    ),
    (
        "upstream",
        &[
            "url",
            "api_key_env",
            "connect_timeout",
            "first_byte_timeout",
            "idle_timeout",
        ],
    ),
    (
        "store",
        &[
            "path",
            "fixtures",
            "record_errors",
            "history",
            "max_recorded_bytes",
        ],
    ),
    ("key", &["ignore_fields", "scope", "sampling_namespaces"]),
    ("replay", &["timing"]),
    ("redact", &["headers"]),
];

/// Keys people write by habit or from other tools, and where they live here.
const RENAMED_KEYS: &[(&str, &str)] = &[
    ("listen", "server.listen"),
    ("upstream_url", "upstream.url"),
    ("upstream.base_url", "upstream.url"),
    ("base_url", "upstream.url"),
    ("store_path", "store.path"),
    ("store.dir", "store.path"),
    ("fixtures", "store.fixtures"),
    ("upstream.timeout", "upstream.first_byte_timeout"),
    ("upstream.response_timeout", "upstream.first_byte_timeout"),
    (
        "upstream.api_key",
        "upstream.api_key_env (name an environment variable, never the key itself)",
    ),
    ("server.max_body_size", "server.max_body_bytes"),
    ("server.max_body", "server.max_body_bytes"),
    ("key.ignore", "key.ignore_fields"),
    ("key.ignore_headers", "redact.headers"),
    ("replay.pacing", "replay.timing"),
    ("redact.fields", "redact.headers"),
];

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

        let api_key_env = raw.upstream.api_key_env.filter(|name| {
            let valid = !name.is_empty() && !name.contains('=') && !name.starts_with("sk-");
            if !valid {
                problems.push(format!(
                    "upstream.api_key_env: {:?} is not an environment variable name; write the variable's name, e.g. \"OPENAI_API_KEY\", never the key itself",
                    redact_preview(name)
                ));
            }
            valid
        });

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
            },
            upstream: UpstreamConfig {
                url,
                api_key_env,
                connect_timeout,
                first_byte_timeout,
                idle_timeout,
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
            },
            replay: ReplayConfig { timing },
            redact: RedactConfig {
                headers: redact_headers,
            },
            source: None,
        })
    }
}

/// Parses TOML into [`RawConfig`], first reporting every unknown key by its
/// full dotted name (and its new name where we know it).
fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Syntax {
        origin: origin.to_string(),
        source,
    })?;
    let problems = unknown_keys(&table);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        });
    }
    RawConfig::deserialize(toml::Value::Table(table)).map_err(|source| ConfigError::Syntax {
        origin: origin.to_string(),
        source,
    })
}

fn unknown_keys(table: &toml::Table) -> Vec<String> {
    let allowed = |section: &str| {
        KNOWN_KEYS
            .iter()
            .find(|(name, _)| *name == section)
            .map(|(_, keys)| *keys)
    };
    let mut problems = Vec::new();
    let mut report = |dotted: String, section: &str| {
        let hint = RENAMED_KEYS
            .iter()
            .find(|(old, _)| *old == dotted)
            .map(|(_, new)| format!("; it is now `{new}`"))
            .unwrap_or_else(|| {
                let keys = allowed(section).unwrap_or(&[]);
                let place = if section.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in [{section}]")
                };
                format!("; known keys {place}: {}", keys.join(", "))
            });
        problems.push(format!("unknown key `{dotted}`{hint}"));
    };
    let top = allowed("").unwrap_or(&[]);
    for (name, value) in table {
        if !top.contains(&name.as_str()) {
            report(name.clone(), "");
            continue;
        }
        if let (toml::Value::Table(inner), Some(keys)) = (value, allowed(name)) {
            for key in inner.keys() {
                if !keys.contains(&key.as_str()) {
                    report(format!("{name}.{key}"), name);
                }
            }
        }
    }
    problems
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

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_proxy_toml_parses_to_the_defaults() {
        let text = include_str!("../../proxy.toml");
        let config = Config::from_toml(text).expect("proxy.toml must parse");
        let defaults = Config::defaults();
        assert_eq!(config.mode, defaults.mode);
        assert_eq!(config.server.listen, defaults.server.listen);
        assert_eq!(config.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.upstream.url, defaults.upstream.url);
        assert_eq!(config.upstream.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(
            config.upstream.first_byte_timeout,
            DEFAULT_FIRST_BYTE_TIMEOUT
        );
        assert_eq!(config.upstream.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(config.store.path, PathBuf::from(DEFAULT_STORE));
        assert_eq!(config.store.history, DEFAULT_HISTORY);
        assert!(!config.store.record_errors);
        assert_eq!(config.key.ignore_fields, vec!["/user".to_string()]);
        assert_eq!(config.key.scope, Scope::Global);
        assert_eq!(config.replay.timing, Timing::Instant);
        assert_eq!(config.server.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(config.server.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(config.store.max_recorded_bytes, DEFAULT_MAX_RECORDED_BYTES);
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.mode, Mode::Auto);
    }

    #[test]
    fn unknown_keys_are_named_with_their_section() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `server.port`"), "{err}");
        assert!(err.contains("known keys in [server]"), "{err}");
    }

    #[test]
    fn renamed_keys_name_their_new_place() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is now `server.listen`"), "{err}");
        let err = Config::from_toml("[upstream]\ntimeout = \"3s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.first_byte_timeout"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "mode = \"fast\"\n[server]\nlisten = \"nowhere\"\n[upstream]\nurl = \"ftp://x\"\nidle_timeout = \"soon\"\n";
        let err = Config::from_toml(text).unwrap_err().to_string();
        for needle in [
            "mode",
            "server.listen",
            "upstream.url",
            "upstream.idle_timeout",
        ] {
            assert!(err.contains(needle), "missing {needle} in {err}");
        }
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn a_wrong_type_is_a_clear_error() {
        let err = Config::from_toml("[server]\nmax_body_bytes = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
    }

    #[test]
    fn overrides_beat_the_file() {
        let raw = parse_raw(
            "mode = \"replay\"\n[server]\nlisten = \"127.0.0.1:9\"\n",
            "t",
        )
        .unwrap();
        let overrides = Overrides {
            mode: Some(Mode::Record),
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let config = Config::from_raw(raw, &overrides, "t").unwrap();
        assert_eq!(config.mode, Mode::Record);
        assert_eq!(config.server.listen.port(), 0);
    }

    #[test]
    fn a_key_in_api_key_env_is_refused_without_echoing_it() {
        let err = Config::from_toml("[upstream]\napi_key_env = \"sk-test-dummy-secret\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_key_env"), "{err}");
        assert!(!err.contains("dummy-secret"), "{err}");
    }

    #[test]
    fn modes_parse_case_insensitively_and_reject_unknowns() {
        assert_eq!("Replay".parse::<Mode>().unwrap(), Mode::Replay);
        assert!("replay-only".parse::<Mode>().is_err());
    }
}
