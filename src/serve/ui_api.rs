//! The web view's JSON endpoints, under `/_llmtape/api/` (GET only, the
//! admin access rules of `crate::serve::admin`, which admits and routes
//! them here):
//!
//! - `stats`: the live counters since the proxy started (hits, misses,
//!   tokens and cost saved, per model) and the store's size;
//! - `recordings`: a page of the list, filtered and newest first, from the
//!   in-memory rows of `crate::serve::catalog`;
//! - `recordings/KEY`: one recording whole (KEY: a unique hex prefix);
//! - `fingerprints`: per model, each fingerprint's first and last sighting;
//! - `audit`: the `audit --json` document with the diffs as data.
//!
//! The contract (field names, errors) is in the README's "The web view's
//! JSON API". The
//! endpoints read the store, so they run on a blocking thread.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::audit::{summarize, Report};
use crate::body::{json_response, ProxyBody};
use crate::record::recording::{Recording, RequestBody};
use crate::record::redact::Sensitive;
use crate::record::sse;
use crate::serve::admin::{self, AdminView, API_PREFIX};
use crate::serve::catalog::{Lookup, Query, MAX_LIMIT};
use crate::serve::metrics::LiveStats;
use crate::serve::proxy::{Proxy, Shared};
use crate::store::TierError;
use crate::summary::{answer_text, first_chars, Interner, Row, PREVIEW_CHARS};

/// Rows a list request gives when it names no `limit`.
const DEFAULT_LIMIT: usize = 50;

impl Proxy {
    /// Answers `/_llmtape/...` (the command endpoint aside).
    pub(super) async fn admin(&self, parts: Parts) -> Response<ProxyBody> {
        let s = &self.shared;
        let view = AdminView {
            mode: s.mode,
            upstream: s.upstream.display(),
            anthropic_upstream: s.anthropic.display(),
            recordings: s.tier.count(),
            metrics: &s.metrics,
            token: s.admin_token.as_ref().map(|Sensitive(t)| t.as_str()),
            runs: &s.runs,
            remote: s.remote.get().map_or("off", |t| t.remote().state()),
            remote_metrics: s
                .remote
                .get()
                .map(|t| crate::store::tiered::render_metrics(t))
                .unwrap_or_default(),
        };
        if let Some(response) = admin::respond(&parts, &view) {
            return response;
        }
        if parts.method != Method::GET {
            return admin::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{} is read-only: send GET", parts.uri.path()),
            );
        }
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || api(&shared, &parts)).await {
            Ok(response) => response,
            Err(error) => {
                tracing::error!(%error, "a web view request failed");
                admin::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the request failed inside llmtape; see its log",
                )
            }
        }
    }
}

/// Answers one request under [`API_PREFIX`].
fn api(s: &Arc<Shared>, parts: &Parts) -> Response<ProxyBody> {
    let path = parts.uri.path();
    let rest = path.strip_prefix(API_PREFIX).unwrap_or("");
    let params = match parse_query(parts.uri.query().unwrap_or("")) {
        Ok(params) => params,
        Err(message) => return admin::error(StatusCode::BAD_REQUEST, "invalid_query", &message),
    };
    let result = match rest {
        "stats" => Ok(ok(stats(s))),
        "recordings" => match list_query(&params) {
            Ok(query) => list(s, &query),
            Err(message) => {
                return admin::error(StatusCode::BAD_REQUEST, "invalid_query", &message)
            }
        },
        "fingerprints" => fingerprints(s),
        "audit" => audit(s),
        _ => match rest.strip_prefix("recordings/") {
            Some(prefix) if !prefix.is_empty() && !prefix.contains('/') => {
                recording(s, &percent_decode(prefix).unwrap_or_default())
            }
            _ => Ok(admin::error(
                StatusCode::NOT_FOUND,
                "unknown_admin_endpoint",
                &format!("no llmtape admin endpoint {path}; the API has stats, recordings, recordings/KEY, fingerprints and audit"),
            )),
        },
    };
    result.unwrap_or_else(|error| {
        tracing::error!(%error, "the web view could not read the store");
        admin::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            &format!("cannot read the recordings: {error}"),
        )
    })
}

fn ok(body: Value) -> Response<ProxyBody> {
    json_response(StatusCode::OK, body.to_string())
}

/// `stats`: the live counters.
fn stats(s: &Shared) -> Value {
    serde_json::to_value(s.live_stats()).expect("the counters always serialise")
}

impl Shared {
    /// The live counters now.
    pub(super) fn live_stats(&self) -> LiveStats {
        self.metrics.live(self.mode.as_str(), self.tier.count())
    }
}

/// The list query from the parameters.
fn list_query(params: &[(String, String)]) -> Result<Query, String> {
    let mut query = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for (name, value) in params {
        let number = |name: &str| {
            value
                .parse::<usize>()
                .map_err(|_| format!("{name}={value:?} is not a number; write e.g. {name}=50"))
        };
        match name.as_str() {
            "offset" => query.offset = number("offset")?,
            "limit" => {
                query.limit = number("limit")?;
                if query.limit == 0 || query.limit > MAX_LIMIT {
                    return Err(format!("limit={value} is out of range; ask for 1 to {MAX_LIMIT} rows"));
                }
            }
            "route" => query.route = Some(value.clone()),
            "model" => query.model = Some(value.clone()),
            "namespace" => query.namespace = Some(value.clone()),
            "fingerprint" => query.fingerprint = Some(value.clone()),
            "q" => query.q = Some(value.clone()).filter(|q| !q.is_empty()),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; the list takes offset, limit, route, model, namespace, fingerprint and q"
                ))
            }
        }
    }
    Ok(query)
}

/// `recordings`: one page of rows.
fn list(s: &Shared, query: &Query) -> Result<Response<ProxyBody>, TierError> {
    let page = s
        .catalog
        .with_rows(s.tier.as_ref(), &s.routes, |rows| rows.page(query))?;
    let [routes, models, namespaces, fingerprints] = page.facets;
    Ok(ok(json!({
        "total": page.total,
        "offset": query.offset,
        "limit": query.limit,
        "items": page.items.iter().map(Row::to_json).collect::<Vec<_>>(),
        "facets": {
            "routes": routes,
            "models": models,
            "namespaces": namespaces,
            "fingerprints": fingerprints,
        },
    })))
}

/// `recordings/KEY`: one recording whole.
fn recording(s: &Shared, prefix: &str) -> Result<Response<ProxyBody>, TierError> {
    let found = s.catalog.with_rows(s.tier.as_ref(), &s.routes, |rows| {
        rows.find(prefix)
            .map(|row| (row.key, row.route.to_string()))
    })?;
    let unknown = || {
        admin::error(
            StatusCode::NOT_FOUND,
            "unknown_key",
            &format!("no recording has a key starting with {prefix}"),
        )
    };
    let (key, route) = match found {
        Ok(found) => found,
        Err(Lookup::NotHex) => {
            return Ok(admin::error(
                StatusCode::NOT_FOUND,
                "unknown_key",
                &format!("{prefix:?} is not a key prefix: keys are hex"),
            ))
        }
        Err(Lookup::Unknown) => return Ok(unknown()),
        Err(Lookup::Ambiguous(count, keys)) => {
            return Ok(admin::error(
                StatusCode::CONFLICT,
                "ambiguous_key",
                &format!(
                    "{prefix} matches {count} recordings ({}{}); give more characters",
                    keys.join(", "),
                    if count > keys.len() { ", ..." } else { "" }
                ),
            ))
        }
    };
    // Removed since the rows were made.
    let Some(entry) = s.tier.get(&key)? else {
        return Ok(unknown());
    };
    let history = s.tier.history(&key)?;
    let item = Row::of(&entry, &route, history.len(), &mut Interner::default());
    let meta = &entry.meta;
    let request_body = match &meta.request.body {
        RequestBody::Empty => Value::Null,
        RequestBody::Json(value) => value.clone(),
        RequestBody::Text(text) | RequestBody::Base64(text) => Value::String(text.clone()),
    };
    let (body, events) = match &meta.stream {
        None => (
            serde_json::from_slice::<Value>(&entry.body)
                .unwrap_or_else(|_| String::from_utf8_lossy(&entry.body).into_owned().into()),
            Value::Null,
        ),
        Some(_) => (Value::Null, events_json(&entry)),
    };
    Ok(ok(json!({
        "item": item.to_json(),
        "request": {
            "method": meta.request.method,
            "path": meta.request.path,
            "query": meta.request.query,
            "headers": meta.request.headers,
            "body": request_body,
        },
        "response": {
            "status": meta.response.status,
            "headers": meta.response.headers,
            "body": body,
        },
        "events": events,
        "history": history.iter().map(|h| json!({
            "recorded_at": h.meta.recorded_at,
            "fingerprint": h.meta.fingerprint(),
            "preview": first_chars(&answer_text(h), PREVIEW_CHARS),
        })).collect::<Vec<_>>(),
    })))
}

/// A stream's events: when each arrived, its name and its data.
fn events_json(entry: &Recording) -> Value {
    entry
        .events()
        .iter()
        .map(|(offset_ms, event)| {
            let (name, data) = sse::fields(event);
            json!({"offset_ms": offset_ms, "event": name, "data": data})
        })
        .collect()
}

/// Every current recording with its history (unreadable ones skipped).
fn everything(s: &Shared) -> Result<Vec<(Recording, Vec<Recording>)>, TierError> {
    let tier = s.tier.as_ref();
    let mut all = Vec::new();
    for item in tier.iter() {
        match item {
            Ok(entry) => {
                let history = tier.history(&entry.key())?;
                all.push((entry, history));
            }
            Err(error) if error.is_corrupt() => {
                tracing::warn!(%error, "the web view skips an unreadable recording")
            }
            Err(error) => return Err(error),
        }
    }
    Ok(all)
}

/// `fingerprints`: per model, the fingerprints of every recording and its
/// history, as `audit` counts them.
fn fingerprints(s: &Shared) -> Result<Response<ProxyBody>, TierError> {
    let doc = s.catalog.cached("fingerprints", s.tier.as_ref(), || {
        fingerprints_of(&everything(s)?)
    })?;
    Ok(json_response(StatusCode::OK, doc.to_string()))
}

fn fingerprints_of(all: &[(Recording, Vec<Recording>)]) -> Result<Value, TierError> {
    let recordings: Vec<&Recording> = all
        .iter()
        .flat_map(|(entry, history)| history.iter().chain(std::iter::once(entry)))
        .collect();
    let models: Vec<Value> = summarize(&recordings, &[])
        .into_iter()
        .map(|m| json!({"model": m.model, "fingerprints": m.fingerprints}))
        .collect();
    Ok(json!({ "models": models }))
}

/// `audit`: the `audit --json` document, with texts and diff segments.
fn audit(s: &Shared) -> Result<Response<ProxyBody>, TierError> {
    let doc = s.catalog.cached("audit", s.tier.as_ref(), || {
        let all = everything(s)?;
        let source = s.tier.location().display().to_string();
        Ok::<_, TierError>(Report::of(&all, None, None).document_with_texts(&source))
    })?;
    Ok(json_response(StatusCode::OK, doc.to_string()))
}

/// The query string as decoded `(name, value)` pairs.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(name), percent_decode(value)) {
                (Some(name), Some(value)) => Ok((name, value)),
                _ => Err(format!(
                    "{pair:?} is not percent-encoded UTF-8; encode the parameter with encodeURIComponent"
                )),
            }
        })
        .collect()
}

/// `%XX` escapes and `+` (a space) decoded; `None` when an escape is
/// broken or the bytes are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded_and_checked() {
        let params = parse_query("q=caf%C3%A9+au+lait&model=gpt-4o&&route=").unwrap();
        assert_eq!(
            params,
            [
                ("q".to_string(), "café au lait".to_string()),
                ("model".into(), "gpt-4o".into()),
                ("route".into(), "".into()),
            ]
        );
        assert!(parse_query("q=%zz").is_err());
        assert!(parse_query("q=%C3").is_err(), "not UTF-8");
        let query = list_query(&parse_query("offset=10&limit=500&q=").unwrap()).unwrap();
        assert_eq!((query.offset, query.limit, query.q), (10, 500, None));
        assert_eq!(list_query(&[]).unwrap().limit, DEFAULT_LIMIT);
        for bad in ["limit=501", "limit=0", "offset=-1", "limit=ten", "sort=asc"] {
            let error = list_query(&parse_query(bad).unwrap()).unwrap_err();
            assert!(!error.contains('\n') && !error.is_empty(), "{bad}: {error}");
        }
    }
}
