//! `[remote]`: the team store on Redis (`store::remote`). Its own file,
//! both stages: the raw keys and their validation into [`RemoteConfig`].
//! The URL is only parsed here; whether Redis answers is for `serve` to
//! find out (an unreachable Redis does not stop it starting).

use std::time::Duration;

use serde::Deserialize;

/// `[remote]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawRemote {
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub access: Option<String>,
    pub on_unavailable: Option<String>,
    pub timeout: Option<String>,
}

/// The keys `[remote]` may hold.
pub(super) const REMOTE_KEYS: &[&str] = &["url", "prefix", "access", "on_unavailable", "timeout"];

/// Keys of `[remote]` written by habit, and their names here.
pub(super) const REMOTE_RENAMED_KEYS: &[(&str, &str)] = &[
    ("remote.redis_url", "remote.url"),
    ("remote.namespace", "remote.prefix"),
    ("remote.mode", "remote.access"),
    ("remote.read_only", "remote.access (\"read-only\")"),
];

/// Default `remote.prefix`.
pub const DEFAULT_REMOTE_PREFIX: &str = "llmtape";
/// Default `remote.timeout`: a Redis GET on a LAN takes well under a
/// millisecond, so this only ever bounds a stalled or unreachable Redis.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_millis(250);

/// Whether this proxy writes to the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Access {
    /// Reads and writes (a recording job, a replica).
    ReadWrite,
    /// Reads only (CI runners replaying what a recording job wrote).
    ReadOnly,
}

impl Access {
    /// The spelling in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "read-write",
            Access::ReadOnly => "read-only",
        }
    }
}

/// What a miss gets while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum OnUnavailable {
    /// Serve from the local store, record locally, push later.
    Local,
    /// Answer 503 `llmtape_remote_unavailable`.
    Fail,
}

impl OnUnavailable {
    /// The spelling in config.
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Local => "local",
            OnUnavailable::Fail => "fail",
        }
    }
}

/// `[remote]`, validated. Present only when a URL is given. Serialisable:
/// `push` and `pull` send it to a running `serve` (`cmd::job`).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct RemoteConfig {
    /// `redis://` or `rediss://` URL, checked by the `redis` crate's parser.
    pub url: String,
    /// Separates teams sharing one Redis: every key starts with it.
    pub prefix: String,
    /// Whether this proxy writes.
    pub access: Access,
    /// What a miss gets while Redis is unreachable.
    pub on_unavailable: OnUnavailable,
    /// Bound on every Redis command.
    pub timeout: Duration,
}

impl RemoteConfig {
    /// The URL without its password, for logs and health.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A Redis URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Validates `[remote]` (with `--remote` / `LLMTAPE_REMOTE` as `url_override`);
/// each problem names its key and the fix. `None`: no remote configured.
pub(super) fn remote_from_raw(
    raw: RawRemote,
    url_override: Option<String>,
    problems: &mut Vec<String>,
) -> Option<RemoteConfig> {
    let prefix = raw
        .prefix
        .unwrap_or_else(|| DEFAULT_REMOTE_PREFIX.to_string());
    if prefix.is_empty() || prefix.contains(['{', '}', ':', ' ']) {
        problems.push(format!(
            "remote.prefix: {prefix:?} must be a non-empty word without braces, colons or spaces, e.g. \"team-a\""
        ));
    }
    let access = match raw.access.as_deref().map(str::trim) {
        None | Some("read-write") => Access::ReadWrite,
        Some("read-only") => Access::ReadOnly,
        Some(other) => {
            problems.push(format!(
                "remote.access: unknown access {other:?}; expected \"read-write\" or \"read-only\""
            ));
            Access::ReadWrite
        }
    };
    let on_unavailable = match raw.on_unavailable.as_deref().map(str::trim) {
        None | Some("local") => OnUnavailable::Local,
        Some("fail") => OnUnavailable::Fail,
        Some(other) => {
            problems.push(format!(
                "remote.on_unavailable: unknown choice {other:?}; expected \"local\" or \"fail\""
            ));
            OnUnavailable::Local
        }
    };
    let timeout = match raw.timeout {
        None => DEFAULT_REMOTE_TIMEOUT,
        Some(text) => match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push("remote.timeout: must be longer than 0".into());
                DEFAULT_REMOTE_TIMEOUT
            }
            Err(e) => {
                problems.push(format!(
                    "remote.timeout: {text:?} is not a duration ({e}); write e.g. \"250ms\" or \"1s\""
                ));
                DEFAULT_REMOTE_TIMEOUT
            }
        },
    };
    let url = url_override.or(raw.url)?;
    let url = url.trim().to_string();
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    let parses = scheme_ok && redis::Client::open(url.as_str()).is_ok();
    if !parses {
        problems.push(format!(
            "remote.url: {:?} is not a Redis URL; write e.g. \"redis://127.0.0.1:6379\" (or \"rediss://host:6380\" for TLS; a password goes in as redis://:PASSWORD@host:6379)",
            redact_url(&url)
        ));
        return None;
    }
    Some(RemoteConfig {
        url,
        prefix,
        access,
        on_unavailable,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:pw@h:6380"),
            "rediss://user:***@h:6380"
        );
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn a_malformed_url_names_the_fix() {
        let mut problems = Vec::new();
        let raw = RawRemote {
            url: Some("http://localhost:6379".into()),
            ..RawRemote::default()
        };
        assert!(remote_from_raw(raw, None, &mut problems).is_none());
        assert!(
            problems[0].contains("redis://127.0.0.1:6379"),
            "{problems:?}"
        );
    }

    #[test]
    fn no_url_means_no_remote_and_the_flag_wins() {
        let mut problems = Vec::new();
        assert!(remote_from_raw(RawRemote::default(), None, &mut problems).is_none());
        let raw = RawRemote {
            url: Some("redis://a:1".into()),
            access: Some("read-only".into()),
            ..RawRemote::default()
        };
        let remote = remote_from_raw(raw, Some("redis://b:2".into()), &mut problems).unwrap();
        assert_eq!(remote.url, "redis://b:2");
        assert_eq!(remote.access, Access::ReadOnly);
        assert_eq!(remote.timeout, DEFAULT_REMOTE_TIMEOUT);
        assert!(problems.is_empty());
    }
}
