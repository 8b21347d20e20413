//! `llmtape key explain`: the canonical form of one request and the key
//! it hashes to, so a user can see why two requests do (or do not) share a
//! recording.
//!
//! Reducing a request is [`crate::key`]'s job; this module only prints it.

use std::io::Write;

use crate::config::{KeyConfig, Scope};
use crate::error::CommandError;
use crate::key::{
    canonical_json, Canonical, CanonicalBody, KeyRules, RequestParts, CANONICAL_VERSION,
};

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
/// canonical form and key. No credential is read, so with
/// `key.scope = "api-key"` a note says the real key differs.
pub fn run(
    options: &Options,
    key: &KeyConfig,
    body: &[u8],
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let rules = KeyRules {
        ignore_fields: key.ignore_fields.clone(),
        per_credential: false,
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
        },
        &rules,
    );
    let note = (key.scope == Scope::ApiKey).then_some(API_KEY_SCOPE_NOTE);
    print(&canonical, note, out)
}

fn print(
    canonical: &Canonical,
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
    if canonical.ignored.is_empty() {
        writeln!(
            out,
            "ignored:     (nothing; key.ignore_fields matched no field)"
        )?;
    } else {
        writeln!(out, "ignored:     {}", canonical.ignored.join(", "))?;
    }
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
        let mut out = Vec::new();
        run(options, key, body, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prints_the_canonical_form_and_a_key_that_ignores_spacing_and_order() {
        let key = Config::defaults().key;
        let text = render(&options(), &key, br#"{"model": "m", "n": 1}"#);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..7],
            [
                "canonical form (version 1):",
                "  method:    POST",
                "  path:      /v1/chat/completions",
                "  query:     (none)",
                "  namespace: (none)",
                r#"  body:      json {"model":"m","n":1}"#,
                "ignored:     (nothing; key.ignore_fields matched no field)",
            ]
        );
        assert!(lines[7].starts_with("key:         "), "{text}");
        assert_eq!(lines.len(), 8);
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
        assert!(text.contains("\nignored:     /user\n"), "{text}");
        assert!(text.contains(&format!("\nnote:        {API_KEY_SCOPE_NOTE}\n")));
        let text = render(&options, &key, b"not json");
        assert!(
            text.contains("  body:      8 bytes, not JSON: hashed as bytes"),
            "{text}"
        );
    }
}
