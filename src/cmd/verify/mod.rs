//! `llmtape verify`: re-sends recorded requests to the upstream and reports
//! which answers would now differ from their recordings.
//!
//! Owns the run (which keys, how many at once, `--update`) and the printed
//! report. What counts as a difference is [`judge`](mod@judge)'s, which keys are
//! re-sent `sample`'s; how two answers differ is audit's business
//! ([`crate::audit::answer_of`], [`crate::audit::compare`]); storing is the
//! recordings'; sending and reading answers is [`ask`]'s (shared with
//! `probe`).
//!
//! The upstream is the one `serve` would use (`--upstream` >
//! `LLMTAPE_UPSTREAM` > `upstream.url` > the default, resolved by the
//! config), with `upstream.api_key_env`'s key when it is set.
//!
//! With `--update`, an answer that differs from its recording is stored as
//! a re-recording (the old one moves to the key's history); an answer that
//! is the same (logprobs within `--logprob-tolerance` included) leaves the
//! recording and its history untouched.
//!
//! # `verify --json` (schema 1)
//!
//! One JSON object; fields are only ever added, never renamed or removed,
//! without bumping `llmtape_verify`.
//!
//! ```text
//! {
//!   "llmtape_verify": 1,                  // schema version (same as audit's)
//!   "source": ".llmtape/store",            // store directory or fixtures folder
//!   "upstream": "https://api.openai.com",  // the upstream asked, resolved as for serve
//!   "logprob_tolerance": 0.0,
//!   "summary": {
//!     "checked": 3,                        // recordings re-sent
//!     "same": 1,                           // same content and fingerprint
//!     "logprobs_drifted": 1,               // same text, a logprob moved > tolerance
//!     "different_text": 1,                 // text, tool calls or finish reason changed
//!     "different_fingerprint": 1,          // system_fingerprint changed (any content)
//!     "errors": 0,                         // could not be verified
//!     "differ": 2,                         // recordings that differ (the exit code)
//!     "updated": 0                         // re-recorded by --update
//!   },
//!   "results": [                           // one per recording, sorted by key
//!     {
//!       "key": "3f9a...",                  // 64 hex characters
//!       "method": "POST",
//!       "path": "/v1/chat/completions",
//!       "namespace": "",                   // x-llmtape-namespace ("" when none)
//!       "model": "gpt-4o-mini",            // of the recording, or null
//!       "verdict": "same" | "logprobs_drifted" | "different_text" | "error",
//!       "differs": true,                   // verdict is a drift or text change, or the fingerprint changed
//!       "fingerprint_changed": true,
//!       "old_fingerprint": "fp_a",         // recorded (or null)
//!       "new_fingerprint": "fp_b",         // of the fresh answer (null on error)
//!       "max_logprob_delta": 0.2,          // largest |new - old| token logprob, null if none moved
//!       "change": {...},                   // audit's change object, as in `audit --json` flips:
//!                                          // {"change":"identical"} | {"change":"logprobs","deltas":[...]}
//!                                          // | {"change":"text","choices":[...],"deltas":[...]}
//!                                          // (deltas of the tokens that still line up); null on error
//!       "error": null,                     // why it could not be verified (or stored)
//!       "attempts": 1,                     // requests sent (more after 429s)
//!       "updated": false                   // stored as a re-recording by --update
//!     }
//!   ]
//! }
//! ```
//!
//! Exit codes: 0 when nothing differs, 1 when something differs or could
//! not be verified, 2 for configuration and store problems.

pub(crate) mod ask;
pub(crate) mod judge;
mod sample;

use std::io::Write;

use futures_util::StreamExt;

use crate::audit::AUDIT_SCHEMA;
use crate::cmd::filter::Filter;
use crate::cmd::listing::short_key;
use crate::cmd::paint::Terminal;
use crate::cmd::write_json;
use crate::config::Config;
use crate::error::CommandError;
use crate::key::RequestKey;
use crate::store::Tier;

use ask::{Asker, Outgoing, Progress};
use judge::{error_report, judge, KeyReport, Summary, Verdict};
use sample::Picker;

/// Which recordings `verify` re-sends, how it judges and what it prints.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// Re-send only this many recordings, picked at random.
    pub sample: Option<usize>,
    /// Which recordings.
    pub filter: Filter,
    /// Logprob changes up to this size (absolute, natural log) do not count
    /// as drift; must be a number >= 0.
    pub logprob_tolerance: f64,
    /// Store answers that differ as re-recordings (the old ones go to
    /// history).
    pub update: bool,
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// JSON instead of text.
    pub json: bool,
}

impl Default for Options {
    /// The command line's defaults: every recording, no tolerance, four
    /// requests at a time, text.
    fn default() -> Options {
        Options {
            sample: None,
            filter: Filter::default(),
            logprob_tolerance: 0.0,
            update: false,
            concurrency: 4,
            json: false,
        }
    }
}

/// Re-sends the selected recordings and prints the report; true when
/// nothing differs. Recordings that could not be verified make it an
/// error (exit 1) after the report is printed.
pub async fn run(
    config: &Config,
    recordings: &dyn Tier,
    options: &Options,
    terminal: &Terminal,
    out: &mut dyn Write,
) -> Result<bool, CommandError> {
    if !(options.logprob_tolerance.is_finite() && options.logprob_tolerance >= 0.0) {
        return Err(CommandError::Usage(format!(
            "--logprob-tolerance {} must be a number >= 0",
            options.logprob_tolerance
        )));
    }
    let keys = select(recordings, &options.filter, options.sample)?;
    if keys.is_empty() {
        return Err(CommandError::NotFound(format!(
            "nothing to verify: no recording in {} matches",
            recordings.location().display()
        )));
    }
    let asker = Asker::new(config)?;
    let progress = Progress::new("verifying", keys.len());
    let mut reports = Vec::with_capacity(keys.len());
    {
        let mut pending = futures_util::stream::iter(
            keys.iter()
                .map(|key| verify_one(&asker, recordings, key, options, config.store.history)),
        )
        .buffer_unordered(options.concurrency.max(1));
        while let Some(report) = pending.next().await {
            reports.push(report);
            progress.tick(reports.len());
        }
    }
    progress.finish();
    if options.update {
        recordings.flush()?;
    }
    reports.sort_by_key(|report| report.key);
    let summary = Summary::of(&reports);
    if options.json {
        let doc = serde_json::json!({
            "llmtape_verify": AUDIT_SCHEMA,
            "source": recordings.location(),
            "upstream": asker.display(),
            "logprob_tolerance": options.logprob_tolerance,
            "summary": summary,
            "results": reports,
        });
        write_json(out, &doc)?;
    } else {
        print_text(out, &reports, &summary, asker.display(), options, terminal)?;
    }
    if summary.errors > 0 {
        return Err(CommandError::Incomplete(format!(
            "{} of {} recording(s) could not be verified (see above); {} differ",
            summary.errors, summary.checked, summary.differ
        )));
    }
    Ok(summary.differ == 0)
}

/// Re-sends one recording and compares; never fails, errors go in the report.
async fn verify_one(
    asker: &Asker,
    recordings: &dyn Tier,
    key: &RequestKey,
    options: &Options,
    history: usize,
) -> KeyReport {
    let recorded = match recordings.get(key) {
        Ok(Some(entry)) => entry,
        Ok(None) => return error_report(key, "the recording disappeared during the run"),
        Err(error) => return error_report(key, &error.to_string()),
    };
    let mut report = KeyReport::for_entry(&recorded);
    let request = match Outgoing::from_recorded(asker, &recorded.meta.request) {
        Ok(mut request) => {
            request.key = *key;
            request
        }
        Err(reason) => {
            report.error = Some(reason);
            return report;
        }
    };
    let asked = asker.ask(&request).await;
    report.attempts = asked.attempts;
    let mut fresh = match asked.answer {
        Ok(fresh) => fresh,
        Err(error) => {
            report.error = Some(error.to_string());
            return report;
        }
    };
    fresh.meta.request = recorded.meta.request.clone();
    judge(&recorded, &fresh, options.logprob_tolerance, &mut report);
    if options.update && report.differs {
        match recordings.put(key, &fresh, history, true) {
            Ok(written) => report.updated = written,
            Err(error) => report.error = Some(format!("the new answer was not stored: {error}")),
        }
    }
    report
}

/// The keys to verify: every recording `filter` keeps, or `sample` of them
/// picked at random. Only keys are kept, so a large store costs little
/// memory; each recording is read again when its turn comes.
fn select(
    recordings: &dyn Tier,
    filter: &Filter,
    sample: Option<usize>,
) -> Result<Vec<RequestKey>, CommandError> {
    let mut picker = Picker::new(sample);
    for item in recordings.iter() {
        match item {
            Ok(entry) => picker.offer(&entry, filter),
            Err(error) if error.is_corrupt() => {
                tracing::warn!(%error, "skipping unreadable recording");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(picker.keys())
}

/// One aligned line per recording, then the summary line.
fn print_text(
    out: &mut dyn Write,
    reports: &[KeyReport],
    summary: &Summary,
    upstream: &str,
    options: &Options,
    terminal: &Terminal,
) -> Result<(), CommandError> {
    let request = |r: &KeyReport| format!("{} {}", r.method, r.path);
    let model = |r: &KeyReport| r.model.clone().unwrap_or_else(|| "-".into());
    let request_width = reports.iter().map(|r| request(r).len()).max().unwrap_or(0);
    let model_width = reports.iter().map(|r| model(r).len()).max().unwrap_or(0);
    for r in reports {
        let verdict = r.describe();
        let code = match (r.verdict, r.differs, r.error.is_some()) {
            (_, _, true) => "31",
            (_, false, false) => "32",
            (Verdict::DifferentText, _, _) => "31",
            _ => "33",
        };
        let verdict = terminal.paint(code, &verdict);
        writeln!(
            out,
            "{:<16}  {:<request_width$}  {:<model_width$}  {verdict}",
            short_key(&r.key),
            request(r),
            model(r),
        )?;
    }
    let mut line = format!(
        "verified {} recording(s) against {upstream}: {} same, {} logprobs drifted, {} different text, {} different fingerprint, {} error(s)",
        summary.checked,
        summary.same,
        summary.logprobs_drifted,
        summary.different_text,
        summary.different_fingerprint,
        summary.errors
    );
    if options.logprob_tolerance > 0.0 {
        line.push_str(&format!(
            " (logprob tolerance {})",
            options.logprob_tolerance
        ));
    }
    if options.update {
        line.push_str(&format!("; {} updated", summary.updated));
    }
    writeln!(out, "{line}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;

    fn answer(text: &str, fp: &str) -> crate::record::recording::Recording {
        let body = serde_json::json!({
            "model": "gpt-4o", "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]
        });
        test_entry(&"ab".repeat(32), body.to_string(), fp, Some("gpt-4o"), "t")
    }

    #[test]
    fn text_is_one_aligned_line_per_key_then_the_summary() {
        let recorded = answer("Paris", "fp_a");
        let mut same = judge::KeyReport::for_entry(&recorded);
        judge(&recorded, &answer("Paris", "fp_a"), 0.0, &mut same);
        let mut changed = judge::KeyReport::for_entry(&recorded);
        changed.key = RequestKey::from_bytes([0xcd; 32]);
        changed.model = None;
        judge(&recorded, &answer("Lyon", "fp_b"), 0.0, &mut changed);
        let failed = error_report(&RequestKey::from_hex(&"ef".repeat(32)).unwrap(), "boom");
        let reports = [same, changed, failed];
        let summary = Summary::of(&reports);
        let options = Options {
            update: true,
            ..Options::default()
        };
        let render = |terminal: Terminal| {
            let mut out = Vec::new();
            print_text(
                &mut out,
                &reports,
                &summary,
                "http://up",
                &options,
                &terminal,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render(Terminal::plain()),
            "abababababababab  POST /v1/chat/completions  gpt-4o  same\n\
             cdcdcdcdcdcdcdcd  POST /v1/chat/completions  -       different text, different fingerprint fp_a -> fp_b\n\
             efefefefefefefef                             -       error: boom\n\
             verified 3 recording(s) against http://up: 1 same, 0 logprobs drifted, 1 different text, 1 different fingerprint, 1 error(s); 0 updated\n"
        );
        let colour = render(Terminal {
            colour: true,
            ..Terminal::plain()
        });
        assert!(colour.contains("gpt-4o  \x1b[32msame\x1b[0m\n"), "{colour}");
        assert!(
            colour.contains("  \x1b[31merror: boom\x1b[0m\n"),
            "{colour}"
        );
    }
}
