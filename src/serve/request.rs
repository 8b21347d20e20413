//! What the proxy reads from a request besides its route: llmtape's own
//! override headers, `Cache-Control`, and the parts the key is made of.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::config::{Mode, Timing};
use crate::key::{Repeats, RequestParts};
use crate::route::Dialect;
use crate::serve::error::ProxyError;
use crate::serve::headers::{MODE_HEADER, NAMESPACE_HEADER, REPEATS_HEADER, REPLAY_TIMING_HEADER};

/// The request headers the proxy reads, found in one pass over the
/// headers. A request carries a handful of headers and llmtape asks for a
/// dozen names, most of which it seldom has: a lookup per name (a scan, or
/// a hash of a custom name) was a tenth of a cache hit's instructions in
/// the profile (see the README's Performance).
#[derive(Debug, Default)]
pub struct Asked<'a> {
    mode: Option<&'a HeaderValue>,
    replay_timing: Option<&'a HeaderValue>,
    repeats: Option<&'a HeaderValue>,
    namespace: Option<&'a HeaderValue>,
    /// The credential: the first `Authorization`, else `api-key`, else
    /// `x-api-key` (Anthropic's SDKs send `x-api-key`, or with an auth
    /// token `Authorization`), with the rank of the header it came from
    /// (0 is first). One slot: the request's future holds this.
    credential: Option<(u8, &'a HeaderValue)>,
    content_type: Option<&'a HeaderValue>,
    anthropic_version: Option<&'a HeaderValue>,
    /// Every `anthropic-beta` value, in order (rare: allocated when sent).
    anthropic_beta: Vec<&'a str>,
    /// `Cache-Control: no-cache` (or `no-store`) in any of its values.
    no_cache: bool,
}

// `Asked::of` skips a header whose name starts otherwise.
const _: () = {
    let names = [
        MODE_HEADER,
        REPLAY_TIMING_HEADER,
        REPEATS_HEADER,
        NAMESPACE_HEADER,
    ];
    let mut i = 0;
    while i < names.len() {
        assert!(names[i].as_bytes()[0] == b'x');
        i += 1;
    }
};

/// Keeps the first value of the credential header of the best `rank`.
fn credential<'a>(slot: &mut Option<(u8, &'a HeaderValue)>, rank: u8, value: &'a HeaderValue) {
    if slot.is_none_or(|(held, _)| rank < held) {
        *slot = Some((rank, value));
    }
}

/// Keeps the first value of a header, as `HeaderMap::get` answers.
fn first<'a>(slot: &mut Option<&'a HeaderValue>, value: &'a HeaderValue) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

impl<'a> Asked<'a> {
    /// Reads `headers` once.
    pub fn of(headers: &'a HeaderMap) -> Asked<'a> {
        let mut asked = Asked::default();
        for (name, value) in headers {
            // Standard names compare as numbers; the others by their text.
            if name == header::AUTHORIZATION {
                credential(&mut asked.credential, 0, value);
            } else if name == header::CONTENT_TYPE {
                first(&mut asked.content_type, value);
            } else if name == header::CACHE_CONTROL {
                asked.no_cache |= is_no_cache(value);
            } else {
                let name = name.as_str();
                // Every other name asked for starts with `x` or `a`: most
                // headers (host, content-length, user-agent) stop here.
                if !matches!(name.as_bytes().first(), Some(b'x' | b'a')) {
                    continue;
                }
                match name {
                    MODE_HEADER => first(&mut asked.mode, value),
                    REPLAY_TIMING_HEADER => first(&mut asked.replay_timing, value),
                    REPEATS_HEADER => first(&mut asked.repeats, value),
                    NAMESPACE_HEADER => first(&mut asked.namespace, value),
                    "api-key" => credential(&mut asked.credential, 1, value),
                    "x-api-key" => credential(&mut asked.credential, 2, value),
                    // Sent by the Anthropic SDKs on every call.
                    "anthropic-version" => first(&mut asked.anthropic_version, value),
                    "anthropic-beta" => asked.anthropic_beta.extend(value.to_str().ok()),
                    _ => {}
                }
            }
        }
        asked
    }

    /// The mode for this request: `x-llmtape-mode`, else `default`.
    pub fn mode(&self, default: Mode) -> Result<Mode, ProxyError> {
        header_choice(
            self.mode,
            MODE_HEADER,
            default,
            "auto, record, replay, passthrough",
        )
    }

    /// The replay timing for this request: `x-llmtape-replay-timing`,
    /// else `default`.
    pub fn replay_timing(&self, default: Timing) -> Result<Timing, ProxyError> {
        header_choice(
            self.replay_timing,
            REPLAY_TIMING_HEADER,
            default,
            "instant, recorded",
        )
    }

    /// `x-llmtape-repeats` for this request, else `default`; a value it
    /// does not know is the caller's mistake (400).
    pub fn repeats(&self, default: Repeats) -> Result<Repeats, ProxyError> {
        header_choice(self.repeats, REPEATS_HEADER, default, "same, sequence")
    }

    /// `Cache-Control: no-cache` (or `no-store`) asks for a fresh recording.
    pub fn wants_no_cache(&self) -> bool {
        self.no_cache
    }

    /// The dialect of a request to `path` with these headers.
    pub fn dialect(&self, path: &str) -> Dialect {
        Dialect::of(path, self.anthropic_version.is_some())
    }

    /// What the key is computed from.
    pub fn key_parts(&self, parts: &'a Parts, body: &'a [u8]) -> RequestParts<'a> {
        let text = |value: Option<&'a HeaderValue>| value.and_then(|v| v.to_str().ok());
        RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            content_type: text(self.content_type),
            body,
            namespace: text(self.namespace),
            credential: self.credential.map(|(_, value)| value.as_bytes()),
            anthropic_version: text(self.anthropic_version),
            anthropic_beta: self.anthropic_beta.clone(),
        }
    }
}

/// A per-request override header: absent means `default`, anything that
/// does not parse is the caller's mistake (400), never silently ignored.
fn header_choice<T: std::str::FromStr>(
    value: Option<&HeaderValue>,
    header: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, ProxyError> {
    match value {
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

/// Whether one `Cache-Control` value holds `no-cache` or `no-store`.
fn is_no_cache(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store")
        })
    })
}

/// What the key is computed from.
pub fn key_parts<'a>(parts: &'a Parts, body: &'a [u8]) -> RequestParts<'a> {
    Asked::of(&parts.headers).key_parts(parts, body)
}

/// The path and query to forward.
pub fn path_and_query(parts: &Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
}

/// The dialect of a request, by its path and headers.
pub fn dialect_of(parts: &Parts) -> Dialect {
    Asked::of(&parts.headers).dialect(parts.uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_header_overrides_and_rejects_nonsense() {
        let mut headers = HeaderMap::new();
        assert_eq!(Asked::of(&headers).mode(Mode::Auto).unwrap(), Mode::Auto);
        headers.insert(MODE_HEADER, HeaderValue::from_static("replay"));
        assert_eq!(Asked::of(&headers).mode(Mode::Auto).unwrap(), Mode::Replay);
        headers.insert(MODE_HEADER, HeaderValue::from_static("sometimes"));
        assert!(Asked::of(&headers).mode(Mode::Auto).is_err());
    }

    #[test]
    fn one_pass_answers_as_get_does_in_small_and_large_maps() {
        for extra in [0usize, 3, 20] {
            let mut headers = HeaderMap::new();
            for i in 0..extra {
                let name =
                    http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                headers.insert(name, HeaderValue::from_static("f"));
            }
            assert_eq!(Asked::of(&headers).mode, None, "{extra}");
            headers.append(MODE_HEADER, HeaderValue::from_static("replay"));
            headers.append(MODE_HEADER, HeaderValue::from_static("record"));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
            headers.append("x-api-key", HeaderValue::from_static("k1"));
            headers.append("anthropic-beta", HeaderValue::from_static("b1"));
            headers.append("x-filler-last", HeaderValue::from_static("f"));
            headers.append("anthropic-beta", HeaderValue::from_static("b2,b3"));
            let asked = Asked::of(&headers);
            assert_eq!(asked.mode, headers.get(MODE_HEADER), "the first value");
            assert_eq!(asked.content_type, headers.get(header::CONTENT_TYPE));
            assert_eq!(asked.namespace, None);
            assert_eq!(
                asked.anthropic_beta,
                ["b1", "b2,b3"],
                "every value, in order"
            );
            assert_eq!(asked.mode(Mode::Auto).unwrap(), Mode::Replay);
            let (parts, ()) = http::Request::post("/v1/messages?beta=true")
                .body(())
                .unwrap()
                .into_parts();
            let mut parts = parts;
            parts.headers = headers.clone();
            let key = key_parts(&parts, b"{}");
            assert_eq!(
                key.credential,
                Some(&b"k1"[..]),
                "x-api-key without Authorization"
            );
            assert_eq!(key.query, Some("beta=true"));
            parts
                .headers
                .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
            assert_eq!(key_parts(&parts, b"{}").credential, Some(&b"Bearer a"[..]));
        }
    }

    #[test]
    fn the_credential_is_authorization_then_api_key_then_x_api_key_in_any_order() {
        let names = ["x-api-key", "api-key", "authorization"];
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            for present in 1..8u8 {
                let mut headers = HeaderMap::new();
                for &i in &order {
                    if present & (1 << i) != 0 {
                        let value = format!("{}-first", names[i]);
                        headers.append(names[i], HeaderValue::from_str(&value).unwrap());
                        headers.append(names[i], HeaderValue::from_static("second"));
                    }
                }
                let expected = [2, 1, 0]
                    .into_iter()
                    .find(|&i| present & (1 << i) != 0)
                    .map(|i| format!("{}-first", names[i]));
                let got = Asked::of(&headers)
                    .credential
                    .map(|(_, v)| v.to_str().unwrap().to_string());
                assert_eq!(got, expected, "{order:?} {present:03b}");
            }
        }
    }

    #[test]
    fn a_bad_override_names_its_header() {
        let mut headers = HeaderMap::new();
        headers.insert(REPEATS_HEADER, HeaderValue::from_static("twice"));
        let error = Asked::of(&headers).repeats(Repeats::Same).unwrap_err();
        assert!(error.to_string().contains(REPEATS_HEADER), "{error}");
    }

    #[test]
    fn no_cache_is_found_among_directives() {
        let mut headers = HeaderMap::new();
        assert!(!Asked::of(&headers).wants_no_cache());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(Asked::of(&headers).wants_no_cache());
    }
}
