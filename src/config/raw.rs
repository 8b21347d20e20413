//! The first stage of configuration: the TOML file as written, every field
//! optional, and the check that names every unknown key (with its new name
//! where a key moved) before serde sees the file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::config::remote::{RawRemote, REMOTE_KEYS, REMOTE_RENAMED_KEYS};
use crate::config::routes::{RawRoutes, ROUTES_KEYS};

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
    /// `[routes]`
    #[serde(default)]
    pub routes: RawRoutes,
    /// `[remote]`
    #[serde(default)]
    pub remote: RawRemote,
    /// `[prices]`: per model, checked by `config::prices`.
    #[serde(default)]
    pub prices: toml::Table,
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
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u64>,
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
    pub anthropic_url: Option<String>,
    pub anthropic_api_key_env: Option<String>,
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
    pub presets: Option<Vec<String>>,
    pub repeats: Option<String>,
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
            "mode", "server", "upstream", "store", "key", "replay", "redact", "routes", "remote",
            "prices",
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
            "header_read_timeout",
            "body_read_timeout",
            "idle_timeout",
            "max_connections",
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
            "anthropic_url",
            "anthropic_api_key_env",
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
    (
        "key",
        &[
            "ignore_fields",
            "scope",
            "sampling_namespaces",
            "presets",
            "repeats",
        ],
    ),
    ("replay", &["timing"]),
    ("redact", &["headers"]),
    ("routes", ROUTES_KEYS),
    ("remote", REMOTE_KEYS),
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
    ("key.preset", "key.presets"),
    ("key.repeat", "key.repeats"),
    ("key.ignore_headers", "redact.headers"),
    ("replay.pacing", "replay.timing"),
    ("redact.fields", "redact.headers"),
    // nginx, Go's net/http and others name the client bounds so.
    ("server.client_header_timeout", "server.header_read_timeout"),
    ("server.read_header_timeout", "server.header_read_timeout"),
    ("server.client_body_timeout", "server.body_read_timeout"),
    ("server.keepalive_timeout", "server.idle_timeout"),
    ("server.keep_alive_timeout", "server.idle_timeout"),
    ("server.max_conns", "server.max_connections"),
    ("upstream.anthropic_base_url", "upstream.anthropic_url"),
    (
        "upstream.anthropic_api_key",
        "upstream.anthropic_api_key_env (name an environment variable, never the key itself)",
    ),
    ("server.worker_connections", "server.max_connections"),
];

/// Parses TOML into [`RawConfig`], first reporting every unknown key by its
/// full dotted name (and its new name where we know it).
pub(super) fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
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
            .chain(REMOTE_RENAMED_KEYS)
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
        let err = Config::from_toml("[server]\nkeepalive_timeout = \"3s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is now `server.idle_timeout`"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_a_clear_error() {
        let err = Config::from_toml("[server]\nmax_body_bytes = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
    }
}
