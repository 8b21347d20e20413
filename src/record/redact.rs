//! What never reaches disk or logs, and what never crosses the proxy.
//!
//! Owns the header lists: hop-by-hop headers (meaningful for one connection
//! only, RFC 9110 §7.6.1), credentials (never stored, never logged) and the
//! headers a recording keeps. Everything persisted passes through
//! [`Redactor::recordable`] first.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Credentials and session state: never stored, whatever the config says,
/// and a leak wherever they appear in a fixture (`llmtape lint`). The one
/// list of them; lowercase.
const CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// True for a credential or session header (the `CREDENTIALS` list), in any
/// letter case: `Authorization` in a hand-written fixture counts too.
pub fn is_credential(name: &str) -> bool {
    CREDENTIALS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// The prefix of llmtape's own headers (`x-llmtape-cache`, ...).
pub const OWN_HEADER_PREFIX: &str = "x-llmtape-";

/// Headers that are per-response framing or time, recomputed on replay.
const NOT_REPLAYED: &[&str] = &["content-length", "date"];

/// Decides which headers may be persisted.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    extra: Vec<HeaderName>,
}

impl Redactor {
    /// A redactor that also drops the configured `redact.headers`.
    pub fn new(extra: Vec<HeaderName>) -> Self {
        Redactor { extra }
    }

    /// True for a header that must never be stored or logged.
    pub fn is_secret(&self, name: &HeaderName) -> bool {
        // A `HeaderName` is lowercase already.
        CREDENTIALS.contains(&name.as_str()) || self.extra.contains(name)
    }

    /// The response headers a recording keeps, in order, as text.
    /// Values that are not visible ASCII are dropped rather than mangled.
    pub fn recordable(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        let connection_listed = connection_listed(headers);
        headers
            .iter()
            .filter(|(name, _)| {
                // llmtape's own headers describe one answer of this proxy
                // (or of another llmtape upstream), never the recording.
                !name.as_str().starts_with(OWN_HEADER_PREFIX)
                    && !HOP_BY_HOP.contains(&name.as_str())
                    && !NOT_REPLAYED.contains(&name.as_str())
                    && !connection_listed.contains(name)
                    && !self.is_secret(name)
            })
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|v| (name.as_str().to_string(), v.to_string()))
            })
            .collect()
    }
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// A value that must not appear in logs: `Debug` and `Display` hide it.
#[derive(Clone)]
pub struct Sensitive<T>(pub T);

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_and_framing_are_never_recorded() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("openai-processing-ms", HeaderValue::from_static("12"));
        headers.insert("set-cookie", HeaderValue::from_static("__cf_bm=secret"));
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-test-dummy"),
        );
        headers.insert("x-custom-secret", HeaderValue::from_static("s3cret"));
        headers.insert("connection", HeaderValue::from_static("x-per-hop"));
        headers.insert("x-per-hop", HeaderValue::from_static("1"));
        headers.insert("content-length", HeaderValue::from_static("10"));
        headers.insert("x-llmtape-cache", HeaderValue::from_static("miss"));
        let redactor = Redactor::new(vec![HeaderName::from_static("x-custom-secret")]);
        let kept: Vec<String> = redactor
            .recordable(&headers)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(kept, vec!["content-type", "openai-processing-ms"]);
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-keep"));
    }

    #[test]
    fn credentials_are_recognised_in_any_case() {
        assert!(is_credential("authorization") && is_credential("Set-Cookie"));
        assert!(is_credential("X-API-KEY"));
        assert!(!is_credential("content-type") && !is_credential("x-api-keys"));
    }

    #[test]
    fn sensitive_values_do_not_print() {
        let s = Sensitive("sk-test-dummy");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }
}
