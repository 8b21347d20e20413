//! `ls` and `show`: read-only views of the recordings in a store.
//!
//! Nothing here can print a credential: none is ever stored (see
//! [`crate::record::redact`]).

use std::io::{IsTerminal, Write};

use serde_json::{json, Value};

use crate::app::CommandError;
use crate::audit::Change;
use crate::key::{canonical_json, Canonical, CanonicalBody, CANONICAL_VERSION};
use crate::record::recording::base64_encode;
use crate::record::recording::{Recording, RequestBody};
use crate::store::FixtureDir;
use crate::store::{SledStore, StoreError};

/// How many candidates an ambiguous `show` lists.
const AMBIGUOUS_LISTED: usize = 10;

/// Recordings read for `ls` and `show`, from a store or a fixtures folder.
pub struct Listing {
    /// Every readable recording with its history, in key order.
    pub recordings: Vec<(Recording, Vec<Recording>)>,
    /// Where they came from.
    pub location: String,
}

impl Listing {
    /// Reads a store. Corrupt entries are reported on stderr and skipped;
    /// history is read only when `with_history`.
    pub fn from_store(store: &SledStore, with_history: bool) -> Result<Listing, CommandError> {
        let mut recordings = Vec::new();
        let mut corrupt = 0usize;
        for item in store.iter() {
            match item {
                Ok(entry) => {
                    let history = match (with_history, entry.key()) {
                        (true, Some(key)) => store.history(&key)?,
                        _ => Vec::new(),
                    };
                    recordings.push((entry, history));
                }
                Err(error @ StoreError::Corrupt { .. }) => {
                    corrupt += 1;
                    eprintln!("llmtape: warning: {error}");
                }
                Err(error) => return Err(error.into()),
            }
        }
        if corrupt > 0 {
            eprintln!("llmtape: {corrupt} corrupt recording(s) skipped; they replay as misses and are replaced when re-recorded");
        }
        Ok(Listing {
            recordings,
            location: store.path().display().to_string(),
        })
    }

    /// Reads a fixtures folder.
    pub fn from_fixtures(dir: &FixtureDir) -> Listing {
        Listing {
            recordings: dir.all(),
            location: dir.root().display().to_string(),
        }
    }
}

/// Prints one line per recording (or a JSON array with `json`).
pub fn ls(listing: &Listing, as_json: bool, out: &mut impl Write) -> Result<(), CommandError> {
    if as_json {
        let list: Vec<Value> = listing
            .recordings
            .iter()
            .map(|(e, _)| summary_json(e))
            .collect();
        serde_json::to_writer_pretty(&mut *out, &list).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    if std::io::stdout().is_terminal() {
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
            &m.key[..16.min(m.key.len())],
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

/// Prints one recording whole, found by key prefix.
pub fn show(
    listing: &Listing,
    prefix: &str,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CommandError::NotFound(format!(
            "{prefix:?} is not a key prefix: keys are hex, as `llmtape ls` prints them"
        )));
    }
    let found: Vec<&(Recording, Vec<Recording>)> = listing
        .recordings
        .iter()
        .filter(|(e, _)| e.meta.key.starts_with(&prefix))
        .collect();
    let (entry, history) = match found.as_slice() {
        [] => {
            return Err(CommandError::NotFound(format!(
                "no recording has a key starting with {prefix} in {}",
                listing.location
            )))
        }
        [one] => *one,
        many => {
            let keys: Vec<&str> = many
                .iter()
                .take(AMBIGUOUS_LISTED)
                .map(|(e, _)| e.meta.key.as_str())
                .collect();
            return Err(CommandError::NotFound(format!(
                "{prefix} matches {} recordings ({}{}); give more characters",
                many.len(),
                keys.join(", "),
                if many.len() > AMBIGUOUS_LISTED {
                    ", ..."
                } else {
                    ""
                }
            )));
        }
    };
    if as_json {
        let mut value = full_json(entry);
        value["history"] = Value::Array(history.iter().map(full_json).collect());
        serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::from)?;
        writeln!(out)?;
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
    writeln!(
        out,
        "model:              {}",
        m.model.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "system_fingerprint: {}",
        m.system_fingerprint.as_deref().unwrap_or("-")
    )?;
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

/// `key explain`: prints a request's canonical form and key.
pub fn explain(
    canonical: &Canonical,
    scope_note: Option<&str>,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    writeln!(out, "canonical form (version {CANONICAL_VERSION}):")?;
    writeln!(out, "  method:    {}", canonical.method)?;
    writeln!(out, "  path:      {}", canonical.path)?;
    writeln!(
        out,
        "  query:     {}",
        if canonical.query.is_empty() {
            "(none)"
        } else {
            &canonical.query
        }
    )?;
    writeln!(
        out,
        "  namespace: {}",
        if canonical.namespace.is_empty() {
            "(none)"
        } else {
            &canonical.namespace
        }
    )?;
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
    if let Some(note) = scope_note {
        writeln!(out, "note:        {note}")?;
    }
    writeln!(out, "key:         {}", canonical.key())?;
    Ok(())
}

fn request_target(entry: &Recording) -> String {
    let r = &entry.meta.request;
    if r.query.is_empty() {
        r.path.clone()
    } else {
        format!("{}?{}", r.path, r.query)
    }
}

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
        "model": m.model,
        "recorded_at": m.recorded_at,
        "latency_ms": m.latency_ms,
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

/// Most logprob rows shown per flip in text output (JSON has them all).
const DELTAS_SHOWN: usize = 10;

/// Text width that diffs wrap at when the terminal's is unknown.
const DEFAULT_WIDTH: usize = 100;

/// ANSI colour when writing to a terminal (and `NO_COLOR` is unset).
struct Paint(bool);

impl Paint {
    fn detect() -> Paint {
        Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Colours `[-removed-]` red and `{+added+}` green.
    fn diff(&self, text: &str) -> String {
        if !self.0 {
            return text.to_string();
        }
        text.replace("[-", "\x1b[31m[-")
            .replace("-]", "-]\x1b[0m")
            .replace("{+", "\x1b[32m{+")
            .replace("+}", "+}\x1b[0m")
    }
}

/// `audit`: fingerprint flips, what changed, and a summary per model.
pub fn audit(
    listing: &Listing,
    args: &crate::cli::AuditArgs,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let since = match &args.since {
        None => None,
        Some(text) => Some(since_bound(text)?),
    };
    let model_matches = |model: &Option<String>| {
        args.model
            .as_ref()
            .is_none_or(|m| model.as_ref() == Some(m))
    };
    let mut flips = Vec::new();
    let mut recordings: Vec<&Recording> = Vec::new();
    for (entry, history) in &listing.recordings {
        for e in history.iter().chain(std::iter::once(entry)) {
            if model_matches(&e.meta.model)
                && since.as_ref().is_none_or(|s| e.meta.recorded_at >= *s)
            {
                recordings.push(e);
            }
        }
        flips.extend(
            crate::audit::flips(entry, history)
                .into_iter()
                .filter(|f| model_matches(&f.model))
                .filter(|f| since.as_ref().is_none_or(|s| f.new.recorded_at >= *s)),
        );
    }
    let models = crate::audit::summarize(&recordings, &flips);
    if args.json {
        let doc = json!({
            "llmtape_audit": crate::audit::AUDIT_SCHEMA,
            "source": listing.location,
            "flips": flips,
            "models": models,
        });
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let paint = Paint::detect();
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_WIDTH)
        .max(40);
    let keys: std::collections::BTreeSet<&str> = flips.iter().map(|f| f.key.as_str()).collect();
    writeln!(
        out,
        "audit of {}: {} fingerprint flip(s) in {} key(s)",
        listing.location,
        flips.len(),
        keys.len()
    )?;
    let mut last_key = "";
    for flip in &flips {
        if flip.key != last_key {
            writeln!(out)?;
            writeln!(
                out,
                "{}  {} {}  {}",
                paint.wrap("1", &flip.key[..16.min(flip.key.len())]),
                flip.method,
                flip.path,
                flip.model.as_deref().unwrap_or("-")
            )?;
            last_key = &flip.key;
        }
        let verdict = match &flip.change {
            Change::Identical => "identical".to_string(),
            Change::LogprobsOnly { deltas } => format!(
                "logprobs only ({} token(s), largest \u{394} {:.4})",
                deltas.len(),
                flip.change.max_delta()
            ),
            Change::Text { .. } => paint.wrap("33", "text changed"),
        };
        writeln!(
            out,
            "  {} -> {}  ({} -> {})  {verdict}",
            flip.old.fingerprint.as_deref().unwrap_or("-"),
            flip.new.fingerprint.as_deref().unwrap_or("-"),
            flip.old.recorded_at,
            flip.new.recorded_at,
        )?;
        match &flip.change {
            Change::Identical => {}
            Change::Text { choices } => {
                for c in choices {
                    if let Some(diff) = &c.text_diff {
                        let prefix = format!("    choice {}: ", c.index);
                        for (i, line) in wrap(diff, width.saturating_sub(prefix.len()))
                            .iter()
                            .enumerate()
                        {
                            let lead = if i == 0 {
                                prefix.clone()
                            } else {
                                " ".repeat(prefix.len())
                            };
                            writeln!(out, "{lead}{}", paint.diff(line))?;
                        }
                    }
                    if let Some((old, new)) = &c.tool_calls {
                        writeln!(out, "    choice {} tool calls: {old} -> {new}", c.index)?;
                    }
                    if let Some((old, new)) = &c.finish_reason {
                        writeln!(
                            out,
                            "    choice {} finish_reason: {} -> {}",
                            c.index,
                            old.as_deref().unwrap_or("-"),
                            new.as_deref().unwrap_or("-")
                        )?;
                    }
                }
            }
            Change::LogprobsOnly { deltas } => {
                writeln!(
                    out,
                    "    {:>6}  {:>4}  {:<16}  {:>8}  {:>8}  {:>10}",
                    "choice", "pos", "token", "old", "new", "\u{394} logprob"
                )?;
                for d in deltas.iter().take(DELTAS_SHOWN) {
                    writeln!(
                        out,
                        "    {:>6}  {:>4}  {:<16}  {:>7.3}%  {:>7.3}%  {:>+10.5}",
                        d.choice,
                        d.position,
                        format!("{:?}", d.token),
                        d.old_percent,
                        d.new_percent,
                        d.delta
                    )?;
                }
                if deltas.len() > DELTAS_SHOWN {
                    writeln!(
                        out,
                        "    ... {} more (see --json)",
                        deltas.len() - DELTAS_SHOWN
                    )?;
                }
            }
        }
    }
    writeln!(out)?;
    writeln!(out, "fingerprints by model:")?;
    writeln!(
        out,
        "  {:<28}  {:<20}  {:<24}  {:<24}  {:>10}",
        "MODEL", "FINGERPRINT", "FIRST SEEN", "LAST SEEN", "RECORDINGS"
    )?;
    for m in &models {
        for s in &m.fingerprints {
            writeln!(
                out,
                "  {:<28}  {:<20}  {:<24}  {:<24}  {:>10}",
                m.model, s.fingerprint, s.first_seen, s.last_seen, s.recordings
            )?;
        }
    }
    if models.iter().any(|m| !m.transitions.is_empty()) {
        writeln!(out)?;
        writeln!(out, "flips by model:")?;
        writeln!(
            out,
            "  {:<28}  {:<42}  {:>5}  {:>5}  {:>8}  {:>9}",
            "MODEL", "FROM -> TO", "FLIPS", "TEXT", "LOGPROBS", "IDENTICAL"
        )?;
        for m in &models {
            for t in &m.transitions {
                writeln!(
                    out,
                    "  {:<28}  {:<42}  {:>5}  {:>5}  {:>8}  {:>9}",
                    m.model,
                    format!("{} -> {}", t.from, t.to),
                    t.flips,
                    t.text,
                    t.logprobs,
                    t.identical
                )?;
            }
        }
    }
    Ok(())
}

/// `--since`: RFC 3339, or a date meaning its midnight UTC; returned in the
/// form recordings use, so string order is time order.
fn since_bound(text: &str) -> Result<String, CommandError> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    let time = humantime::parse_rfc3339_weak(&full).map_err(|e| {
        CommandError::Usage(format!(
            "--since {text:?} is not a date ({e}); write e.g. 2026-11-20 or 2026-11-20T08:00:00Z"
        ))
    })?;
    Ok(crate::record::recording::rfc3339(time))
}

/// Wraps text at spaces to lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_inclusive(' ') {
            if !line.is_empty() && line.chars().count() + word.chars().count() > width {
                lines.push(std::mem::take(&mut line).trim_end().to_string());
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}
