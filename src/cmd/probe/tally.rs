//! Counting what `probe`'s answers said: distinct outputs, fingerprints,
//! errors, and first-token logprobs clustered by a tolerance.
//!
//! Pure arithmetic over [`Observation`]s; sending and printing are the
//! command's ([`super`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{self, Answer};

/// An output and how many answers said it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputCount {
    /// The answer's text (see [`output_text`]).
    pub text: String,
    /// How many answers.
    pub count: u32,
}

/// A fingerprint and how many answers carried it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerprintCount {
    /// The `system_fingerprint`, or None when the answer had none.
    pub fingerprint: Option<String>,
    /// How many answers.
    pub count: u32,
}

/// First-token logprobs that lie within the tolerance of each other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// The first token.
    pub token: String,
    /// The cluster's most frequent value (the smallest among equals).
    pub logprob: f64,
    /// Its smallest value.
    pub min: f64,
    /// Its largest value.
    pub max: f64,
    /// `exp(logprob)` in percent.
    pub probability_percent: f64,
    /// How many answers.
    pub count: u32,
    /// Share of the answers that had a first-token logprob, in percent.
    pub share_percent: f64,
}

/// An error message and how many requests failed with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorCount {
    /// The message.
    pub error: String,
    /// How many requests.
    pub count: u32,
}

/// Everything `probe` found (the `--json` document without its header).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Requests answered.
    pub answered: u32,
    /// Requests that failed.
    pub failed: u32,
    /// Distinct outputs.
    pub outputs: Vec<OutputCount>,
    /// Distinct fingerprints.
    pub fingerprints: Vec<FingerprintCount>,
    /// First-token logprob clusters.
    pub first_token_logprobs: Vec<Cluster>,
    /// Answers without a first-token logprob.
    pub without_logprobs: u32,
    /// Failures by message.
    pub errors: Vec<ErrorCount>,
}

/// What one answer contributes to the tally.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// See [`output_text`].
    pub output: String,
    /// The answer's fingerprint.
    pub fingerprint: Option<String>,
    /// The first token of the first choice and its logprob.
    pub first_token: Option<(String, f64)>,
}

impl Observation {
    /// Reads an answer.
    pub fn of(answer: &Answer, fingerprint: Option<String>) -> Observation {
        Observation {
            output: output_text(answer),
            fingerprint,
            first_token: answer
                .choices
                .first()
                .and_then(|c| c.logprobs.first())
                .map(|t| (t.token.clone(), t.logprob)),
        }
    }
}

/// An answer as one string, so equal answers compare equal: each choice's
/// text (prefixed `[choice i]` when there are several), tool calls and a
/// finish reason other than `stop`; for answers without choices (e.g.
/// embeddings) the body without its volatile fields.
pub fn output_text(answer: &Answer) -> String {
    if let Some(other) = &answer.other {
        return other.clone();
    }
    let several = answer.choices.len() > 1;
    answer
        .choices
        .iter()
        .map(|c| {
            let mut text = if several {
                format!("[choice {}] {}", c.index, c.text)
            } else {
                c.text.clone()
            };
            if !c.tool_calls.is_empty() {
                text.push_str(&format!(" [tool_calls {}]", c.tool_calls));
            }
            if let Some(reason) = c.finish_reason.as_deref().filter(|r| *r != "stop") {
                text.push_str(&format!(" [finish_reason {reason}]"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Counts observations and failures.
pub fn tally(observations: &[Observation], errors: &[String], tolerance: f64) -> Tally {
    let mut outputs: BTreeMap<&str, u32> = BTreeMap::new();
    let mut fingerprints: BTreeMap<Option<&str>, u32> = BTreeMap::new();
    let mut firsts: Vec<(String, f64)> = Vec::new();
    for o in observations {
        *outputs.entry(&o.output).or_default() += 1;
        *fingerprints.entry(o.fingerprint.as_deref()).or_default() += 1;
        if let Some(first) = &o.first_token {
            firsts.push(first.clone());
        }
    }
    let mut by_error: BTreeMap<&str, u32> = BTreeMap::new();
    for e in errors {
        *by_error.entry(e).or_default() += 1;
    }
    let mut outputs: Vec<OutputCount> = outputs
        .into_iter()
        .map(|(text, count)| OutputCount {
            text: text.to_string(),
            count,
        })
        .collect();
    outputs.sort_by_key(|o| std::cmp::Reverse(o.count));
    let mut fingerprints: Vec<FingerprintCount> = fingerprints
        .into_iter()
        .map(|(fp, count)| FingerprintCount {
            fingerprint: fp.map(String::from),
            count,
        })
        .collect();
    fingerprints.sort_by_key(|f| std::cmp::Reverse(f.count));
    let mut errors: Vec<ErrorCount> = by_error
        .into_iter()
        .map(|(error, count)| ErrorCount {
            error: error.to_string(),
            count,
        })
        .collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.count));
    Tally {
        answered: count_u32(observations.len()),
        failed: count_u32(errors.iter().map(|e| e.count as usize).sum()),
        outputs,
        fingerprints,
        without_logprobs: count_u32(observations.len() - firsts.len()),
        first_token_logprobs: cluster(&firsts, tolerance),
        errors,
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Clusters first-token logprobs, per token: sorted values, each cluster
/// starting at its smallest value and taking every value at most
/// `tolerance` above it. Largest clusters first; among equals, the more
/// probable first.
pub fn cluster(values: &[(String, f64)], tolerance: f64) -> Vec<Cluster> {
    let total = values.len();
    let mut by_token: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (token, logprob) in values {
        by_token.entry(token).or_default().push(*logprob);
    }
    let mut clusters = Vec::new();
    for (token, mut logprobs) in by_token {
        logprobs.sort_by(f64::total_cmp);
        let mut start = 0;
        while start < logprobs.len() {
            let first = logprobs[start];
            let end = start
                + logprobs[start..]
                    .iter()
                    .take_while(|v| **v - first <= tolerance)
                    .count();
            let members = &logprobs[start..end];
            clusters.push(Cluster {
                token: token.to_string(),
                logprob: most_frequent(members),
                min: members[0],
                max: members[members.len() - 1],
                probability_percent: audit::percent(most_frequent(members)),
                count: count_u32(members.len()),
                share_percent: members.len() as f64 * 100.0 / total as f64,
            });
            start = end;
        }
    }
    clusters.sort_by(|a, b| b.count.cmp(&a.count).then(b.logprob.total_cmp(&a.logprob)));
    clusters
}

/// The most frequent value of a sorted, non-empty slice (the smallest
/// among equally frequent ones).
fn most_frequent(sorted: &[f64]) -> f64 {
    let mut best = (sorted[0], 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let run = sorted[i..].iter().take_while(|v| **v == sorted[i]).count();
        if run > best.1 {
            best = (sorted[i], run);
        }
        i += run;
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(list: &[f64]) -> Vec<(String, f64)> {
        list.iter().map(|v| ("Paris".to_string(), *v)).collect()
    }

    #[test]
    fn clusters_count_exactly_and_respect_the_tolerance() {
        let found = cluster(
            &values(&[-0.1, -0.2, -0.1, -0.3, -0.1, -0.2, -0.1, -0.3]),
            1e-6,
        );
        let summary: Vec<(f64, u32)> = found.iter().map(|c| (c.logprob, c.count)).collect();
        assert_eq!(summary, vec![(-0.1, 4), (-0.2, 2), (-0.3, 2)]);
        assert!((found[0].share_percent - 50.0).abs() < 1e-9);
        assert!((found[0].probability_percent - 90.4837).abs() < 1e-3);

        let close = cluster(
            &values(&[-0.1, -0.1000004, -0.1000004, -0.1000004, -0.2]),
            1e-6,
        );
        assert_eq!(close.len(), 2);
        assert_eq!(close[0].count, 4);
        assert_eq!(close[0].logprob, -0.1000004, "the most frequent value");
        assert_eq!((close[0].min, close[0].max), (-0.1000004, -0.1));

        let wide = cluster(&values(&[-0.1, -0.2, -0.3]), 0.15);
        assert_eq!(
            wide.iter().map(|c| c.count).collect::<Vec<_>>(),
            vec![2, 1],
            "anchored at the smallest value: -0.3 and -0.2, then -0.1"
        );
    }

    #[test]
    fn different_first_tokens_are_separate_clusters() {
        let found = cluster(
            &[
                ("Paris".into(), -0.1),
                ("Lyon".into(), -0.1),
                ("Paris".into(), -0.1),
            ],
            1e-6,
        );
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].token.as_str(), found[0].count), ("Paris", 2));
    }

    #[test]
    fn tally_counts_outputs_fingerprints_and_errors() {
        let obs = |text: &str, fp: Option<&str>, lp: Option<f64>| Observation {
            output: text.into(),
            fingerprint: fp.map(String::from),
            first_token: lp.map(|v| ("a".to_string(), v)),
        };
        let t = tally(
            &[
                obs("a b", Some("fp_1"), Some(-0.1)),
                obs("a b", Some("fp_1"), Some(-0.1)),
                obs("a c", Some("fp_2"), None),
            ],
            &["boom".to_string(), "boom".to_string()],
            1e-6,
        );
        assert_eq!((t.answered, t.failed, t.without_logprobs), (3, 2, 1));
        assert_eq!(
            t.outputs[0],
            OutputCount {
                text: "a b".into(),
                count: 2
            }
        );
        assert_eq!(t.fingerprints[1].fingerprint.as_deref(), Some("fp_2"));
        assert_eq!(
            t.errors,
            vec![ErrorCount {
                error: "boom".into(),
                count: 2
            }]
        );
        assert_eq!(t.first_token_logprobs[0].share_percent, 100.0);
    }
}
