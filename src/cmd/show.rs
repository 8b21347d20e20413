//! `llmtape show`: one recording whole (request, response headers and body
//! or stream events, fingerprint, history), found by a key prefix.
//!
//! Nothing here can print a credential: none is ever stored (see
//! [`crate::record::redact`]).

use std::io::Write;

use serde_json::{json, Value};

use crate::cmd::listing::{find_by_prefix, request_target, Listing};
use crate::cmd::write_json;
use crate::error::CommandError;
use crate::record::recording::base64_encode;
use crate::record::recording::{Recording, RequestBody};

/// Which recording `show` prints, and how.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// The start of a key, as `ls` prints it (any length, any case).
    pub key_prefix: String,
    /// JSON instead of text.
    pub json: bool,
}

/// Prints the one recording whose key starts with the prefix; none, or
/// more than one, is [`CommandError::NotFound`].
pub fn run(listing: &Listing, options: &Options, out: &mut dyn Write) -> Result<(), CommandError> {
    let (entry, history) = find(listing, &options.key_prefix)?;
    if options.json {
        let mut value = full_json(entry);
        value["history"] = Value::Array(history.iter().map(full_json).collect());
        write_json(out, &value)?;
        return Ok(());
    }
    let m = &entry.meta;
    writeln!(out, "key:                {}", m.key)?;
    writeln!(out, "recorded at:        {}", m.recorded_at)?;
    writeln!(
        out,
        "request:            {} {}",
        m.request.method,
        request_target(entry)
    )?;
    if !m.request.namespace.is_empty() {
        writeln!(out, "namespace:          {}", m.request.namespace)?;
    }
    for (name, value) in &m.request.headers {
        writeln!(out, "keyed header:       {name}: {value}")?;
    }
    if let Some(call) = m.call {
        writeln!(out, "sequence call:      {call}")?;
    }
    writeln!(
        out,
        "model:              {}",
        m.model.as_deref().unwrap_or("-")
    )?;
    match (&m.system_fingerprint, m.fingerprint()) {
        (None, Some(model)) => writeln!(out, "fingerprint:        {model} (the model)")?,
        (fp, _) => writeln!(out, "system_fingerprint: {}", fp.as_deref().unwrap_or("-"))?,
    }
    writeln!(out, "upstream latency:   {} ms", m.latency_ms)?;
    writeln!(out, "status:             {}", m.response.status)?;
    writeln!(
        out,
        "history:            {} earlier recording(s)",
        history.len()
    )?;
    writeln!(out, "response headers:")?;
    for (name, value) in &m.response.headers {
        writeln!(out, "  {name}: {value}")?;
    }
    writeln!(out, "request body:")?;
    writeln!(out, "{}", indent(&request_body_text(&m.request.body)))?;
    match &m.stream {
        Some(_) => {
            let events = entry.events();
            writeln!(
                out,
                "response stream ({} events, {} bytes):",
                events.len(),
                entry.body.len()
            )?;
            for (offset, event) in events {
                let text = String::from_utf8_lossy(&event);
                writeln!(
                    out,
                    "  +{offset:>6} ms  {}",
                    text.trim_end().replace('\n', "\n             ")
                )?;
            }
        }
        None => {
            writeln!(out, "response body ({} bytes):", entry.body.len())?;
            writeln!(out, "{}", indent(&response_body_text(&entry.body)))?;
        }
    }
    Ok(())
}

/// The one recording (and its history) whose key starts with `prefix`.
fn find<'a>(
    listing: &'a Listing,
    prefix: &str,
) -> Result<&'a (Recording, Vec<Recording>), CommandError> {
    find_by_prefix(
        &listing.recordings,
        |(entry, _)| &entry.meta.key,
        prefix,
        &listing.location,
    )
}

/// A recording in `show --json`.
fn full_json(entry: &Recording) -> Value {
    let m = &entry.meta;
    json!({
        "key": m.key,
        "request": m.request,
        "response": {
            "status": m.response.status,
            "headers": m.response.headers,
            "body": body_json(&entry.body),
        },
        "system_fingerprint": m.system_fingerprint,
        "fingerprint": m.fingerprint(),
        "model": m.model,
        "recorded_at": m.recorded_at,
        "latency_ms": m.latency_ms,
        "call": m.call,
    })
}

/// A body as JSON when it is JSON, else text, else base64.
fn body_json(body: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return json!({"kind": "json", "value": value});
    }
    match std::str::from_utf8(body) {
        Ok(text) => json!({"kind": "text", "value": text}),
        Err(_) => json!({"kind": "base64", "value": base64_encode(body)}),
    }
}

fn request_body_text(body: &RequestBody) -> String {
    match body {
        RequestBody::Empty => "(none)".into(),
        RequestBody::Json(value) => serde_json::to_string_pretty(value).unwrap_or_default(),
        RequestBody::Text(text) => text.clone(),
        RequestBody::Base64(b64) => format!("(base64) {b64}"),
    }
}

fn response_body_text(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return serde_json::to_string_pretty(&value).unwrap_or_default();
    }
    match std::str::from_utf8(body) {
        Ok(text) => text.to_string(),
        Err(_) => format!("(binary, base64) {}", base64_encode(body)),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::listing::tests::listing;
    use crate::record::recording::test_entry;

    fn render(listing: &Listing, prefix: &str, json: bool) -> Result<String, CommandError> {
        let mut out = Vec::new();
        let options = Options {
            key_prefix: prefix.into(),
            json,
        };
        run(listing, &options, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn three() -> Listing {
        let mut three = listing(&[
            (
                &"ab".repeat(32),
                "fp_a",
                Some("gpt-4o"),
                "2026-01-01T00:00:00.000Z",
            ),
            (&"abcd".repeat(16), "fp_b", None, "2026-01-02T00:00:00.000Z"),
            (&"cd".repeat(32), "fp_c", None, "2026-01-03T00:00:00.000Z"),
        ]);
        let old = test_entry(
            &"cd".repeat(32),
            vec![0xffu8, 0xfe],
            "fp_0",
            None,
            "2025-12-01T00:00:00.000Z",
        );
        three.recordings[2].1.push(old);
        three.recordings[2].0.meta.response.headers =
            vec![("content-type".into(), "application/json".into())];
        three
    }

    #[test]
    fn text_shows_the_request_headers_and_a_pretty_body() {
        let text = render(&three(), "CDC", false).unwrap();
        let expected = format!(
            "key:                {}\n\
             recorded at:        2026-01-03T00:00:00.000Z\n\
             request:            POST /v1/chat/completions\n\
             model:              -\n\
             system_fingerprint: fp_c\n\
             upstream latency:   1 ms\n\
             status:             200\n\
             history:            1 earlier recording(s)\n\
             response headers:\n  \
             content-type: application/json\n\
             request body:\n  \
             {{\n    \"model\": null\n  }}\n\
             response body (10 bytes):\n  \
             {{\n    \"id\": \"x\"\n  }}\n",
            "cd".repeat(32)
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn json_has_the_body_by_kind_and_the_history() {
        let doc: Value = serde_json::from_str(&render(&three(), "cd", true).unwrap()).unwrap();
        assert_eq!(doc["key"], "cd".repeat(32));
        assert_eq!(
            doc["response"]["body"],
            json!({"kind": "json", "value": {"id": "x"}})
        );
        let history = doc["history"].as_array().unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["response"]["body"]["kind"], "base64");
        assert_eq!(history[0]["system_fingerprint"], "fp_0");
    }

    #[test]
    fn a_prefix_must_be_hex_and_match_exactly_one_recording() {
        let not_hex = render(&three(), "xyz", false).unwrap_err();
        assert!(matches!(not_hex, CommandError::NotFound(_)));
        assert!(not_hex.to_string().contains("is not a key prefix"));
        let none = render(&three(), "ef", false).unwrap_err().to_string();
        assert_eq!(
            none,
            "no recording has a key starting with ef in test-store"
        );
        let many = render(&three(), "ab", false).unwrap_err().to_string();
        assert!(many.starts_with("ab matches 2 recordings (abab"), "{many}");
        assert!(many.ends_with("); give more characters"), "{many}");
        assert!(render(&three(), "abab", false).is_ok());
    }
}
