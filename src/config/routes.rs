//! `[routes]`: more routes to cache (`cache`) and built-in ones to pass
//! through (`bypass`), each entry a [`RoutePattern`]. Its own file, both
//! stages: the raw lists and their validation into [`Routes`].

use serde::Deserialize;

use crate::route::{RoutePattern, Routes};

/// `[routes]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawRoutes {
    pub cache: Option<Vec<String>>,
    pub bypass: Option<Vec<String>>,
}

/// The keys `[routes]` may hold.
pub(super) const ROUTES_KEYS: &[&str] = &["cache", "bypass"];

/// Validates `[routes]`; each malformed entry becomes a problem naming its
/// list, the entry and the fix.
pub(super) fn routes_from_raw(raw: RawRoutes, problems: &mut Vec<String>) -> Routes {
    let mut parse = |list: &str, entries: Option<Vec<String>>| -> Vec<RoutePattern> {
        entries
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| {
                RoutePattern::parse(entry)
                    .map_err(|e| problems.push(format!("routes.{list}: {e}")))
                    .ok()
            })
            .collect()
    };
    Routes {
        cache: parse("cache", raw.cache),
        bypass: parse("bypass", raw.bypass),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use http::Method;

    #[test]
    fn routes_parse_into_cache_and_bypass_lists() {
        let config = Config::from_toml(
            "[routes]\ncache = [\"POST /v1/rerank\", \"POST /v2/*\"]\nbypass = [\"POST /v1/moderations\"]\n",
        )
        .unwrap();
        let routes = &config.routes;
        assert_eq!(routes.cache.len(), 2);
        assert!(routes.classify(&Method::POST, "/v2/score").is_some());
        assert!(routes.classify(&Method::POST, "/v1/moderations").is_none());
        assert!(Config::defaults().routes.cache.is_empty());
    }

    #[test]
    fn every_bad_entry_is_named_in_one_line() {
        let err = Config::from_toml(
            "[routes]\ncache = [\"/v1/rerank\", \"POST /v2/*/x\"]\nbypass = [\"FETCH /v1/moderations\"]\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "routes.cache: \"/v1/rerank\" has no method",
            "routes.cache: \"POST /v2/*/x\": * may only end the path",
            "routes.bypass: \"FETCH /v1/moderations\"",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        assert!(!err.contains('\n'), "{err}");
        let err = Config::from_toml("[routes]\ncached = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `routes.cached`"), "{err}");
        assert!(err.contains("cache, bypass"), "{err}");
    }
}
