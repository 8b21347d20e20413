//! What counts as a difference between a recording and a fresh answer
//! (text, logprobs beyond a tolerance, the `system_fingerprint`), and the
//! per-key report and summary `verify` prints. How two answers differ is
//! audit's business ([`audit::compare`]); this module only judges it.

use serde::Serialize;

use crate::audit::{self, Change};
use crate::key::RequestKey;
use crate::record::recording::Recording;

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

/// The outcome for one recording (one element of `results` in `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The key.
    pub key: RequestKey,
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
    pub(super) fn for_entry(entry: &Recording) -> KeyReport {
        let r = &entry.meta.request;
        KeyReport {
            key: entry.meta.key,
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

/// A report for a key that could not be judged at all.
pub(super) fn error_report(key: &RequestKey, reason: &str) -> KeyReport {
    KeyReport {
        key: *key,
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
}
