//! Property tests for the parsers that see untrusted input (issue 6.4):
//! the request canonicaliser, the fixture parser and the store's entry
//! decoder. Each must answer `Ok` or `Err` on anything, never panic, and
//! never turn damaged input into a different valid value.
//!
//! Bounded for CI: every property runs a fixed number of cases
//! ([`CASES`]); `PROPTEST_CASES=N` raises it for a longer local run.

use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

use crate::support::env_number;
use llmtape::config::Timing;
use llmtape::key::{Canonical, CanonicalBody, KeyRules, RequestKey, RequestParts};
use llmtape::record::recording::{
    RecordedRequest, RecordedResponse, Recording, RecordingMeta, RequestBody, StreamEvent,
};
use llmtape::store::fixtures::{from_fixture, parse, render, to_fixture};

/// Cases per property unless `PROPTEST_CASES` says otherwise: enough to
/// shake out shallow bugs in a few seconds of CI.
const CASES: u32 = 256;

/// serde_json's nesting limit; deeper bodies are keyed as bytes.
const SERDE_JSON_DEPTH_LIMIT: usize = 128;

fn config() -> ProptestConfig {
    let cases = env_number("PROPTEST_CASES").unwrap_or(CASES);
    ProptestConfig {
        cases,
        // Failures are reported in the test output; no files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
        any::<String>().prop_map(Value::String),
        "[a-z_]{0,12}".prop_map(Value::String),
    ]
}

/// Arbitrary JSON a few levels deep, keys in generation order.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}|\\PC{0,8}", inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A chat request with arbitrary messages and sampling parameters.
fn chat_request() -> impl Strategy<Value = Value> {
    (
        "gpt-[a-z0-9-]{1,12}",
        prop::collection::vec(("system|user|assistant", any::<String>()), 1..4),
        any::<u32>(),
        0u8..=20,
        any::<bool>(),
        prop::option::of(json_value()),
    )
        .prop_map(|(model, messages, seed, temperature, stream, extra)| {
            let messages: Vec<Value> = messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect();
            let mut request = json!({
                "model": model,
                "messages": messages,
                "seed": seed,
                "temperature": f64::from(temperature) / 10.0,
                "stream": stream,
            });
            if let Some(extra) = extra {
                request["metadata"] = extra;
            }
            request
        })
}

/// The same document with every object's keys in reverse order and every
/// integer that an f64 holds exactly written as `N.0`: semantically equal.
fn reshuffled(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .rev()
                .map(|(k, v)| (k.clone(), reshuffled(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(reshuffled).collect()),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= 1 << 53 => {
                serde_json::from_str(&format!("{i}.0")).expect("a float literal parses")
            }
            _ => value.clone(),
        },
        other => other.clone(),
    }
}

/// A JSON text `depth` levels deep; `shapes[i]` picks an array or an
/// object for level `i`; `balanced = false` leaves it unclosed.
fn nested_text(depth: usize, shapes: &[bool], balanced: bool) -> String {
    let mut text = String::with_capacity(depth * 8);
    for i in 0..depth {
        text.push_str(if shapes[i % shapes.len()] {
            "["
        } else {
            "{\"a\":"
        });
    }
    text.push('1');
    if balanced {
        for i in (0..depth).rev() {
            text.push(if shapes[i % shapes.len()] { ']' } else { '}' });
        }
    }
    text
}

fn parts<'a>(body: &'a [u8], content_type: Option<&'a str>) -> RequestParts<'a> {
    RequestParts {
        method: "POST",
        path: "/v1/chat/completions",
        query: None,
        content_type,
        body,
        namespace: None,
        credential: Some(b"Bearer sk-test"),
        anthropic_version: None,
        anthropic_beta: Vec::new(),
    }
}

fn key_of(body: &[u8], rules: &KeyRules) -> RequestKey {
    Canonical::new(&parts(body, Some("application/json")), rules).key()
}

fn default_rules() -> KeyRules {
    KeyRules {
        presets: llmtape::key::DEFAULT_PRESETS.to_vec(),
        ignore_fields: vec!["/user".into()],
        per_credential: false,
    }
}

// ---------------------------------------------------------------------------
// (a) The canonicaliser
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes under any content type, with arbitrary ignore
    /// pointers: a key, deterministically, and no panic.
    #[test]
    fn canonicaliser_takes_any_bytes(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        content_type in prop::option::of(prop_oneof![
            Just("application/json".to_string()),
            "multipart/form-data; boundary=[-a-zA-Z0-9]{0,20}",
            "multipart/\\PC{0,10};\\PC{0,30}",
            "\\PC{0,40}",
        ]),
        query in prop::option::of("\\PC{0,40}"),
        namespace in prop::option::of("\\PC{0,20}"),
        pointers in prop::collection::vec("(/[a-z0-9~]{0,4}){0,6}|\\PC{0,12}", 0..4),
        per_credential in any::<bool>(),
    ) {
        let rules = KeyRules { presets: llmtape::key::DEFAULT_PRESETS.to_vec(), ignore_fields: pointers, per_credential };
        let parts = RequestParts {
            method: "post",
            path: "/v1/chat/completions",
            query: query.as_deref(),
            content_type: content_type.as_deref(),
            body: &body,
            namespace: namespace.as_deref(),
            credential: Some(b"Bearer sk-one"),
            anthropic_version: None,
            anthropic_beta: Vec::new(),
        };
        let first = Canonical::new(&parts, &rules);
        let again = Canonical::new(&parts.clone(), &rules);
        prop_assert_eq!(first.key(), again.key());
        prop_assert_eq!(first.key(), first.key());
        let _ = first.wants_stream();
    }

    /// Arbitrary JSON: equal documents (same text, or reordered keys,
    /// other whitespace, `1` written as `1.0`) give equal keys.
    #[test]
    fn semantically_equal_json_gives_equal_keys(value in json_value()) {
        let rules = default_rules();
        let compact = serde_json::to_vec(&value).unwrap();
        let pretty = serde_json::to_vec_pretty(&reshuffled(&value)).unwrap();
        prop_assert_eq!(key_of(&compact, &rules), key_of(&compact.clone(), &rules));
        prop_assert_eq!(
            key_of(&compact, &rules),
            key_of(&pretty, &rules),
            "compact {} vs pretty {}",
            String::from_utf8_lossy(&compact),
            String::from_utf8_lossy(&pretty)
        );
    }

    /// A change in any sampling parameter or message changes the key;
    /// `/user` (ignored by default) does not.
    #[test]
    fn sampling_parameters_are_in_the_key(
        request in chat_request(),
        field in prop::sample::select(vec!["seed", "temperature", "model", "messages", "stream", "top_p"]),
        user in "[a-z]{1,10}",
    ) {
        let rules = default_rules();
        let original = serde_json::to_vec(&request).unwrap();
        let mut changed = request.clone();
        changed[field] = match &request[field] {
            Value::Bool(b) => Value::Bool(!b),
            Value::Array(items) => {
                let mut items = items.clone();
                items.push(json!({"role": "user", "content": "and one more"}));
                Value::Array(items)
            }
            Value::String(s) => Value::String(format!("{s}-x")),
            Value::Number(n) => json!(n.as_f64().unwrap_or(0.0) + 0.5),
            _ => json!(0.25),
        };
        prop_assert_ne!(key_of(&original, &rules), key_of(&serde_json::to_vec(&changed).unwrap(), &rules));
        let mut with_user = request.clone();
        with_user["user"] = Value::String(user);
        prop_assert_eq!(key_of(&original, &rules), key_of(&serde_json::to_vec(&with_user).unwrap(), &rules));
    }

    /// Deeply nested arrays and objects, closed or not, up to a few
    /// hundred levels: a key and no stack overflow. Within serde_json's
    /// limit a closed document is canonicalised as JSON.
    #[test]
    fn deep_nesting_is_bounded(
        depth in 1usize..600,
        shapes in prop::collection::vec(any::<bool>(), 1..8),
        balanced in any::<bool>(),
        pointer_depth in 0usize..40,
    ) {
        let text = nested_text(depth, &shapes, balanced);
        let pointer = "/a".repeat(pointer_depth);
        let rules = KeyRules {
            presets: llmtape::key::DEFAULT_PRESETS.to_vec(),
            ignore_fields: vec!["/user".into(), pointer, "/0/0/0".into()],
            per_credential: false,
        };
        let canonical = Canonical::new(&parts(text.as_bytes(), Some("application/json")), &rules);
        prop_assert_eq!(canonical.key(), key_of(text.as_bytes(), &rules));
        if balanced && depth < SERDE_JSON_DEPTH_LIMIT {
            prop_assert!(matches!(canonical.body, CanonicalBody::Json(_)), "depth {}", depth);
        }
        if !balanced {
            prop_assert!(matches!(canonical.body, CanonicalBody::Bytes(_)), "depth {}", depth);
        }
        // Inside a valid chat request, too.
        let wrapped = format!("{{\"model\":\"m\",\"messages\":[],\"metadata\":{text}}}");
        let _ = key_of(wrapped.as_bytes(), &rules);
    }

    /// Multipart bodies are keyed by their parts, not by the boundary.
    #[test]
    fn multipart_key_ignores_the_boundary(
        first in "[a-zA-Z0-9]{8,30}",
        second in "[a-zA-Z0-9]{8,30}",
        fields in prop::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9 .,]{0,40}"), 1..5),
    ) {
        let body = |boundary: &str| {
            let mut out = String::new();
            for (name, value) in &fields {
                out.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                ));
            }
            out.push_str(&format!("--{boundary}--\r\n"));
            out
        };
        let key = |boundary: &str| {
            let content_type = format!("multipart/form-data; boundary={boundary}");
            let body = body(boundary);
            Canonical::new(&parts(body.as_bytes(), Some(&content_type)), &default_rules()).key()
        };
        prop_assert_eq!(key(&format!("A{first}")), key(&format!("B{second}")));
    }
}

// ---------------------------------------------------------------------------
// Recordings: valid entries of every body kind
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum BodyKind {
    CompactJson(Value),
    PrettyJson(Value),
    Text(String),
    Binary(Vec<u8>),
    Stream(Vec<String>),
}

fn body_kind() -> impl Strategy<Value = BodyKind> {
    prop_oneof![
        json_value().prop_map(BodyKind::CompactJson),
        json_value().prop_map(BodyKind::PrettyJson),
        any::<String>().prop_map(BodyKind::Text),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(BodyKind::Binary),
        prop::collection::vec("\\PC{0,30}", 0..6).prop_map(BodyKind::Stream),
    ]
}

fn entry_strategy() -> impl Strategy<Value = Recording> {
    (
        body_kind(),
        prop::option::of(json_value()),
        "[0-9a-f]{64}",
        prop::collection::vec(("[a-z-]{1,20}", "[ -~]{0,40}"), 0..4),
        prop::option::of("fp_[a-z0-9]{0,10}"),
        prop::option::of("\\PC{0,12}"),
        100u16..600,
        any::<u64>(),
        "\\PC{0,16}",
    )
        .prop_map(
            |(kind, request, key, headers, fingerprint, model, status, latency_ms, namespace)| {
                let (body, stream) = match kind {
                    BodyKind::CompactJson(v) => (serde_json::to_vec(&v).unwrap(), None),
                    BodyKind::PrettyJson(v) => {
                        let mut text = serde_json::to_vec_pretty(&v).unwrap();
                        text.push(b'\n');
                        (text, None)
                    }
                    BodyKind::Text(t) => (t.into_bytes(), None),
                    BodyKind::Binary(b) => (b, None),
                    BodyKind::Stream(datas) => {
                        let mut body = Vec::new();
                        let mut events = Vec::new();
                        let all = datas
                            .iter()
                            .map(|d| format!("data: {{\"delta\":{}}}\n\n", json!(d)))
                            .chain(std::iter::once("data: [DONE]\n\n".to_string()));
                        for (i, event) in all.enumerate() {
                            events.push(StreamEvent {
                                offset_ms: 5 * i as u64,
                                len: event.len(),
                            });
                            body.extend_from_slice(event.as_bytes());
                        }
                        (body, Some(events))
                    }
                };
                Recording {
                    meta: RecordingMeta {
                        key: RequestKey::from_hex(&key).expect("the strategy makes hex keys"),
                        request: RecordedRequest {
                            method: "POST".into(),
                            path: "/v1/chat/completions".into(),
                            query: String::new(),
                            namespace,
                            headers: Vec::new(),
                            body: match request {
                                Some(v) => RequestBody::Json(v),
                                None => RequestBody::Empty,
                            },
                        },
                        response: RecordedResponse { status, headers },
                        system_fingerprint: fingerprint,
                        model,
                        recorded_at: "2026-11-22T00:00:00.000Z".into(),
                        latency_ms,
                        stream,
                        call: None,
                    },
                    body: Bytes::from(body),
                }
            },
        )
}

/// Everything a loaded recording is used for: encoding for the store (and
/// decoding back to the same), its events, a replay and a re-export.
fn use_entry(entry: &Recording, history: &[Recording]) -> Result<(), TestCaseError> {
    let decoded = Recording::decode(Bytes::from(entry.encode()))
        .map_err(|e| TestCaseError::fail(format!("a loaded entry must encode: {e}")))?;
    prop_assert_eq!(&decoded, entry);
    let covered: usize = entry.events().iter().map(|(_, b)| b.len()).sum();
    if entry.meta.stream.is_some() {
        prop_assert_eq!(covered, entry.body.len());
    }
    let key = RequestKey::from_bytes([9; 32]);
    let _ = llmtape::serve::replay::response(entry.clone(), &key, Timing::Instant);
    let _ = llmtape::serve::replay::response(entry.clone(), &key, Timing::Recorded);
    let _ = render(&to_fixture(entry, history));
    Ok(())
}

// ---------------------------------------------------------------------------
// (b) The fixture parser
// ---------------------------------------------------------------------------

/// One way of damaging a fixture file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the text after this fraction (per mille) of its characters.
    Truncate(u32),
    /// Replace the character at this fraction with another.
    Replace(u32, char),
    /// Insert text at this fraction.
    Insert(u32, String),
    /// Remove the n-th object member (counting depth first).
    DeleteField(usize),
    /// Set the n-th object member to another JSON value.
    ReplaceField(usize, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0u32..1000).prop_map(Mutation::Truncate),
        (0u32..1000, any::<char>()).prop_map(|(at, c)| Mutation::Replace(at, c)),
        (0u32..1000, "\\PC{1,12}|[\\[\\]{}\",:0-9]{1,6}")
            .prop_map(|(at, s)| Mutation::Insert(at, s)),
        any::<usize>().prop_map(Mutation::DeleteField),
        (any::<usize>(), json_value()).prop_map(|(n, v)| Mutation::ReplaceField(n, v)),
    ]
}

/// Object members of `value`, depth first, as (parent pointer, key).
fn members(value: &Value, pointer: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                out.push((pointer.to_string(), key.clone()));
                let escaped = key.replace('~', "~0").replace('/', "~1");
                members(child, &format!("{pointer}/{escaped}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                members(child, &format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn char_index(text: &str, per_mille: u32) -> usize {
    let count = text.chars().count();
    let n = count * per_mille as usize / 1000;
    text.char_indices().nth(n).map_or(text.len(), |(i, _)| i)
}

fn mutate(text: &str, mutation: &Mutation) -> String {
    match mutation {
        Mutation::Truncate(at) => text[..char_index(text, *at)].to_string(),
        Mutation::Replace(at, c) => {
            let i = char_index(text, *at);
            let mut out = text[..i].to_string();
            out.push(*c);
            out.extend(text[i..].chars().skip(1));
            out
        }
        Mutation::Insert(at, s) => {
            let i = char_index(text, *at);
            format!("{}{s}{}", &text[..i], &text[i..])
        }
        Mutation::DeleteField(n) | Mutation::ReplaceField(n, _) => {
            let mut value: Value = serde_json::from_str(text).expect("a rendered fixture is JSON");
            let mut all = Vec::new();
            members(&value, "", &mut all);
            if all.is_empty() {
                return text.to_string();
            }
            let (parent, key) = &all[n % all.len()];
            if let Some(Value::Object(map)) = value.pointer_mut(parent) {
                match mutation {
                    Mutation::ReplaceField(_, v) => {
                        map.insert(key.clone(), v.clone());
                    }
                    _ => {
                        map.remove(key);
                    }
                }
            }
            serde_json::to_string_pretty(&value).unwrap()
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text is a parse error or a fixture, never a panic.
    #[test]
    fn fixture_parser_takes_any_text(text in any::<String>()) {
        if let Ok(file) = parse(Path::new("any.json"), &text) {
            if let Ok((entry, history)) = from_fixture(&file) {
                use_entry(&entry, &history)?;
            }
        }
    }

    /// Arbitrary JSON documents (closer to the real shape than text).
    #[test]
    fn fixture_parser_takes_any_json(value in json_value()) {
        let text = serde_json::to_string_pretty(&value).unwrap();
        if let Ok(file) = parse(Path::new("any.json"), &text) {
            if let Ok((entry, history)) = from_fixture(&file) {
                use_entry(&entry, &history)?;
            }
        }
    }

    /// A valid fixture round-trips; damaged (truncated, a character
    /// changed, text inserted, a field deleted or replaced, up to three
    /// times) it is an error or a usable recording, never a panic.
    #[test]
    fn damaged_fixtures_are_errors_not_panics(
        entry in entry_strategy(),
        past in prop::collection::vec(entry_strategy(), 0..2),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        // History items share the current recording's key and request.
        let history: Vec<Recording> = past
            .into_iter()
            .map(|mut e| {
                e.meta.key = entry.meta.key;
                e.meta.request = entry.meta.request.clone();
                e
            })
            .collect();
        let text = render(&to_fixture(&entry, &history));
        let file = parse(Path::new("valid.json"), &text)
            .map_err(|e| TestCaseError::fail(format!("a rendered fixture parses: {e}")))?;
        let (back, back_history) = from_fixture(&file)
            .map_err(|e| TestCaseError::fail(format!("a rendered fixture loads: {e}")))?;
        prop_assert_eq!(&back, &entry);
        prop_assert_eq!(&back_history, &history);

        let mut damaged = text;
        for m in &mutations {
            // Field mutations need JSON; after a textual one, skip them.
            if matches!(m, Mutation::DeleteField(_) | Mutation::ReplaceField(..))
                && serde_json::from_str::<Value>(&damaged).is_err()
            {
                continue;
            }
            damaged = mutate(&damaged, m);
        }
        if let Ok(file) = parse(Path::new("damaged.json"), &damaged) {
            if let Ok((entry, history)) = from_fixture(&file) {
                use_entry(&entry, &history)?;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (c) The store's entry decoder
// ---------------------------------------------------------------------------

/// The encoding's fixed parts, as documented in `src/entry.rs`.
const MAGIC: &[u8; 8] = b"LLMTAPE1";

/// `MAGIC | meta_len | meta | body | blake3`, with a correct checksum over
/// whatever `meta_len` and `meta` say: only the checksum-passing paths of
/// the decoder can be reached this way.
fn checksummed(meta_len: u32, meta: &[u8], body: &[u8]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Bytes::from(out)
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, with or without the format marker: no panic.
    #[test]
    fn decode_takes_any_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..512),
        with_magic in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        if with_magic {
            bytes.extend_from_slice(MAGIC);
        }
        bytes.extend_from_slice(&raw);
        // 2^-256 odds of a valid checksum: this is always an error.
        prop_assert!(Recording::decode(Bytes::from(bytes)).is_err());
    }

    /// Every valid entry round-trips; every truncation is an error.
    #[test]
    fn truncated_encodings_are_errors(entry in entry_strategy(), cut in any::<prop::sample::Index>()) {
        let raw = entry.encode();
        prop_assert_eq!(&Recording::decode(Bytes::from(raw.clone())).unwrap(), &entry);
        let len = cut.index(raw.len());
        prop_assert!(Recording::decode(Bytes::copy_from_slice(&raw[..len])).is_err(), "len {}", len);
    }

    /// A flipped bit anywhere (marker, lengths, metadata, body, checksum)
    /// never decodes into a different entry: it is an error.
    #[test]
    fn flipped_bits_are_errors(
        entry in entry_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let original = entry.encode();
        let mut raw = original.clone();
        for (at, bit) in &flips {
            let at = at.index(raw.len());
            raw[at] ^= 1 << bit;
        }
        match Recording::decode(Bytes::from(raw.clone())) {
            Err(_) => {}
            // Two flips of the same bit cancel out.
            Ok(decoded) => {
                prop_assert_eq!(&raw, &original, "a damaged value decoded");
                prop_assert_eq!(decoded, entry);
            }
        }
    }

    /// Values that pass the checksum but lie inside (a length past the
    /// end, metadata that is not JSON or not an entry, stream events that
    /// do not cover the body): an error, or an entry whose parts are all
    /// usable.
    #[test]
    fn checksummed_lies_are_errors_or_usable(
        entry in entry_strategy(),
        meta_len in prop_oneof![Just(None), any::<u32>().prop_map(Some)],
        meta_json in prop_oneof![Just(None), json_value().prop_map(Some)],
        lens in prop::option::of(prop::collection::vec(0usize..u32::MAX as usize, 0..5)),
        extra_body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut meta_value = serde_json::to_value(&entry.meta).unwrap();
        if let Some(lens) = lens {
            meta_value["stream"] = Value::Array(
                lens.iter().map(|len| json!({"offset_ms": 1, "len": len})).collect(),
            );
        }
        let meta = serde_json::to_vec(meta_json.as_ref().unwrap_or(&meta_value)).unwrap();
        let mut body = entry.body.to_vec();
        body.extend_from_slice(&extra_body);
        let raw = checksummed(meta_len.unwrap_or(meta.len() as u32), &meta, &body);
        if let Ok(decoded) = Recording::decode(raw) {
            use_entry(&decoded, &[])?;
        }
    }
}

/// Regression guard for a checksummed value whose stream event lengths
/// add up past `usize::MAX`: the decoder must say `StreamLength` (or any
/// error) instead of overflowing. Such a value needs a deliberate write
/// (blake3 is not forged by accident), but "a corrupt entry is a miss,
/// never a crash" holds for every value in the store.
///
/// Regression: `Recording::decode` once summed the lengths unchecked (a debug
/// build panicked, a release build wrapped, decoded, then panicked slicing
/// the body in `Recording::events`).
#[test]
fn stream_lengths_that_overflow_are_an_error() {
    let mut meta = serde_json::to_value(
        Recording {
            meta: RecordingMeta {
                key: RequestKey::from_bytes([0xab; 32]),
                request: RecordedRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    query: String::new(),
                    namespace: String::new(),
                    headers: Vec::new(),
                    body: RequestBody::Empty,
                },
                response: RecordedResponse {
                    status: 200,
                    headers: vec![],
                },
                system_fingerprint: None,
                model: None,
                recorded_at: "2026-11-22T00:00:00.000Z".into(),
                latency_ms: 1,
                stream: None,
                call: None,
            },
            body: Bytes::new(),
        }
        .meta,
    )
    .unwrap();
    // 1 + usize::MAX + 1 wraps to 1, the body's length.
    meta["stream"] = json!([
        {"offset_ms": 0, "len": 1},
        {"offset_ms": 0, "len": usize::MAX},
        {"offset_ms": 0, "len": 1},
    ]);
    let meta = serde_json::to_vec(&meta).unwrap();
    let raw = checksummed(meta.len() as u32, &meta, b"x");
    let outcome = std::panic::catch_unwind(|| {
        if let Ok(entry) = Recording::decode(raw) {
            entry.events();
        }
    });
    assert!(
        outcome.is_ok(),
        "decoding (or splitting into events) a checksummed entry with overflowing stream lengths panicked"
    );
}
