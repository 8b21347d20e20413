//! `llmtape verify`: re-sends recorded requests to the upstream and reports
//! which answers would now differ from their recordings.
//!
//! Owns what counts as a difference (text, logprobs beyond a tolerance, the
//! `system_fingerprint`) and the report. How two answers differ is audit's
//! business ([`audit::answer_of`], [`audit::compare`]); storing is the
//! recordings'; sending and reading answers is [`ask`]'s (shared with
//! `probe`).
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
//!   "upstream": "https://api.openai.com",
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
//!                                          // | {"change":"text","choices":[...]}; null on error
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

pub mod ask;

use std::collections::BinaryHeap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::Serialize;

use crate::audit::{self, Change, AUDIT_SCHEMA};
use crate::cmd::filter::Filter;
use crate::cmd::listing::short_key;
use crate::cmd::paint::Terminal;
use crate::cmd::write_json;
use crate::config::Config;
use crate::error::CommandError;
use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::store::Recordings;
use crate::store::StoreError;

use ask::{Asker, Outgoing, Progress};

/// Which recordings `verify` re-sends, how it judges and what it prints.
#[derive(Debug, Clone)]
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

/// What a fresh answer says about its recording's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same text, tool calls and finish reasons; logprobs within tolerance.
    Same,
    /// Same text; a token logprob moved more than the tolerance.
    LogprobsDrifted,
    /// Text, tool calls or finish reason changed.
    DifferentText,
    /// No answer to compare (upstream error, rate limit, unreadable recording).
    Error,
}

impl Verdict {
    /// The words in text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::LogprobsDrifted => "logprobs drifted",
            Verdict::DifferentText => "different text",
            Verdict::Error => "error",
        }
    }
}

/// The outcome for one recording (one element of `results` in `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The key, 64 hex characters.
    pub key: String,
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// `x-llmtape-namespace` of the recording ("" when none).
    pub namespace: String,
    /// Model of the recording.
    pub model: Option<String>,
    /// How the content compares.
    pub verdict: Verdict,
    /// True when this recording counts as different (for the exit code).
    pub differs: bool,
    /// True when the fingerprints differ.
    pub fingerprint_changed: bool,
    /// The recorded fingerprint.
    pub old_fingerprint: Option<String>,
    /// The fresh answer's fingerprint.
    pub new_fingerprint: Option<String>,
    /// The largest token logprob change, if any moved.
    pub max_logprob_delta: Option<f64>,
    /// audit's comparison of the two answers.
    pub change: Option<Change>,
    /// Why the recording could not be verified or updated.
    pub error: Option<String>,
    /// Requests sent.
    pub attempts: u32,
    /// Stored as a re-recording.
    pub updated: bool,
}

impl KeyReport {
    fn for_entry(entry: &Recording) -> KeyReport {
        let r = &entry.meta.request;
        KeyReport {
            key: entry.meta.key.clone(),
            method: r.method.clone(),
            path: r.path.clone(),
            namespace: r.namespace.clone(),
            model: entry.meta.model.clone(),
            verdict: Verdict::Error,
            differs: false,
            fingerprint_changed: false,
            old_fingerprint: entry.meta.system_fingerprint.clone(),
            new_fingerprint: None,
            max_logprob_delta: None,
            change: None,
            error: None,
            attempts: 0,
            updated: false,
        }
    }

    /// The verdict in words, fingerprint change included, e.g.
    /// `different text, different fingerprint fp_a -> fp_b`.
    pub fn describe(&self) -> String {
        if let Some(error) = &self.error {
            if self.verdict == Verdict::Error {
                return format!("error: {error}");
            }
        }
        let mut parts = Vec::new();
        match self.verdict {
            Verdict::Same => {
                if !self.fingerprint_changed {
                    parts.push(match self.max_logprob_delta {
                        Some(delta) => {
                            format!("same (logprobs within tolerance, largest \u{394} {delta:.6})")
                        }
                        None => "same".to_string(),
                    });
                }
            }
            Verdict::LogprobsDrifted => parts.push(format!(
                "logprobs drifted (largest \u{394} {:.6})",
                self.max_logprob_delta.unwrap_or(0.0)
            )),
            Verdict::DifferentText => parts.push("different text".into()),
            Verdict::Error => parts.push("error".into()),
        }
        if self.fingerprint_changed {
            parts.push(format!(
                "different fingerprint {} -> {}",
                self.old_fingerprint.as_deref().unwrap_or("-"),
                self.new_fingerprint.as_deref().unwrap_or("-")
            ));
        }
        let mut text = parts.join(", ");
        if self.updated {
            text.push_str("; updated");
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("; {error}"));
        }
        text
    }
}

/// Compares a fresh answer with its recording. Logprob moves up to
/// `tolerance` (absolute, natural log) do not count.
pub fn judge(recorded: &Recording, fresh: &Recording, tolerance: f64, report: &mut KeyReport) {
    let change = audit::compare(&audit::answer_of(recorded), &audit::answer_of(fresh));
    report.new_fingerprint = fresh.meta.system_fingerprint.clone();
    report.fingerprint_changed = recorded.meta.system_fingerprint != fresh.meta.system_fingerprint;
    report.max_logprob_delta = match &change {
        Change::LogprobsOnly { .. } => Some(change.max_delta()),
        _ => None,
    };
    report.verdict = match &change {
        Change::Identical => Verdict::Same,
        Change::LogprobsOnly { .. } if change.max_delta() <= tolerance => Verdict::Same,
        Change::LogprobsOnly { .. } => Verdict::LogprobsDrifted,
        Change::Text { .. } => Verdict::DifferentText,
    };
    report.differs = report.verdict != Verdict::Same || report.fingerprint_changed;
    report.change = Some(change);
}

/// Counts over all results (`summary` in `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Recordings re-sent.
    pub checked: usize,
    /// Same content and fingerprint.
    pub same: usize,
    /// Same text, logprobs moved beyond the tolerance.
    pub logprobs_drifted: usize,
    /// Content changed.
    pub different_text: usize,
    /// Fingerprint changed.
    pub different_fingerprint: usize,
    /// Could not be verified.
    pub errors: usize,
    /// Recordings that differ.
    pub differ: usize,
    /// Re-recorded by `--update`.
    pub updated: usize,
}

impl Summary {
    /// Tallies the reports.
    pub fn of(reports: &[KeyReport]) -> Summary {
        let mut s = Summary {
            checked: reports.len(),
            ..Summary::default()
        };
        for r in reports {
            match r.verdict {
                Verdict::Same if !r.fingerprint_changed => s.same += 1,
                Verdict::Same => {}
                Verdict::LogprobsDrifted => s.logprobs_drifted += 1,
                Verdict::DifferentText => s.different_text += 1,
                Verdict::Error => {}
            }
            s.different_fingerprint += usize::from(r.fingerprint_changed);
            s.errors += usize::from(r.error.is_some());
            s.differ += usize::from(r.differs);
            s.updated += usize::from(r.updated);
        }
        s
    }
}

/// Re-sends the selected recordings and prints the report; true when
/// nothing differs. Recordings that could not be verified make it an
/// error (exit 1) after the report is printed.
pub async fn run(
    config: &Config,
    recordings: &Recordings,
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
    reports.sort_by(|a, b| a.key.cmp(&b.key));
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
    recordings: &Recordings,
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

fn error_report(key: &RequestKey, reason: &str) -> KeyReport {
    KeyReport {
        key: key.to_hex(),
        method: String::new(),
        path: String::new(),
        namespace: String::new(),
        model: None,
        verdict: Verdict::Error,
        differs: false,
        fingerprint_changed: false,
        old_fingerprint: None,
        new_fingerprint: None,
        max_logprob_delta: None,
        change: None,
        error: Some(reason.to_string()),
        attempts: 0,
        updated: false,
    }
}

/// The keys to verify: every recording `filter` keeps, or `sample` of them
/// picked at random. Only keys are kept, so a large store costs little
/// memory; each recording is read again when its turn comes.
fn select(
    recordings: &Recordings,
    filter: &Filter,
    sample: Option<usize>,
) -> Result<Vec<RequestKey>, CommandError> {
    let mut picker = Picker::new(sample);
    match recordings {
        Recordings::Store(store) => {
            for item in store.iter() {
                match item {
                    Ok(entry) => picker.offer(&entry, filter),
                    Err(error @ StoreError::Corrupt { .. }) => {
                        tracing::warn!(%error, "skipping unreadable recording");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Recordings::Fixtures(dir) => {
            for (entry, _) in dir.all() {
                picker.offer(&entry, filter);
            }
        }
    }
    Ok(picker.keys())
}

/// Keeps every key, or a uniform random sample of `limit` keys: each key
/// gets a random rank (a keyed hash under a per-run seed) and the lowest
/// ranks are kept, in a heap of at most `limit` entries.
struct Picker {
    limit: Option<usize>,
    seed: [u8; 32],
    ranked: BinaryHeap<([u8; 32], RequestKey)>,
    all: Vec<RequestKey>,
}

impl Picker {
    fn new(limit: Option<usize>) -> Picker {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut hasher = blake3::Hasher::new_derive_key("llmtape verify sample seed");
        hasher.update(&nanos.to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        Picker {
            limit,
            seed: *hasher.finalize().as_bytes(),
            ranked: BinaryHeap::new(),
            all: Vec::new(),
        }
    }

    fn offer(&mut self, entry: &Recording, filter: &Filter) {
        if !filter.keeps(entry) {
            return;
        }
        let Some(key) = entry.key() else {
            tracing::warn!(key = %entry.meta.key, "skipping a recording with an invalid key");
            return;
        };
        match self.limit {
            None => self.all.push(key),
            Some(limit) => {
                let rank = *blake3::keyed_hash(&self.seed, key.as_bytes()).as_bytes();
                self.ranked.push((rank, key));
                if self.ranked.len() > limit {
                    self.ranked.pop();
                }
            }
        }
    }

    fn keys(self) -> Vec<RequestKey> {
        let mut keys = match self.limit {
            None => self.all,
            Some(_) => self.ranked.into_iter().map(|(_, key)| key).collect(),
        };
        keys.sort();
        keys
    }
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
    use serde_json::Value;

    fn chat(content: &str, fp: &str, first_logprob: f64) -> Recording {
        let tokens: Vec<Value> = content
            .split_inclusive(' ')
            .enumerate()
            .map(|(i, t)| serde_json::json!({"token": t, "logprob": if i == 0 { first_logprob } else { -0.01 }}))
            .collect();
        let body = serde_json::json!({
            "model": "gpt-4o", "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": tokens}, "finish_reason": "stop"}]
        });
        crate::record::recording::test_entry(
            &"ab".repeat(32),
            body.to_string(),
            fp,
            Some("gpt-4o"),
            "2026-01-01T00:00:00.000Z",
        )
    }

    fn judged(old: &Recording, new: &Recording, tolerance: f64) -> KeyReport {
        let mut report = KeyReport::for_entry(old);
        judge(old, new, tolerance, &mut report);
        report
    }

    #[test]
    fn verdicts_follow_text_logprobs_tolerance_and_fingerprint() {
        let old = chat("Paris is nice", "fp_a", -0.1);
        let same = judged(&old, &chat("Paris is nice", "fp_a", -0.1), 0.0);
        assert_eq!((same.verdict, same.differs), (Verdict::Same, false));
        assert_eq!(same.describe(), "same");

        let drift = judged(&old, &chat("Paris is nice", "fp_a", -0.3), 0.0);
        assert_eq!(drift.verdict, Verdict::LogprobsDrifted);
        assert!(drift.differs);
        assert!((drift.max_logprob_delta.unwrap() - 0.2).abs() < 1e-12);

        let tolerated = judged(&old, &chat("Paris is nice", "fp_a", -0.3), 0.25);
        assert_eq!(
            (tolerated.verdict, tolerated.differs),
            (Verdict::Same, false)
        );
        assert!(tolerated
            .describe()
            .starts_with("same (logprobs within tolerance"));

        let text = judged(&old, &chat("Paris is lovely", "fp_a", -0.1), 1.0);
        assert_eq!((text.verdict, text.differs), (Verdict::DifferentText, true));

        let flipped = judged(&old, &chat("Paris is lovely", "fp_b", -0.1), 0.0);
        assert!(flipped.fingerprint_changed && flipped.differs);
        assert_eq!(
            flipped.describe(),
            "different text, different fingerprint fp_a -> fp_b"
        );
        let only_fp = judged(&old, &chat("Paris is nice", "fp_b", -0.1), 0.0);
        assert_eq!(only_fp.verdict, Verdict::Same);
        assert!(only_fp.differs, "a fingerprint change alone counts");
        assert_eq!(only_fp.describe(), "different fingerprint fp_a -> fp_b");

        let summary = Summary::of(&[same, drift, tolerated, text, flipped, only_fp]);
        assert_eq!(
            (
                summary.same,
                summary.logprobs_drifted,
                summary.different_text,
                summary.different_fingerprint,
                summary.differ
            ),
            (2, 1, 2, 2, 4)
        );
    }

    #[test]
    fn a_sample_is_the_asked_size_and_varies_between_runs() {
        let entries: Vec<Recording> = (0u8..50)
            .map(|i| {
                let mut e = chat("x", "fp", -0.1);
                e.meta.key = format!("{i:02x}").repeat(32);
                e
            })
            .collect();
        let pick = || {
            let mut picker = Picker::new(Some(5));
            for e in &entries {
                picker.offer(e, &Filter::default());
            }
            picker.keys()
        };
        let first = pick();
        assert_eq!(first.len(), 5);
        assert!(first.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert!(
            (0..20).any(|_| pick() != first),
            "twenty more samples of 5 out of 50 are not all the same"
        );
        let mut all = Picker::new(None);
        for e in &entries {
            all.offer(e, &Filter::default());
        }
        assert_eq!(all.keys().len(), 50);
    }
}
