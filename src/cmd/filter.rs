//! Which recordings a command works on (`export`, `verify`, `prune`): by
//! namespace, route and model.

use crate::record::recording::{Recording, RequestBody};
use crate::route::Route;

/// Which recordings to work on; every field that is set must match.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this route: a name (`chat.completions`) or a path.
    pub route: Option<String>,
    /// Only this model.
    pub model: Option<String>,
}

impl Filter {
    /// True when `entry` passes every filter that is set. The model matches
    /// the answer's model or the one the request asked for, since
    /// upstreams answer `gpt-4o` with `gpt-4o-2024-08-06`.
    pub fn keeps(&self, entry: &Recording) -> bool {
        let r = &entry.meta.request;
        if self.namespace.as_ref().is_some_and(|ns| *ns != r.namespace) {
            return false;
        }
        if let Some(route) = &self.route {
            let method =
                http::Method::from_bytes(r.method.as_bytes()).unwrap_or(http::Method::POST);
            let name = Route::classify(&method, &r.path).map(Route::as_str);
            if name != Some(route.as_str()) && r.path != *route {
                return false;
            }
        }
        if let Some(model) = &self.model {
            let requested = match &r.body {
                RequestBody::Json(v) => v.get("model").and_then(|m| m.as_str()),
                _ => None,
            };
            if entry.meta.model.as_deref() != Some(model.as_str())
                && requested != Some(model.as_str())
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;

    #[test]
    fn every_set_field_must_match() {
        let mut entry = test_entry(&"ab".repeat(32), "{}", "fp", Some("gpt-4o-2024"), "t");
        entry.meta.request.body = RequestBody::Json(serde_json::json!({"model": "gpt-4o"}));
        entry.meta.request.namespace = "suite".into();
        let keeps = |filter: Filter| filter.keeps(&entry);
        assert!(keeps(Filter::default()));
        let by = |namespace: Option<&str>, route: Option<&str>, model: Option<&str>| Filter {
            namespace: namespace.map(String::from),
            route: route.map(String::from),
            model: model.map(String::from),
        };
        assert!(keeps(by(Some("suite"), None, None)));
        assert!(!keeps(by(Some(""), None, None)));
        assert!(keeps(by(None, Some("chat.completions"), None)));
        assert!(keeps(by(None, Some("/v1/chat/completions"), None)));
        assert!(!keeps(by(None, Some("embeddings"), None)));
        assert!(
            keeps(by(None, None, Some("gpt-4o-2024"))),
            "the answer's model"
        );
        assert!(keeps(by(None, None, Some("gpt-4o"))), "the requested model");
        assert!(!keeps(by(None, None, Some("gpt-3.5"))));
        assert!(!keeps(by(
            Some("suite"),
            Some("chat.completions"),
            Some("gpt-3.5")
        )));
    }
}
