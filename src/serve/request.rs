//! What the proxy reads from a request besides its route: llmtape's own
//! override headers, `Cache-Control`, and the parts the key is made of.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::config::{Mode, Timing};
use crate::key::{Repeats, RequestParts};
use crate::route::Dialect;
use crate::serve::error::ProxyError;
use crate::serve::headers::{MODE_HEADER, NAMESPACE_HEADER, REPEATS_HEADER, REPLAY_TIMING_HEADER};

/// The mode for this request: `x-llmtape-mode`, else `default`.
pub fn mode(headers: &HeaderMap, default: Mode) -> Result<Mode, ProxyError> {
    header_choice(
        headers,
        MODE_HEADER,
        default,
        "auto, record, replay, passthrough",
    )
}

/// The replay timing for this request: `x-llmtape-replay-timing`, else
/// `default`.
pub fn replay_timing(headers: &HeaderMap, default: Timing) -> Result<Timing, ProxyError> {
    header_choice(headers, REPLAY_TIMING_HEADER, default, "instant, recorded")
}

/// A per-request override header: absent means `default`, anything that
/// does not parse is the caller's mistake (400), never silently ignored.
fn header_choice<T: std::str::FromStr>(
    headers: &HeaderMap,
    header: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, ProxyError> {
    match headers.get(header) {
        None => Ok(default),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProxyError::BadHeader {
                header,
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                expected,
            }),
    }
}

/// `Cache-Control: no-cache` (or `no-store`) asks for a fresh recording.
pub fn wants_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store")
        })
}

/// What the key is computed from.
pub fn key_parts<'a>(parts: &'a Parts, body: &'a [u8]) -> RequestParts<'a> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    // Anthropic's SDKs send `x-api-key` (or, with an auth token,
    // `Authorization`).
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .or_else(|| parts.headers.get("api-key"))
        .or_else(|| parts.headers.get("x-api-key"))
        .map(HeaderValue::as_bytes);
    RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        content_type: header("content-type"),
        body,
        namespace: header(NAMESPACE_HEADER),
        credential,
        anthropic_version: header("anthropic-version"),
        anthropic_beta: parts
            .headers
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
    }
}

/// The path and query to forward.
pub fn path_and_query(parts: &Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
}

/// `x-llmtape-repeats` for this request, else `default`; a value it does
/// not know is the caller's mistake (400).
pub fn repeats(headers: &HeaderMap, default: Repeats) -> Result<Repeats, ProxyError> {
    match headers.get(REPEATS_HEADER) {
        None => Ok(default),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProxyError::BadHeader {
                header: REPEATS_HEADER,
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                expected: "same, sequence",
            }),
    }
}

/// The dialect of a request, by its path and headers.
pub fn dialect_of(parts: &Parts) -> Dialect {
    Dialect::of(
        parts.uri.path(),
        parts.headers.contains_key("anthropic-version"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_header_overrides_and_rejects_nonsense() {
        let mut headers = HeaderMap::new();
        assert_eq!(mode(&headers, Mode::Auto).unwrap(), Mode::Auto);
        headers.insert(MODE_HEADER, HeaderValue::from_static("replay"));
        assert_eq!(mode(&headers, Mode::Auto).unwrap(), Mode::Replay);
        headers.insert(MODE_HEADER, HeaderValue::from_static("sometimes"));
        assert!(mode(&headers, Mode::Auto).is_err());
    }

    #[test]
    fn no_cache_is_found_among_directives() {
        let mut headers = HeaderMap::new();
        assert!(!wants_no_cache(&headers));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(wants_no_cache(&headers));
    }
}
