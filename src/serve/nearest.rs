//! Explaining a replay miss: the nearest recording for the same route and
//! namespace, and the JSON paths where the request differs from it.

use http::header::HeaderValue;
use http::request::Parts;

use crate::diff;
use crate::key::{Canonical, RequestKey};
use crate::route::Dialect;
use crate::serve::answer::Answer;
use crate::serve::error::ProxyError;
use crate::serve::headers::MISS_NEAREST_HEADER;
use crate::serve::proxy::Proxy;

use crate::record::recording::{RecordedRequest, RequestBody};
use crate::store::Tier;

/// A replay miss compares the request with at most this many recordings
/// to find the nearest; misses are rare and this bounds their cost.
const NEAREST_SCAN_LIMIT: usize = 10_000;

/// How many differing paths a miss message lists.
const NEAREST_PATHS_SHOWN: usize = 8;

/// The recording closest to a missed request.
pub struct Nearest {
    /// Its key.
    pub key: RequestKey,
    /// When it was recorded.
    pub recorded_at: String,
    /// JSON pointers where the missed request differs from it.
    pub paths: Vec<String>,
}

impl Nearest {
    fn shown_paths(&self) -> String {
        let mut shown = self.paths[..self.paths.len().min(NEAREST_PATHS_SHOWN)].join(", ");
        if self.paths.len() > NEAREST_PATHS_SHOWN {
            shown.push_str(", ...");
        }
        shown
    }

    /// For the error message.
    pub fn describe(&self) -> String {
        if self.paths.is_empty() {
            format!(
                "{} (same request; recorded under another key: scope or ignore_fields differ)",
                self.key
            )
        } else {
            format!("{}, which differs at {}", self.key, self.shown_paths())
        }
    }

    /// For the `x-llmtape-miss-nearest` header: `KEY PATH,PATH`.
    pub fn header(&self) -> String {
        format!("{} {}", self.key, self.paths.join(","))
    }
}

/// The recording for the same method, path and namespace whose request
/// differs from `canonical` in the fewest JSON paths.
pub fn nearest(recordings: &dyn Tier, canonical: &Canonical) -> Option<Nearest> {
    let wanted = RecordedRequest::from_canonical(canonical);
    recordings
        .sample(NEAREST_SCAN_LIMIT)
        .into_iter()
        .filter(|e| {
            let r = &e.meta.request;
            r.method == wanted.method && r.path == wanted.path && r.namespace == wanted.namespace
        })
        .map(|e| {
            let r = &e.meta.request;
            let mut paths = match (&wanted.body, &r.body) {
                (RequestBody::Json(a), RequestBody::Json(b)) => diff::differing_paths(b, a),
                (a, b) if a == b => Vec::new(),
                _ => vec!["(body)".to_string()],
            };
            if r.query != wanted.query {
                paths.insert(0, "(query)".to_string());
            }
            // `anthropic-version` or `anthropic-beta` differ.
            for (name, _) in wanted.headers.iter().chain(&r.headers) {
                let value = |h: &[(String, String)]| {
                    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
                };
                let path = format!("(header {name})");
                if value(&wanted.headers) != value(&r.headers) && !paths.contains(&path) {
                    paths.insert(0, path);
                }
            }
            Nearest {
                key: e.meta.key,
                recorded_at: e.meta.recorded_at.clone(),
                paths,
            }
        })
        .min_by(|a, b| {
            a.paths
                .len()
                .cmp(&b.paths.len())
                .then_with(|| b.recorded_at.cmp(&a.recorded_at))
        })
}

impl Proxy {
    /// The 404 for a replay-mode miss, naming the nearest recording.
    pub(super) fn replay_miss(
        &self,
        parts: &Parts,
        canonical: &Canonical,
        key: &RequestKey,
        dialect: Dialect,
    ) -> Answer {
        let nearest = nearest(self.tier(), canonical);
        let error = ProxyError::ReplayMiss {
            key: key.to_hex(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            nearest: nearest.as_ref().map(Nearest::describe),
        };
        let mut answer = Answer::error_in(dialect, &error, Some(key));
        answer.nearest = nearest.as_ref().map(|n| n.key);
        if let Some(value) = nearest.and_then(|n| HeaderValue::from_str(&n.header()).ok()) {
            answer
                .response
                .headers_mut()
                .insert(MISS_NEAREST_HEADER, value);
        }
        answer
    }
}
