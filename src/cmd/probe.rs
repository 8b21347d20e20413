//! `llmtape probe`: sends one request N times straight to the upstream (no
//! store involved) and measures how non-deterministic the answers are:
//! distinct outputs, distinct `system_fingerprint`s, and distinct logprobs
//! of the first token, clustered by a tolerance.
//!
//! Sending and reading answers is [`Asker`]'s job (credential, 429
//! backoff, streams); reading what an answer says is audit's
//! ([`audit::answer_of`]). This module only counts and prints.
//!
//! # `probe --json` (schema 1)
//!
//! One JSON object; fields are only ever added, never renamed or removed,
//! without bumping `llmtape_probe`. Every list is sorted by `count`, largest
//! first.
//!
//! ```text
//! {
//!   "llmtape_probe": 1,
//!   "upstream": "https://api.openai.com",
//!   "method": "POST",
//!   "path": "/v1/chat/completions",
//!   "requests": 100,                     // --n
//!   "answered": 99,
//!   "failed": 1,
//!   "logprobs_requested": true,          // the request asked for logprobs
//!   "tolerance": 1e-6,                   // --tolerance
//!   "outputs": [                         // distinct answers (text of every choice,
//!     {"text": "Paris.", "count": 97},   //  tool calls and finish reason included)
//!     {"text": "Paris!", "count": 2}
//!   ],
//!   "fingerprints": [                    // null: the answer carried none
//!     {"fingerprint": "fp_a", "count": 99}
//!   ],
//!   "first_token_logprobs": [            // clusters, per first token
//!     {
//!       "token": "Paris",
//!       "logprob": -0.1,                 // the cluster's most frequent value
//!       "min": -0.1000002,               // the cluster's range
//!       "max": -0.1,
//!       "probability_percent": 90.48,    // exp(logprob) * 100
//!       "count": 60,
//!       "share_percent": 60.6            // of the answers with a first-token logprob
//!     }
//!   ],
//!   "without_logprobs": 0,               // answers with no first-token logprob
//!   "errors": [                          // failed requests by message
//!     {"error": "the upstream answered 500: ...", "count": 1}
//!   ]
//! }
//! ```
//!
//! Clustering: the values of one token are sorted; a cluster starts at its
//! smallest value and takes every value at most `tolerance` above it. The
//! command fails (exit 1) only when every request failed.

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::audit::{self, Answer};
use crate::cmd::verify::ask::{shorten, Asker, Outgoing, Progress};
use crate::cmd::write_json;
use crate::config::Config;
use crate::error::CommandError;
use crate::key::KeyRules;

/// Version of the `probe --json` schema.
pub const PROBE_SCHEMA: u32 = 1;

/// Characters of an output shown in the text table (`--json` has it whole):
/// enough to tell answers apart, short enough for one line.
const OUTPUT_SHOWN_CHARS: usize = 80;

/// The request `probe` sends, how often, and what it prints.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many times to send the request (at least 1).
    pub n: u32,
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// First-token logprobs closer than this are one cluster; a number >= 0.
    pub tolerance: f64,
    /// HTTP method (any case).
    pub method: String,
    /// Request path, with `?query` if any; must start with `/`.
    pub path: String,
    /// JSON instead of text.
    pub json: bool,
}

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

/// Whether a request body asks for logprobs: chat `"logprobs": true`,
/// completions `"logprobs": N`, or the Responses API's
/// `"include": ["message.output_text.logprobs"]`.
pub fn asks_for_logprobs(body: &Value) -> bool {
    match &body["logprobs"] {
        Value::Bool(b) => *b,
        Value::Number(_) => true,
        _ => body["include"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i.as_str().is_some_and(|s| s.contains("logprobs")))
        }),
    }
}

/// Sends the request `options.n` times and prints what came back.
pub async fn run(
    config: &Config,
    options: &Options,
    body: Vec<u8>,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    if !(options.tolerance.is_finite() && options.tolerance >= 0.0) {
        return Err(CommandError::Usage(format!(
            "--tolerance {} must be a number >= 0",
            options.tolerance
        )));
    }
    let method =
        Method::from_bytes(options.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            CommandError::Usage(format!(
                "--method {:?} is not an HTTP method",
                options.method
            ))
        })?;
    let (path, query) = options.path.split_once('?').unwrap_or((&options.path, ""));
    if !path.starts_with('/') {
        return Err(CommandError::Usage(format!(
            "--path {:?} must start with /, e.g. /v1/chat/completions",
            options.path
        )));
    }
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        if method == Method::POST {
            return Err(CommandError::Usage(
                "probe sends the request body it reads from stdin, and stdin was empty; e.g. echo '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],\"seed\":1,\"temperature\":0,\"logprobs\":true}' | llmtape probe --n 20".into(),
            ));
        }
        None
    } else {
        Some(serde_json::from_slice::<Value>(&body).map_err(|e| {
            CommandError::Usage(format!("the request body on stdin is not JSON: {e}"))
        })?)
    };
    let logprobs_requested = json.as_ref().is_some_and(asks_for_logprobs);
    let asker = Asker::new(config)?;
    let body = if json.is_some() {
        Bytes::from(body)
    } else {
        Bytes::new()
    };
    let content_type = json.as_ref().map(|_| "application/json");
    let request = Outgoing::new(
        &asker,
        method.clone(),
        path,
        query,
        content_type,
        body,
        &KeyRules::default(),
    );

    let n = options.n as usize;
    let progress = Progress::new("probing", n);
    let mut observations = Vec::with_capacity(n);
    let mut errors = Vec::new();
    {
        let mut pending = futures_util::stream::iter((0..n).map(|_| asker.ask(&request)))
            .buffer_unordered(options.concurrency.max(1));
        while let Some(asked) = pending.next().await {
            match asked.answer {
                Ok(entry) => observations.push(Observation::of(
                    &audit::answer_of(&entry),
                    entry.meta.system_fingerprint.clone(),
                )),
                Err(error) => errors.push(error.to_string()),
            }
            progress.tick(observations.len() + errors.len());
        }
    }
    progress.finish();
    let tally = tally(&observations, &errors, options.tolerance);
    if observations.is_empty() {
        let first = tally.errors.first().map_or(String::new(), |e| {
            format!(": {}\u{d7} {}", e.count, e.error)
        });
        return Err(CommandError::Incomplete(format!(
            "all {n} requests failed{first}"
        )));
    }
    if options.json {
        let mut doc = serde_json::json!({
            "llmtape_probe": PROBE_SCHEMA,
            "upstream": asker.display(),
            "method": method.as_str(),
            "path": options.path,
            "requests": n,
            "logprobs_requested": logprobs_requested,
            "tolerance": options.tolerance,
        });
        if let (Some(doc), Value::Object(fields)) = (
            doc.as_object_mut(),
            serde_json::to_value(&tally).map_err(std::io::Error::from)?,
        ) {
            doc.extend(fields);
        }
        write_json(out, &doc)?;
        return Ok(());
    }
    print_text(out, &tally, &asker, &method, options, logprobs_requested)?;
    Ok(())
}

fn print_text(
    out: &mut dyn Write,
    tally: &Tally,
    asker: &Asker,
    method: &Method,
    options: &Options,
    logprobs_requested: bool,
) -> Result<(), CommandError> {
    let share =
        |count: u32, of: u32| format!("{:.1}%", f64::from(count) * 100.0 / f64::from(of.max(1)));
    let answered = tally.answered;
    writeln!(
        out,
        "probe: {} request(s) to {method} {}{}: {} answered, {} failed",
        options.n,
        asker.display(),
        options.path,
        tally.answered,
        tally.failed
    )?;

    writeln!(out)?;
    writeln!(out, "outputs: {} distinct", tally.outputs.len())?;
    writeln!(out, "  {:>7}  {:>6}  OUTPUT", "COUNT", "SHARE")?;
    for o in &tally.outputs {
        writeln!(
            out,
            "  {:>7}  {:>6}  {}",
            o.count,
            share(o.count, answered),
            shorten(&format!("{:?}", o.text), OUTPUT_SHOWN_CHARS)
        )?;
    }

    writeln!(out)?;
    writeln!(out, "fingerprints: {} distinct", tally.fingerprints.len())?;
    writeln!(out, "  {:>7}  {:>6}  FINGERPRINT", "COUNT", "SHARE")?;
    for f in &tally.fingerprints {
        writeln!(
            out,
            "  {:>7}  {:>6}  {}",
            f.count,
            share(f.count, answered),
            f.fingerprint.as_deref().unwrap_or("(none)")
        )?;
    }

    writeln!(out)?;
    if tally.first_token_logprobs.is_empty() {
        if logprobs_requested {
            writeln!(
                out,
                "first-token logprobs: none in the answers (the upstream sent no logprobs)"
            )?;
        } else {
            writeln!(
                out,
                "first-token logprobs: the request did not ask for logprobs; add \"logprobs\": true (chat) or \"logprobs\": 1 (completions) to the request to measure them"
            )?;
        }
    } else {
        let with = answered - tally.without_logprobs;
        writeln!(
            out,
            "first-token logprobs: {} distinct (tolerance {})",
            tally.first_token_logprobs.len(),
            options.tolerance
        )?;
        let tokens: Vec<String> = tally
            .first_token_logprobs
            .iter()
            .map(|c| format!("{:?}", c.token))
            .collect();
        let token_width = tokens
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(
            out,
            "  {:>7}  {:>6}  {:<token_width$}  {:>12}  {:>11}  {:>9}",
            "COUNT", "SHARE", "TOKEN", "LOGPROB", "PROBABILITY", "SPREAD"
        )?;
        for (c, token) in tally.first_token_logprobs.iter().zip(&tokens) {
            writeln!(
                out,
                "  {:>7}  {:>6}  {:<token_width$}  {:>12.8}  {:>10.4}%  {:>9}",
                c.count,
                share(c.count, with),
                token,
                c.logprob,
                c.probability_percent,
                spread(c.max - c.min)
            )?;
        }
        if tally.without_logprobs > 0 {
            writeln!(
                out,
                "  ({} answer(s) had no first-token logprob)",
                tally.without_logprobs
            )?;
        }
    }

    if !tally.errors.is_empty() {
        writeln!(out)?;
        writeln!(out, "errors: {} distinct", tally.errors.len())?;
        writeln!(out, "  {:>7}  ERROR", "COUNT")?;
        for e in &tally.errors {
            writeln!(out, "  {:>7}  {}", e.count, e.error)?;
        }
    }
    Ok(())
}

/// A cluster's width: `0` when all its values are equal, else two digits.
fn spread(width: f64) -> String {
    if width == 0.0 {
        "0".into()
    } else {
        format!("{width:.2e}")
    }
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

    #[test]
    fn logprob_requests_are_recognised() {
        assert!(asks_for_logprobs(&serde_json::json!({"logprobs": true})));
        assert!(asks_for_logprobs(&serde_json::json!({"logprobs": 1})));
        assert!(!asks_for_logprobs(&serde_json::json!({"logprobs": false})));
        assert!(!asks_for_logprobs(&serde_json::json!({"model": "m"})));
        assert!(asks_for_logprobs(
            &serde_json::json!({"include": ["message.output_text.logprobs"]})
        ));
    }
}
