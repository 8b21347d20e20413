//! `llmtape ls`: one line per recording (key prefix, time, status, route,
//! request, model, fingerprint, size, content type), or a JSON array of the
//! same facts. The size and type say what a binary answer (audio, an image)
//! holds without printing it.
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
use crate::route::Routes;

/// What `ls` prints.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// A JSON array instead of text.
    pub json: bool,
    /// The configured routes, which name each recording's route.
    pub routes: Routes,
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
            .map(|(e, _)| summary_json(e, &options.routes))
            .collect();
        write_json(out, &list)?;
        return Ok(());
    }
    if terminal.interactive {
        writeln!(
            out,
            "{:<16}  {:<24}  {:>3}  {:<20}  {:<34}  {:<20}  {:<14}  {:>8}  TYPE",
            "KEY", "RECORDED AT", "ST", "ROUTE", "REQUEST", "MODEL", "FINGERPRINT", "BYTES"
        )?;
    }
    for (entry, _) in &listing.recordings {
        let m = &entry.meta;
        writeln!(
            out,
            "{:<16}  {:<24}  {:>3}  {:<20}  {:<34}  {:<20}  {:<14}  {:>8}  {}",
            short_key(&m.key),
            m.recorded_at,
            m.response.status,
            route_name(entry, &options.routes),
            format!(
                "{} {}{}{}",
                m.request.method,
                request_target(entry),
                if m.stream.is_some() { " (stream)" } else { "" },
                m.call.map(|n| format!(" (call {n})")).unwrap_or_default()
            ),
            m.model.as_deref().unwrap_or("-"),
            m.fingerprint().unwrap_or("-"),
            entry.body.len(),
            media_type(entry).unwrap_or("-")
        )?;
    }
    Ok(())
}

/// The name of the route a recording is on, `-` for none.
fn route_name<'a>(entry: &Recording, routes: &'a Routes) -> &'a str {
    let r = &entry.meta.request;
    routes.name_of(&r.method, &r.path).unwrap_or("-")
}

/// The answer's content type without its parameters: `audio/mpeg`,
/// `application/json`.
fn media_type(entry: &Recording) -> Option<&str> {
    entry
        .content_type()
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// One element of `ls --json`.
fn summary_json(entry: &Recording, routes: &Routes) -> Value {
    let m = &entry.meta;
    json!({
        "route": routes.name_of(&m.request.method, &m.request.path),
        "key": m.key,
        "recorded_at": m.recorded_at,
        "status": m.response.status,
        "method": m.request.method,
        "path": m.request.path,
        "query": m.request.query,
        "namespace": m.request.namespace,
        "model": m.model,
        "system_fingerprint": m.system_fingerprint,
        "fingerprint": m.fingerprint(),
        "latency_ms": m.latency_ms,
        "body_bytes": entry.body.len(),
        "content_type": entry.content_type(),
        "call": m.call,
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
                "abababababababab  2026-01-01T00:00:00.000Z  200  chat.completions      POST /v1/chat/completions           gpt-4o                fp_a                  10  -",
                "cdcdcdcdcdcdcdcd  2026-01-02T00:00:00.000Z  200  chat.completions      POST /v1/chat/completions?api-version=1  -                     fp_b                  10  -",
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

    /// A speech recording (binary audio) and one on a `[routes] cache`
    /// route, with the routes that name it.
    fn binary_and_custom() -> (Listing, Routes) {
        let mut listing = listing(&[
            (
                &"ab".repeat(32),
                "fp_a",
                Some("tts-1"),
                "2026-01-01T00:00:00.000Z",
            ),
            (&"cd".repeat(32), "fp_b", None, "2026-01-02T00:00:00.000Z"),
        ]);
        let speech = &mut listing.recordings[0].0;
        speech.meta.request.path = "/v1/audio/speech".into();
        speech.meta.response.headers = vec![("content-type".into(), "audio/mpeg".into())];
        speech.body = bytes::Bytes::from_static(b"ID3\x04\x00\xff\xfb\x90");
        let rerank = &mut listing.recordings[1].0;
        rerank.meta.request.path = "/v1/rerank".into();
        rerank.meta.response.headers = vec![(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )];
        let routes = crate::config::Config::from_toml("[routes]\ncache = [\"POST /v1/rerank\"]\n")
            .unwrap()
            .routes;
        (listing, routes)
    }

    #[test]
    fn binary_answers_show_their_size_and_type_and_custom_routes_their_name() {
        let (listing, routes) = binary_and_custom();
        let options = Options {
            json: false,
            routes: routes.clone(),
        };
        let text = render(&listing, options, Terminal::plain());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "abababababababab  2026-01-01T00:00:00.000Z  200  audio.speech          POST /v1/audio/speech               tts-1                 fp_a                   8  audio/mpeg",
                "cdcdcdcdcdcdcdcd  2026-01-02T00:00:00.000Z  200  /v1/rerank            POST /v1/rerank                     -                     fp_b                  10  application/json",
            ]
        );
        let doc: Value = serde_json::from_str(&render(
            &listing,
            Options { json: true, routes },
            Terminal::plain(),
        ))
        .unwrap();
        assert_eq!(doc[0]["route"], "audio.speech");
        assert_eq!(doc[0]["content_type"], "audio/mpeg");
        assert_eq!(doc[0]["body_bytes"], 8);
        assert_eq!(doc[1]["route"], "/v1/rerank");
        let unknown = render(&listing, Options::default(), Terminal::plain());
        assert!(
            unknown.lines().nth(1).unwrap().contains("200  -        "),
            "without the config's routes a custom route has no name: {unknown}"
        );
    }

    #[test]
    fn json_is_an_array_of_summaries() {
        let text = render(
            &two(),
            Options {
                json: true,
                ..Options::default()
            },
            Terminal::plain(),
        );
        let doc: Value = serde_json::from_str(&text).unwrap();
        let list = doc.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["key"], "ab".repeat(32));
        assert_eq!(list[0]["model"], "gpt-4o");
        assert_eq!(list[1]["model"], Value::Null);
        assert_eq!(list[1]["query"], "api-version=1");
        assert_eq!(list[0]["body_bytes"], 10);
        assert!(text.ends_with("]\n"));
        let empty = render(
            &listing(&[]),
            Options {
                json: true,
                ..Options::default()
            },
            Terminal::plain(),
        );
        assert_eq!(empty, "[]\n");
    }
}
