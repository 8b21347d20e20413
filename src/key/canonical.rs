//! The canonical form of a request and its hash: the body parsed and
//! normalised (JSON with sorted keys and normalised numbers, multipart by
//! its parts, anything else as bytes), ignored fields removed, the query
//! sorted, then every part length-prefixed into blake3.

use serde_json::{Map, Number, Value};

use crate::key::multipart::{multipart_boundary, split_multipart, FormPart};
use crate::key::{By, KeyRules, Removed, RequestKey, RequestParts};

/// blake3 `derive_key` context; must change whenever canonicalisation does.
const KEY_CONTEXT: &str = "llmtape 2026-11-22 request key v1";

/// Context for hashing a caller's credential into the key (`scope = "api-key"`).
const TENANT_CONTEXT: &str = "llmtape 2026-11-22 tenant v1";

/// How the body was understood.
#[derive(Debug, Clone, PartialEq)]
pub enum CanonicalBody {
    /// No body at all.
    Empty,
    /// A JSON document, with ignored fields removed.
    Json(Value),
    /// A multipart form: each part's name, filename, content type and bytes.
    Multipart(Vec<FormPart>),
    /// Anything else, hashed as bytes.
    Bytes(Vec<u8>),
}

/// The canonical form of a request, from which its key is derived.
#[derive(Debug, Clone)]
pub struct Canonical {
    /// Uppercase method.
    pub method: String,
    /// Path as received.
    pub path: String,
    /// Query pairs sorted and joined with `&`.
    pub query: String,
    /// The body in canonical form.
    pub body: CanonicalBody,
    /// Namespace ("" when none).
    pub namespace: String,
    /// Hash of the caller's credential with `scope = "api-key"`.
    pub tenant: Option<[u8; 32]>,
    /// What the presets and `ignore_fields` removed, in that order.
    pub removed: Vec<Removed>,
    /// The request headers in the key, `(name, value)` sorted by name:
    /// `anthropic-beta` (its betas sorted and deduplicated, joined by
    /// `,`) and `anthropic-version`, each only when sent.
    pub headers: Vec<(String, String)>,
}

impl Canonical {
    /// Reduces a request to its canonical form.
    pub fn new(parts: &RequestParts<'_>, rules: &KeyRules) -> Canonical {
        let mut removed = Vec::new();
        let body = canonical_body(parts, rules, &mut removed);
        Canonical {
            method: parts.method.to_ascii_uppercase(),
            path: parts.path.to_string(),
            query: sorted_query(parts.query.unwrap_or("")),
            body,
            namespace: parts.namespace.unwrap_or("").to_string(),
            tenant: if rules.per_credential {
                Some(tenant_hash(parts.credential.unwrap_or(b"")))
            } else {
                None
            },
            removed,
            headers: keyed_headers(parts),
        }
    }

    /// The key: blake3 over the length-prefixed parts.
    pub fn key(&self) -> RequestKey {
        let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(self.method.as_bytes());
        field(self.path.as_bytes());
        field(self.query.as_bytes());
        match &self.body {
            CanonicalBody::Empty => field(b"empty"),
            CanonicalBody::Json(value) => {
                field(b"json");
                field(&canonical_json(value));
            }
            CanonicalBody::Multipart(parts) => {
                field(b"multipart");
                field(&(parts.len() as u64).to_le_bytes());
                for part in parts {
                    field(&(part.headers.len() as u64).to_le_bytes());
                    for header in &part.headers {
                        field(header.as_bytes());
                    }
                    field(&part.content);
                }
            }
            CanonicalBody::Bytes(bytes) => {
                field(b"bytes");
                field(bytes);
            }
        }
        field(self.namespace.as_bytes());
        match &self.tenant {
            Some(hash) => field(hash),
            None => field(b""),
        }
        // Appended only when there are some, so every key made before they
        // were keyed (and every OpenAI request's) stays what it was.
        if !self.headers.is_empty() {
            field(b"headers");
            field(&(self.headers.len() as u64).to_le_bytes());
            for (name, value) in &self.headers {
                field(name.as_bytes());
                field(value.as_bytes());
            }
        }
        RequestKey::from_bytes(*hasher.finalize().as_bytes())
    }

    /// The JSON body, if the body is JSON.
    pub fn json(&self) -> Option<&Value> {
        match &self.body {
            CanonicalBody::Json(value) => Some(value),
            _ => None,
        }
    }

    /// True when the body asks for a server-sent-event stream.
    pub fn wants_stream(&self) -> bool {
        self.json()
            .and_then(|v| v.get("stream"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// The keyed request headers of `parts`, as [`Canonical::headers`] holds
/// them.
fn keyed_headers(parts: &RequestParts<'_>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut betas: Vec<&str> = parts
        .anthropic_beta
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if !betas.is_empty() {
        betas.sort_unstable();
        betas.dedup();
        headers.push(("anthropic-beta".to_string(), betas.join(",")));
    }
    if let Some(version) = parts.anthropic_version.map(str::trim) {
        headers.push(("anthropic-version".to_string(), version.to_string()));
    }
    headers
}

fn tenant_hash(credential: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(TENANT_CONTEXT);
    hasher.update(credential);
    *hasher.finalize().as_bytes()
}

fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

fn canonical_body(
    parts: &RequestParts<'_>,
    rules: &KeyRules,
    removed: &mut Vec<Removed>,
) -> CanonicalBody {
    if parts.body.is_empty() {
        return CanonicalBody::Empty;
    }
    if let Some(boundary) = parts.content_type.and_then(multipart_boundary) {
        if let Some(form) = split_multipart(parts.body, &boundary) {
            return CanonicalBody::Multipart(form);
        }
    }
    // serde_json refuses nesting deeper than 128 levels, so canonicalising
    // the parsed value below cannot overflow the stack; such a body is keyed
    // as bytes instead.
    match serde_json::from_slice::<Value>(parts.body) {
        Ok(mut value) => {
            remove_fields(parts.path, &mut value, rules, removed);
            CanonicalBody::Json(value)
        }
        Err(_) => CanonicalBody::Bytes(parts.body.to_vec()),
    }
}

/// Removes what the presets and then `ignore_fields` name from a JSON
/// body, noting each removal. `rekey` calls it on stored requests.
pub fn remove_fields(path: &str, value: &mut Value, rules: &KeyRules, removed: &mut Vec<Removed>) {
    for preset in &rules.presets {
        preset.apply(path, value, removed);
    }
    for pointer in &rules.ignore_fields {
        if remove_pointer(value, pointer) {
            removed.push(Removed {
                by: By::IgnoreFields,
                pointer: pointer.clone(),
            });
        }
    }
}

/// Removes the value a JSON pointer (RFC 6901) names; true if it was there.
pub fn remove_pointer(value: &mut Value, pointer: &str) -> bool {
    let Some(rest) = pointer.strip_prefix('/') else {
        return false;
    };
    let tokens: Vec<String> = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().expect("split always yields one token");
    let mut target = value;
    for token in parents {
        target = match target {
            Value::Object(map) => match map.get_mut(token) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match target {
        Value::Object(map) => map.remove(last).is_some(),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Canonical JSON text: sorted keys, no whitespace, normalised numbers.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(k, out);
        out.push(b':');
        write_canonical(v, out);
    }
    out.push(b'}');
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
}

/// Integers (and floats with no fractional part that an f64 holds exactly)
/// are written as integers, so `1`, `1.0` and `1e0` agree; other floats use
/// the shortest round-trip form.
fn write_number(n: &Number, out: &mut Vec<u8>) {
    /// Beyond 2^53 an f64 no longer holds every integer, so don't pretend.
    const EXACT_F64_INT: f64 = 9_007_199_254_740_992.0;
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        if f.fract() == 0.0 && f.abs() <= EXACT_F64_INT {
            out.extend_from_slice((f as i64).to_string().as_bytes());
        } else {
            out.extend_from_slice(
                serde_json::to_string(&f)
                    .expect("a finite f64 always serialises")
                    .as_bytes(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> KeyRules {
        KeyRules {
            presets: crate::key::DEFAULT_PRESETS.to_vec(),
            ignore_fields: vec!["/user".into()],
            per_credential: false,
        }
    }

    fn key_of(body: &str) -> RequestKey {
        key_with(body, None, &rules())
    }

    fn key_with(body: &str, namespace: Option<&str>, rules: &KeyRules) -> RequestKey {
        Canonical::new(
            &RequestParts {
                method: "POST",
                path: "/v1/chat/completions",
                query: None,
                content_type: Some("application/json"),
                body: body.as_bytes(),
                namespace,
                credential: Some(b"Bearer sk-test-dummy"),
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            rules,
        )
        .key()
    }

    const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"seed":42,"temperature":0}"#;

    // Golden hashes: if one of these changes, every stored recording and
    // committed fixture stops matching. Bump CANONICAL_VERSION instead.
    #[test]
    fn golden_chat_key() {
        assert_eq!(
            key_of(CHAT).to_hex(),
            "7f062bcdd477e63af575eac46da825642e38b206e066c807f734cdc483cb2b51"
        );
    }

    #[test]
    fn golden_canonical_json() {
        let value: Value = serde_json::from_str(
            r#"{ "b": [1.0, 2.5, -0.0, 1e2], "a": {"z": null, "y": "\u00e9\n"}, "c": true }"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":{"y":"é\n","z":null},"b":[1,2.5,0,100],"c":true}"#
        );
    }

    #[test]
    fn golden_models_key() {
        let key = Canonical::new(
            &RequestParts {
                method: "GET",
                path: "/v1/models",
                query: None,
                content_type: None,
                body: b"",
                namespace: None,
                credential: None,
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            &rules(),
        )
        .key();
        assert_eq!(
            key.to_hex(),
            "27242528b410d43e655f06d65702c7f08d46646684c22070bfa78ca6e3199f92"
        );
    }

    fn anthropic_key(version: Option<&str>, betas: Vec<&str>) -> RequestKey {
        Canonical::new(
            &RequestParts {
                method: "POST",
                path: "/v1/messages",
                query: None,
                content_type: Some("application/json"),
                body: br#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Say hi"}]}"#,
                namespace: None,
                credential: Some(b"sk-ant-test-dummy"),
                anthropic_version: version,
                anthropic_beta: betas,
            },
            &rules(),
        )
        .key()
    }

    // Pins the form of the keyed headers, as the goldens above pin the rest.
    #[test]
    fn golden_anthropic_key_and_its_headers() {
        let key = anthropic_key(Some("2023-06-01"), vec!["b-2025, a-2024", "a-2024"]);
        assert_eq!(
            key.to_hex(),
            anthropic_key(Some(" 2023-06-01"), vec!["a-2024,b-2025"]).to_hex(),
            "betas are a set; values are trimmed"
        );
        assert_eq!(
            key.to_hex(),
            "da6629d3645972d2e1b23a43de95100526581eaaea3973133c14681d51db6842"
        );
        assert_ne!(
            key,
            anthropic_key(Some("2024-01-01"), vec!["a-2024,b-2025"])
        );
        assert_ne!(key, anthropic_key(Some("2023-06-01"), vec!["a-2024"]));
        assert_ne!(key, anthropic_key(Some("2023-06-01"), Vec::new()));
        assert_ne!(key, anthropic_key(None, vec!["a-2024,b-2025"]));
        assert_eq!(
            anthropic_key(None, Vec::new()),
            anthropic_key(None, vec![" , "]),
            "an empty beta list is no beta"
        );
    }

    #[test]
    fn hex_round_trips() {
        let key = key_of(CHAT);
        assert_eq!(RequestKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(RequestKey::from_hex("zz"), None);
    }

    #[test]
    fn integer_and_float_spellings_agree() {
        let a = key_of(r#"{"model":"m","temperature":1}"#);
        let b = key_of(r#"{"model":"m","temperature":1.0}"#);
        let c = key_of(r#"{"model":"m","temperature":1e0}"#);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, key_of(r#"{"model":"m","temperature":1.5}"#));
    }

    #[test]
    fn ignored_fields_do_not_change_the_key() {
        let with_user = key_of(r#"{"model":"m","user":"alice"}"#);
        let without = key_of(r#"{"model":"m"}"#);
        assert_eq!(with_user, without);
        let mut strict = rules();
        strict.ignore_fields.clear();
        assert_ne!(
            key_with(r#"{"model":"m","user":"alice"}"#, None, &strict),
            without
        );
    }

    #[test]
    fn nested_pointers_with_escapes_are_removed() {
        let mut value: Value =
            serde_json::from_str(r#"{"a/b":{"c~d":1,"e":2},"list":[1,2]}"#).unwrap();
        assert!(remove_pointer(&mut value, "/a~1b/c~0d"));
        assert!(remove_pointer(&mut value, "/list/0"));
        assert!(!remove_pointer(&mut value, "/missing/x"));
        assert_eq!(value, serde_json::json!({"a/b":{"e":2},"list":[2]}));
    }

    #[test]
    fn namespace_and_credential_scope_partition() {
        assert_ne!(key_with(CHAT, Some("suite-a"), &rules()), key_of(CHAT));
        let mut scoped = rules();
        scoped.per_credential = true;
        let parts = |cred: &'static [u8]| RequestParts {
            method: "POST",
            path: "/v1/chat/completions",
            query: None,
            content_type: None,
            body: CHAT.as_bytes(),
            namespace: None,
            credential: Some(cred),
            anthropic_version: None,
            anthropic_beta: Vec::new(),
        };
        let a = Canonical::new(&parts(b"Bearer sk-a"), &scoped).key();
        let b = Canonical::new(&parts(b"Bearer sk-b"), &scoped).key();
        assert_ne!(a, b);
        // Global scope ignores the credential entirely.
        let g1 = Canonical::new(&parts(b"Bearer sk-a"), &rules()).key();
        let g2 = Canonical::new(&parts(b"Bearer sk-b"), &rules()).key();
        assert_eq!(g1, g2);
    }

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        let key = |q| {
            Canonical::new(
                &RequestParts {
                    method: "POST",
                    path: "/openai/deployments/gpt/chat/completions",
                    query: Some(q),
                    content_type: None,
                    body: b"{}",
                    namespace: None,
                    credential: None,
                    anthropic_version: None,
                    anthropic_beta: Vec::new(),
                },
                &rules(),
            )
            .key()
        };
        assert_eq!(
            key("api-version=2024-06-01&x=1"),
            key("x=1&api-version=2024-06-01")
        );
        assert_ne!(key("api-version=2024-06-01"), key("api-version=2024-10-21"));
    }

    #[test]
    fn stream_true_and_false_differ() {
        assert_ne!(
            key_of(r#"{"model":"m","stream":true}"#),
            key_of(r#"{"model":"m","stream":false}"#)
        );
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes() {
        let a = key_of("not json {");
        let b = key_of("not json  {");
        assert_ne!(a, b);
        assert_eq!(a, key_of("not json {"));
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let a = Canonical::new(
            &RequestParts {
                method: "GET",
                path: "/v1/modelsx",
                query: None,
                content_type: None,
                body: b"",
                namespace: Some(""),
                credential: None,
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            &rules(),
        );
        let b = Canonical::new(
            &RequestParts {
                method: "GET",
                path: "/v1/models",
                query: Some("x"),
                content_type: None,
                body: b"",
                namespace: None,
                credential: None,
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            &rules(),
        );
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn deeply_nested_json_is_keyed_as_bytes_without_overflow() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let canonical = Canonical::new(
            &RequestParts {
                method: "POST",
                path: "/v1/chat/completions",
                query: None,
                content_type: None,
                body: deep.as_bytes(),
                namespace: None,
                credential: None,
                anthropic_version: None,
                anthropic_beta: Vec::new(),
            },
            &rules(),
        );
        assert!(matches!(canonical.body, CanonicalBody::Bytes(_)));
        let _ = canonical.key();
    }

    /// A small JSON value generator for property tests.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Writes a value with object keys in reverse order and random spacing.
    fn shuffled_text(value: &Value, space: &str) -> String {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.reverse();
                let inner: Vec<String> = entries
                    .into_iter()
                    .map(|(k, v)| {
                        format!(
                            "{space}{}{space}:{space}{}",
                            serde_json::to_string(k).unwrap(),
                            shuffled_text(v, space)
                        )
                    })
                    .collect();
                format!("{{{}{space}}}", inner.join(","))
            }
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(|v| shuffled_text(v, space)).collect();
                format!("[{space}{}]", inner.join(&format!(",{space}")))
            }
            other => other.to_string(),
        }
    }

    proptest! {
        #[test]
        fn key_order_and_whitespace_do_not_matter(value in arb_json(), space in "[ \n\t]{0,3}") {
            let body = serde_json::json!({"model": "gpt-4o-mini", "extra": value});
            let plain = serde_json::to_string(&body).unwrap();
            let shuffled = shuffled_text(&body, &space);
            prop_assert_eq!(key_of(&plain), key_of(&shuffled));
        }

        #[test]
        fn changing_any_sampling_parameter_changes_the_key(
            field in prop::sample::select(vec![
                "model", "messages", "seed", "temperature", "top_p", "n",
                "tools", "response_format", "logprobs",
            ]),
            replacement in arb_json(),
        ) {
            let base = serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "seed": 42,
                "temperature": 0.2,
                "top_p": 1,
                "n": 1,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "response_format": {"type": "text"},
                "logprobs": true,
            });
            let mut changed = base.clone();
            changed[field] = replacement.clone();
            prop_assume!(canonical_json(&base[field]) != canonical_json(&replacement));
            prop_assert_ne!(
                key_of(&base.to_string()),
                key_of(&changed.to_string())
            );
        }
    }
}
