//! `llmtape ls`: one line per recording (key prefix, time, status, request,
//! model, fingerprint, size), or a JSON array of the same facts.
//!
//! Nothing here can print a credential: none is ever stored (see
//! [`crate::record::redact`]).

use std::io::Write;

use serde_json::{json, Value};

use crate::cmd::listing::{request_target, short_key, Listing};
use crate::cmd::paint::Terminal;
use crate::cmd::write_json;
use crate::error::CommandError;
use crate::record::recording::Recording;

/// What `ls` prints.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// A JSON array instead of text.
    pub json: bool,
}

/// Prints one line per recording (or a JSON array with `json`). The header
/// line is for people only, so scripts reading a pipe get data lines alone.
pub fn run(
    listing: &Listing,
    options: &Options,
    terminal: &Terminal,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    if options.json {
        let list: Vec<Value> = listing
            .recordings
            .iter()
            .map(|(e, _)| summary_json(e))
            .collect();
        write_json(out, &list)?;
        return Ok(());
    }
    if terminal.interactive {
        writeln!(
            out,
            "{:<16}  {:<24}  {:>3}  {:<34}  {:<20}  {:<14}  {:>8}",
            "KEY", "RECORDED AT", "ST", "REQUEST", "MODEL", "FINGERPRINT", "BYTES"
        )?;
    }
    for (entry, _) in &listing.recordings {
        let m = &entry.meta;
        writeln!(
            out,
            "{:<16}  {:<24}  {:>3}  {:<34}  {:<20}  {:<14}  {:>8}",
            short_key(&m.key),
            m.recorded_at,
            m.response.status,
            format!(
                "{} {}{}",
                m.request.method,
                request_target(entry),
                if m.stream.is_some() { " (stream)" } else { "" }
            ),
            m.model.as_deref().unwrap_or("-"),
            m.system_fingerprint.as_deref().unwrap_or("-"),
            entry.body.len()
        )?;
    }
    Ok(())
}

/// One element of `ls --json`.
fn summary_json(entry: &Recording) -> Value {
    let m = &entry.meta;
    json!({
        "key": m.key,
        "recorded_at": m.recorded_at,
        "status": m.response.status,
        "method": m.request.method,
        "path": m.request.path,
        "query": m.request.query,
        "namespace": m.request.namespace,
        "model": m.model,
        "system_fingerprint": m.system_fingerprint,
        "latency_ms": m.latency_ms,
        "body_bytes": entry.body.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::listing::tests::listing;

    fn render(listing: &Listing, options: Options, terminal: Terminal) -> String {
        let mut out = Vec::new();
        run(listing, &options, &terminal, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn two() -> Listing {
        let mut two = listing(&[
            (
                &"ab".repeat(32),
                "fp_a",
                Some("gpt-4o"),
                "2026-01-01T00:00:00.000Z",
            ),
            (&"cd".repeat(32), "fp_b", None, "2026-01-02T00:00:00.000Z"),
        ]);
        two.recordings[1].0.meta.request.query = "api-version=1".into();
        two
    }

    #[test]
    fn text_is_one_aligned_line_per_recording_with_a_header_only_for_people() {
        let text = render(&two(), Options::default(), Terminal::plain());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "abababababababab  2026-01-01T00:00:00.000Z  200  POST /v1/chat/completions           gpt-4o                fp_a                  10",
                "cdcdcdcdcdcdcdcd  2026-01-02T00:00:00.000Z  200  POST /v1/chat/completions?api-version=1  -                     fp_b                  10",
            ]
        );
        let person = Terminal {
            interactive: true,
            ..Terminal::plain()
        };
        let text = render(&two(), Options::default(), person);
        assert!(text.starts_with("KEY               RECORDED AT"), "{text}");
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn json_is_an_array_of_summaries() {
        let text = render(&two(), Options { json: true }, Terminal::plain());
        let doc: Value = serde_json::from_str(&text).unwrap();
        let list = doc.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["key"], "ab".repeat(32));
        assert_eq!(list[0]["model"], "gpt-4o");
        assert_eq!(list[1]["model"], Value::Null);
        assert_eq!(list[1]["query"], "api-version=1");
        assert_eq!(list[0]["body_bytes"], 10);
        assert!(text.ends_with("]\n"));
        let empty = render(&listing(&[]), Options { json: true }, Terminal::plain());
        assert_eq!(empty, "[]\n");
    }
}
