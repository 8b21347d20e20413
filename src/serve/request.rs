//! What the proxy reads from a request besides its route: llmtape's own
//! override headers, `Cache-Control`, and the parts the key is made of.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::config::{Mode, Timing};
use crate::key::{Repeats, RequestParts};
use crate::route::Dialect;
use crate::serve::error::ProxyError;
use crate::serve::headers::{MODE_HEADER, NAMESPACE_HEADER, REPEATS_HEADER, REPLAY_TIMING_HEADER};

// The names a request is asked for, parsed once: a lookup by `&str`
// parses and checks the name on every call, which was a tenth of a cache
// hit's instructions in the profile (see the README's Performance).
static MODE: HeaderName = HeaderName::from_static(MODE_HEADER);
static REPLAY_TIMING: HeaderName = HeaderName::from_static(REPLAY_TIMING_HEADER);
static REPEATS: HeaderName = HeaderName::from_static(REPEATS_HEADER);
static NAMESPACE: HeaderName = HeaderName::from_static(NAMESPACE_HEADER);
static API_KEY: HeaderName = HeaderName::from_static("api-key");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Sent by the Anthropic SDKs on every call.
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The first value of `name`. A request carries a handful of headers, and
/// llmtape asks for ones it seldom has: a look at each name is cheaper
/// than hashing the one asked for (most of a lookup of a custom name).
fn find<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.keys_len() > 8 {
        return headers.get(name);
    }
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The mode for this request: `x-llmtape-mode`, else `default`.
pub fn mode(headers: &HeaderMap, default: Mode) -> Result<Mode, ProxyError> {
    header_choice(headers, &MODE, default, "auto, record, replay, passthrough")
}

/// The replay timing for this request: `x-llmtape-replay-timing`, else
/// `default`.
pub fn replay_timing(headers: &HeaderMap, default: Timing) -> Result<Timing, ProxyError> {
    header_choice(headers, &REPLAY_TIMING, default, "instant, recorded")
}

/// A per-request override header: absent means `default`, anything that
/// does not parse is the caller's mistake (400), never silently ignored.
fn header_choice<T: std::str::FromStr>(
    headers: &HeaderMap,
    header: &'static HeaderName,
    default: T,
    expected: &'static str,
) -> Result<T, ProxyError> {
    match find(headers, header) {
        None => Ok(default),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProxyError::BadHeader {
                header: header.as_str(),
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
    let header = |name: &HeaderName| find(&parts.headers, name).and_then(|v| v.to_str().ok());
    // Anthropic's SDKs send `x-api-key` (or, with an auth token,
    // `Authorization`).
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .or_else(|| find(&parts.headers, &API_KEY))
        .or_else(|| find(&parts.headers, &X_API_KEY))
        .map(HeaderValue::as_bytes);
    RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        content_type: header(&header::CONTENT_TYPE),
        body,
        namespace: header(&NAMESPACE),
        credential,
        anthropic_version: header(&ANTHROPIC_VERSION),
        anthropic_beta: match find(&parts.headers, &ANTHROPIC_BETA) {
            None => Vec::new(),
            Some(_) => parts
                .headers
                .get_all(&ANTHROPIC_BETA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
        },
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
    match find(headers, &REPEATS) {
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

/// [`dialect_of`] a request not yet taken apart.
pub fn dialect_of_request<B>(request: &http::Request<B>) -> Dialect {
    Dialect::of(
        request.uri().path(),
        find(request.headers(), &ANTHROPIC_VERSION).is_some(),
    )
}

/// The dialect of a request, by its path and headers.
pub fn dialect_of(parts: &Parts) -> Dialect {
    Dialect::of(
        parts.uri.path(),
        find(&parts.headers, &ANTHROPIC_VERSION).is_some(),
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
    fn find_answers_as_get_does_in_small_and_large_maps() {
        for extra in [0usize, 3, 20] {
            let mut headers = HeaderMap::new();
            for i in 0..extra {
                let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                headers.insert(name, HeaderValue::from_static("f"));
            }
            assert_eq!(find(&headers, &MODE), None, "{extra}");
            headers.append(&MODE, HeaderValue::from_static("replay"));
            headers.append(&MODE, HeaderValue::from_static("record"));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
            for name in [&MODE, &header::CONTENT_TYPE, &NAMESPACE] {
                assert_eq!(find(&headers, name), headers.get(name), "{extra} {name}");
            }
            assert_eq!(
                mode(&headers, Mode::Auto).unwrap(),
                Mode::Replay,
                "the first value"
            );
        }
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
