//! `llmtape key explain`: the canonical form of one request, the route it
//! is on and the key it hashes to, so a user can see why two requests do
//! (or do not) share a recording, and whether the proxy caches it at all.
//!
//! Reducing a request is [`crate::key`]'s job; this module only prints it.

use std::io::Write;

use crate::config::{KeyConfig, Scope};
use crate::error::CommandError;
use crate::key::{
    canonical_json, Canonical, CanonicalBody, KeyRules, RequestParts, CANONICAL_VERSION,
};
use crate::route::Routes;

/// The request around the body (read from stdin by the dispatcher).
#[derive(Debug, Clone)]
pub struct Options {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Query string without `?` ("" when none).
    pub query: String,
    /// The `x-llmtape-namespace` header.
    pub namespace: Option<String>,
    /// Content type of the body (only multipart bodies need it).
    pub content_type: Option<String>,
}

/// Why the key printed is not the one the proxy would store under.
const API_KEY_SCOPE_NOTE: &str = "key.scope = \"api-key\" mixes a hash of the caller's key into the real key; this one is computed without it";

/// Reduces the request under the configured key rules and prints its
/// canonical form, its route under the configured `routes` and its key. No
/// credential is read, so with `key.scope = "api-key"` a note says the
/// real key differs.
pub fn run(
    options: &Options,
    key: &KeyConfig,
    routes: &Routes,
    body: &[u8],
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let rules = KeyRules {
        per_credential: false,
        ..key.rules()
    };
    let canonical = Canonical::new(
        &RequestParts {
            method: &options.method,
            path: &options.path,
            query: Some(&options.query),
            content_type: options.content_type.as_deref(),
            body,
            namespace: options.namespace.as_deref(),
            credential: None,
            anthropic_version: None,
            anthropic_beta: Vec::new(),
        },
        &rules,
    );
    let note = (key.scope == Scope::ApiKey).then_some(API_KEY_SCOPE_NOTE);
    let route = route_line(options, routes);
    print(&canonical, &rules, &route, note, out)
}

/// The route a request is on, and what the proxy does with it.
fn route_line(options: &Options, routes: &Routes) -> String {
    let method = http::Method::from_bytes(options.method.to_ascii_uppercase().as_bytes()).ok();
    let path = &options.path;
    let on = |method: &http::Method| {
        (
            routes.identify(method, path),
            routes.bypassed_by(method, path),
        )
    };
    match method.as_ref().map_or((None, None), on) {
        (Some(id), None) => format!("{} (cached)", routes.name(id)),
        (Some(id), Some(entry)) => format!(
            "{} passed through, never cached ([routes] bypass \"{entry}\")",
            routes.name(id)
        ),
        (None, Some(entry)) => {
            format!("(none) passed through, never cached ([routes] bypass \"{entry}\")")
        }
        (None, None) => {
            "(none) passed through, never cached; add it to [routes] cache to record it".to_string()
        }
    }
}

fn print(
    canonical: &Canonical,
    rules: &KeyRules,
    route: &str,
    note: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let or_none = |text: &str| {
        if text.is_empty() {
            "(none)".to_string()
        } else {
            text.to_string()
        }
    };
    writeln!(out, "canonical form (version {CANONICAL_VERSION}):")?;
    writeln!(out, "  method:    {}", canonical.method)?;
    writeln!(out, "  path:      {}", canonical.path)?;
    writeln!(out, "  query:     {}", or_none(&canonical.query))?;
    writeln!(out, "  namespace: {}", or_none(&canonical.namespace))?;
    match &canonical.body {
        CanonicalBody::Empty => writeln!(out, "  body:      (empty)")?,
        CanonicalBody::Json(value) => writeln!(
            out,
            "  body:      json {}",
            String::from_utf8_lossy(&canonical_json(value))
        )?,
        CanonicalBody::Multipart(parts) => writeln!(
            out,
            "  body:      multipart, {} part(s), keyed without the boundary",
            parts.len()
        )?,
        CanonicalBody::Bytes(bytes) => writeln!(
            out,
            "  body:      {} bytes, not JSON: hashed as bytes",
            bytes.len()
        )?,
    }
    let presets: Vec<&str> = rules.presets.iter().map(|p| p.as_str()).collect();
    if presets.is_empty() {
        writeln!(out, "presets:     (none)")?;
    } else {
        writeln!(out, "presets:     {}", presets.join(", "))?;
    }
    if canonical.removed.is_empty() {
        writeln!(
            out,
            "removed:     (nothing; no preset or key.ignore_fields pointer matched)"
        )?;
    }
    for (i, removed) in canonical.removed.iter().enumerate() {
        let label = if i == 0 { "removed:" } else { "" };
        writeln!(out, "{label:<12} {} by {}", removed.pointer, removed.by)?;
    }
    writeln!(out, "route:       {route}")?;
    if let Some(note) = note {
        writeln!(out, "note:        {note}")?;
    }
    writeln!(out, "key:         {}", canonical.key())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn options() -> Options {
        Options {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            query: String::new(),
            namespace: None,
            content_type: None,
        }
    }

    fn render(options: &Options, key: &KeyConfig, body: &[u8]) -> String {
        render_routes(options, key, &Routes::default(), body)
    }

    fn render_routes(options: &Options, key: &KeyConfig, routes: &Routes, body: &[u8]) -> String {
        let mut out = Vec::new();
        run(options, key, routes, body, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prints_the_canonical_form_and_a_key_that_ignores_spacing_and_order() {
        let key = Config::defaults().key;
        let text = render(&options(), &key, br#"{"model": "m", "n": 1}"#);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..9],
            [
                "canonical form (version 1):",
                "  method:    POST",
                "  path:      /v1/chat/completions",
                "  query:     (none)",
                "  namespace: (none)",
                r#"  body:      json {"model":"m","n":1}"#,
                "presets:     claude-code",
                "removed:     (nothing; no preset or key.ignore_fields pointer matched)",
                "route:       chat.completions (cached)",
            ]
        );
        assert!(lines[9].starts_with("key:         "), "{text}");
        assert_eq!(lines.len(), 10);
        let reordered = render(&options(), &key, br#"{"n":1,"model":"m"}"#);
        assert_eq!(reordered, text, "same canonical form, same key");
    }

    #[test]
    fn ignored_fields_namespace_and_the_api_key_scope_are_shown() {
        let mut key = Config::defaults().key;
        key.ignore_fields = vec!["/user".into()];
        key.scope = Scope::ApiKey;
        let mut options = options();
        options.namespace = Some("suite-a".into());
        options.query = "b=2&a=1".into();
        let text = render(&options, &key, br#"{"model":"m","user":"u1"}"#);
        assert!(text.contains("\n  query:     a=1&b=2\n"), "{text}");
        assert!(text.contains("\n  namespace: suite-a\n"), "{text}");
        assert!(
            text.contains("\nremoved:     /user by key.ignore_fields\n"),
            "{text}"
        );
        assert!(text.contains(&format!("\nnote:        {API_KEY_SCOPE_NOTE}\n")));
        let text = render(&options, &key, b"not json");
        assert!(
            text.contains("  body:      8 bytes, not JSON: hashed as bytes"),
            "{text}"
        );
    }

    #[test]
    fn each_preset_and_pointer_is_named_with_what_it_removed() {
        let mut key =
            Config::from_toml("[key]\npresets = [\"claude-code\", \"openai-defaults\"]\n")
                .unwrap()
                .key;
        key.ignore_fields = vec!["/user".into(), "/absent".into()];
        let mut options = options();
        options.path = "/v1/messages".into();
        let body = br#"{"model":"claude","stream":false,"user":"u",
            "system":[{"type":"text","text":"x-anthropic-billing-header: cch=1;"},{"type":"text","text":"Be brief."}],
            "metadata":{"user_id":"session-9"},"messages":[]}"#;
        let text = render(&options, &key, body);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[6], "presets:     claude-code, openai-defaults");
        assert_eq!(
            lines[7..11],
            [
                "removed:     /system/0 by preset claude-code",
                "             /metadata/user_id by preset claude-code",
                "             /stream by preset openai-defaults",
                "             /user by key.ignore_fields",
            ]
        );
        assert!(
            lines[5].contains(r#""system":[{"text":"Be brief.","type":"text"}]"#),
            "{text}"
        );
    }

    #[test]
    fn the_route_says_whether_the_proxy_caches_the_request() {
        let key = Config::defaults().key;
        let routes = Config::from_toml(
            "[routes]\ncache = [\"POST /v2/*\"]\nbypass = [\"POST /v1/moderations\"]\n",
        )
        .unwrap()
        .routes;
        let route = |path: &str| {
            let mut options = options();
            options.path = path.into();
            let text = render_routes(&options, &key, &routes, b"{}");
            text.lines()
                .find_map(|l| l.strip_prefix("route:       "))
                .map(String::from)
                .unwrap_or_else(|| panic!("no route line in {text}"))
        };
        assert_eq!(route("/v1/audio/speech"), "audio.speech (cached)");
        assert_eq!(route("/v2/rerank"), "/v2/* (cached)");
        assert_eq!(
            route("/v1/moderations"),
            "moderations passed through, never cached ([routes] bypass \"POST /v1/moderations\")"
        );
        assert!(
            route("/v1/files").starts_with("(none) passed through"),
            "{}",
            route("/v1/files")
        );
    }
}
