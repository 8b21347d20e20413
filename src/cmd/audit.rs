//! `llmtape audit`: the report of fingerprint flips (keys whose
//! `system_fingerprint` changed between recordings), what changed with each,
//! and a summary per model.
//!
//! The analysis (flips, diffs, per-model summaries, the filters and the
//! JSON document) is [`crate::audit`]'s; this module reads the options
//! and prints.

use std::collections::BTreeSet;
use std::io::Write;

use crate::audit::{Change, ChoiceDiff, Flip, LogprobDelta, ModelSummary, Report};
use crate::cmd::listing::{short_key, Listing};
use crate::cmd::paint::{wrap, Terminal};
use crate::cmd::write_json;
use crate::error::CommandError;
use crate::key::RequestKey;

/// Most logprob rows shown per flip in text output (JSON has them all).
const DELTAS_SHOWN: usize = 10;

/// Which flips the audit reports, and how.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// JSON (schema in the README) instead of text.
    pub json: bool,
    /// Only flips recorded at or after this time (RFC 3339 or YYYY-MM-DD).
    pub since: Option<String>,
    /// Only this model.
    pub model: Option<String>,
}

/// Prints the flips in `listing` that pass the options, then the
/// fingerprints and flips per model.
pub fn run(
    listing: &Listing,
    options: &Options,
    terminal: &Terminal,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let since = match &options.since {
        None => None,
        Some(text) => Some(since_bound(text)?),
    };
    let report = Report::of(
        &listing.recordings,
        options.model.as_deref(),
        since.as_deref(),
    );
    if options.json {
        write_json(out, &report.document(&listing.location))?;
        return Ok(());
    }
    let (flips, models) = (&report.flips, &report.models);
    let keys: BTreeSet<RequestKey> = flips.iter().map(|f| f.key).collect();
    writeln!(
        out,
        "audit of {}: {} fingerprint flip(s) in {} key(s)",
        listing.location,
        flips.len(),
        keys.len()
    )?;
    let mut last_key = None;
    for flip in flips {
        // Flips come grouped by key; the key's line heads its group.
        if last_key != Some(flip.key) {
            writeln!(out)?;
            writeln!(
                out,
                "{}  {} {}  {}",
                terminal.paint("1", &short_key(&flip.key)),
                flip.method,
                flip.path,
                flip.model.as_deref().unwrap_or("-")
            )?;
            last_key = Some(flip.key);
        }
        print_flip(flip, terminal, out)?;
    }
    print_models(models, out)
}

/// One flip: the fingerprints and times, the verdict, and what changed.
fn print_flip(flip: &Flip, terminal: &Terminal, out: &mut dyn Write) -> Result<(), CommandError> {
    let verdict = match &flip.change {
        Change::Identical => "identical".to_string(),
        Change::LogprobsOnly { deltas } => format!(
            "logprobs only ({} token(s), largest \u{394} {:.4})",
            deltas.len(),
            flip.change.max_delta()
        ),
        Change::Text { .. } => terminal.paint("33", "text changed"),
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
        Change::Text { choices, deltas } => {
            for c in choices {
                print_choice(c, deltas, terminal, out)?;
            }
            if !deltas.is_empty() {
                print_deltas(deltas, out)?;
            }
        }
        Change::LogprobsOnly { deltas } => print_deltas(deltas, out)?,
    }
    Ok(())
}

/// The table of per-token logprob deltas, at most [`DELTAS_SHOWN`] rows.
fn print_deltas(deltas: &[LogprobDelta], out: &mut dyn Write) -> Result<(), CommandError> {
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
    Ok(())
}

/// What changed in one choice: the word diff wrapped under its label, tool
/// calls, finish reason, and how many tokens still line up (of `deltas`,
/// the flip's, those moved).
fn print_choice(
    c: &ChoiceDiff,
    deltas: &[LogprobDelta],
    terminal: &Terminal,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    if let Some(diff) = &c.text_diff {
        let prefix = format!("    choice {}: ", c.index);
        for (i, line) in wrap(diff, terminal.width.saturating_sub(prefix.len()))
            .iter()
            .enumerate()
        {
            let lead = if i == 0 {
                prefix.clone()
            } else {
                " ".repeat(prefix.len())
            };
            writeln!(out, "{lead}{}", terminal.diff(line))?;
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
    match c.aligned_tokens {
        None => {}
        Some(0) => writeln!(
            out,
            "    choice {} logprobs: no token lines up (the first token differs)",
            c.index
        )?,
        Some(aligned) => {
            let moved = deltas.iter().filter(|d| d.choice == c.index).count();
            let moved = match moved {
                0 => "none moved".to_string(),
                n => format!("{n} moved"),
            };
            writeln!(
                out,
                "    choice {} logprobs: {aligned} aligned token(s), {moved}",
                c.index
            )?;
        }
    }
    Ok(())
}

/// The two tables per model: fingerprints seen, and flips between them.
fn print_models(models: &[ModelSummary], out: &mut dyn Write) -> Result<(), CommandError> {
    writeln!(out)?;
    writeln!(out, "fingerprints by model:")?;
    writeln!(
        out,
        "  {:<28}  {:<20}  {:<24}  {:<24}  {:>10}",
        "MODEL", "FINGERPRINT", "FIRST SEEN", "LAST SEEN", "RECORDINGS"
    )?;
    for m in models {
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
        for m in models {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AUDIT_SCHEMA;
    use crate::record::recording::{test_entry, Recording};
    use serde_json::{json, Value};

    fn chat(key: &str, text: &str, fp: &str, at: &str) -> Recording {
        let body = json!({
            "model": "gpt-4o", "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]
        });
        test_entry(key, body.to_string(), fp, Some("gpt-4o"), at)
    }

    /// One key recorded three times: fp_a, then fp_b with new text, then
    /// fp_b again; and a key that never flipped.
    fn listing() -> Listing {
        let key = "ab".repeat(32);
        let steady = "cd".repeat(32);
        Listing {
            recordings: vec![
                (
                    chat(&key, "Paris is lovely", "fp_b", "2026-03-01T00:00:00.000Z"),
                    vec![
                        chat(&key, "Paris is nice", "fp_a", "2026-01-01T00:00:00.000Z"),
                        chat(&key, "Paris is lovely", "fp_b", "2026-02-01T00:00:00.000Z"),
                    ],
                ),
                (
                    chat(&steady, "Hi", "fp_a", "2026-01-05T00:00:00.000Z"),
                    Vec::new(),
                ),
            ],
            location: "test-store".into(),
        }
    }

    fn render(options: &Options, terminal: Terminal) -> Result<String, CommandError> {
        let mut out = Vec::new();
        run(&listing(), options, &terminal, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn text_lists_each_flip_under_its_key_and_sums_up_per_model() {
        let text = render(&Options::default(), Terminal::plain()).unwrap();
        let head: Vec<&str> = text.lines().take(5).collect();
        assert_eq!(
            head,
            [
                "audit of test-store: 1 fingerprint flip(s) in 1 key(s)",
                "",
                "abababababababab  POST /v1/chat/completions  gpt-4o",
                "  fp_a -> fp_b  (2026-01-01T00:00:00.000Z -> 2026-02-01T00:00:00.000Z)  text changed",
                "    choice 0: Paris is [-nice-]{+lovely+}",
            ]
        );
        assert!(text.contains("\nfingerprints by model:\n"), "{text}");
        assert!(
            text.contains("\n  gpt-4o                        fp_a  "),
            "{text}"
        );
        assert!(text.contains("\nflips by model:\n"), "{text}");
        assert!(!text.contains('\x1b'), "no colour into a pipe");

        let colour = Terminal {
            colour: true,
            ..Terminal::plain()
        };
        let painted = render(&Options::default(), colour).unwrap();
        assert!(painted.contains("\x1b[1mabababababababab\x1b[0m"));
        assert!(painted.contains("\x1b[31m[-nice-]\x1b[0m"));
    }

    /// A chat answer whose words are its tokens, with these logprobs.
    fn with_logprobs(key: &str, text: &str, fp: &str, at: &str, logprobs: &[f64]) -> Recording {
        let tokens: Vec<Value> = text
            .split_inclusive(' ')
            .zip(logprobs)
            .map(|(token, lp)| json!({"token": token, "logprob": lp}))
            .collect();
        let body = json!({
            "model": "gpt-4o", "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": {"content": tokens}, "finish_reason": "stop"}]
        });
        test_entry(key, body.to_string(), fp, Some("gpt-4o"), at)
    }

    /// The flip lines of an audit of one key recorded as `old`, then `new`.
    fn flip_lines(old: Recording, new: Recording) -> Vec<String> {
        let listing = Listing {
            recordings: vec![(new, vec![old])],
            location: "test-store".into(),
        };
        let mut out = Vec::new();
        run(&listing, &Options::default(), &Terminal::plain(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .skip(3)
            .take_while(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn logprobs_only_flips_print_their_table_as_before() {
        let key = "ab".repeat(32);
        let old = with_logprobs(
            &key,
            "Paris is nice",
            "fp_a",
            "2026-01-01T00:00:00.000Z",
            &[-0.1, -0.2, -0.3],
        );
        let new = with_logprobs(
            &key,
            "Paris is nice",
            "fp_b",
            "2026-02-01T00:00:00.000Z",
            &[-0.3, -0.2, -0.35],
        );
        assert_eq!(
            flip_lines(old, new),
            [
                "  fp_a -> fp_b  (2026-01-01T00:00:00.000Z -> 2026-02-01T00:00:00.000Z)  logprobs only (2 token(s), largest \u{394} 0.2000)",
                "    choice   pos  token                  old       new   \u{394} logprob",
                "         0     0  \"Paris \"           90.484%   74.082%    -0.20000",
                "         0     2  \"nice\"             74.082%   70.469%    -0.05000",
            ]
        );
    }

    #[test]
    fn text_flips_show_the_aligned_tokens_deltas_under_the_diff() {
        let key = "ab".repeat(32);
        let old = with_logprobs(
            &key,
            "Paris is nice",
            "fp_a",
            "2026-01-01T00:00:00.000Z",
            &[-0.1, -0.2, -0.3],
        );
        let new = with_logprobs(
            &key,
            "Paris is lovely",
            "fp_b",
            "2026-02-01T00:00:00.000Z",
            &[-0.3, -0.25, -2.0],
        );
        assert_eq!(
            flip_lines(old.clone(), new),
            [
                "  fp_a -> fp_b  (2026-01-01T00:00:00.000Z -> 2026-02-01T00:00:00.000Z)  text changed",
                "    choice 0: Paris is [-nice-]{+lovely+}",
                "    choice 0 logprobs: 2 aligned token(s), 2 moved",
                "    choice   pos  token                  old       new   \u{394} logprob",
                "         0     0  \"Paris \"           90.484%   74.082%    -0.20000",
                "         0     1  \"is \"              81.873%   77.880%    -0.05000",
            ]
        );
        let steady = with_logprobs(
            &key,
            "Paris was nice",
            "fp_b",
            "2026-02-01T00:00:00.000Z",
            &[-0.1, -0.2, -0.3],
        );
        assert_eq!(
            flip_lines(old.clone(), steady)[2],
            "    choice 0 logprobs: 1 aligned token(s), none moved"
        );
        let elsewhere = with_logprobs(
            &key,
            "Lyon is nice",
            "fp_b",
            "2026-02-01T00:00:00.000Z",
            &[-0.1, -0.2, -0.3],
        );
        assert_eq!(
            flip_lines(old, elsewhere)[2],
            "    choice 0 logprobs: no token lines up (the first token differs)"
        );
    }

    #[test]
    fn json_and_the_model_and_since_filters() {
        let all = Options {
            json: true,
            ..Options::default()
        };
        let doc: Value = serde_json::from_str(&render(&all, Terminal::plain()).unwrap()).unwrap();
        assert_eq!(doc["llmtape_audit"], AUDIT_SCHEMA);
        assert_eq!(doc["source"], "test-store");
        assert_eq!(doc["flips"].as_array().unwrap().len(), 1);
        assert_eq!(doc["flips"][0]["change"], "text");
        let count = |options: Options| {
            let text = render(&options, Terminal::plain()).unwrap();
            let doc: Value = serde_json::from_str(&text).unwrap();
            doc["flips"].as_array().unwrap().len()
        };
        let other_model = Options {
            model: Some("gpt-3.5".into()),
            ..all.clone()
        };
        assert_eq!(count(other_model), 0);
        let later = Options {
            since: Some("2026-02-02".into()),
            ..all.clone()
        };
        assert_eq!(count(later), 0, "the flip was recorded on 2026-02-01");
        let earlier = Options {
            since: Some("2026-02-01T00:00:00Z".into()),
            ..all
        };
        assert_eq!(count(earlier), 1);
    }

    #[test]
    fn a_since_that_is_no_date_is_a_usage_error() {
        let bad = Options {
            since: Some("last tuesday".into()),
            ..Options::default()
        };
        let error = render(&bad, Terminal::plain()).unwrap_err();
        assert!(matches!(error, CommandError::Usage(_)));
        assert!(error.to_string().starts_with("--since \"last tuesday\""));
        assert_eq!(
            since_bound("2026-11-20").unwrap(),
            "2026-11-20T00:00:00.000Z"
        );
    }
}
