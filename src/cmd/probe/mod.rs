//! `llmtape probe`: sends one request N times straight to the upstream (no
//! store involved) and measures how non-deterministic the answers are:
//! distinct outputs, distinct `system_fingerprint`s, and distinct logprobs
//! of the first token, clustered by a tolerance. The upstream is the one
//! `serve` would use (`--upstream` > `LLMTAPE_UPSTREAM` > `upstream.url` >
//! the default), with `upstream.api_key_env`'s key when it is set.
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

pub(crate) mod html;
pub(crate) mod tally;

use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Method;
use serde_json::Value;

use crate::audit;
use crate::cmd::verify::ask::{shorten, Asker, Outgoing, Progress};
use crate::cmd::write_json;
use crate::config::Config;
use crate::error::CommandError;
use crate::key::KeyRules;

use tally::{tally, Observation, Tally};

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
    /// Also write the self-contained HTML report ([`html`]) here.
    pub html: Option<std::path::PathBuf>,
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
    // Opened before the requests are sent, so a path that cannot be
    // written costs no upstream calls.
    let mut report = match &options.html {
        Some(file) => Some((
            file,
            std::fs::File::create(file).map_err(|e| html_error(file, &e))?,
        )),
        None => None,
    };
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
                    entry.meta.fingerprint().map(String::from),
                )),
                Err(error) => errors.push(error.to_string()),
            }
            progress.tick(observations.len() + errors.len());
        }
    }
    progress.finish();
    let tally = tally(&observations, &errors, options.tolerance);
    if observations.is_empty() {
        if let Some((file, handle)) = report.take() {
            // An empty file would look like a report; there is none.
            drop(handle);
            let _ = std::fs::remove_file(file);
        }
        let first = tally.errors.first().map_or(String::new(), |e| {
            format!(": {}\u{d7} {}", e.count, e.error)
        });
        return Err(CommandError::Incomplete(format!(
            "all {n} requests failed{first}"
        )));
    }
    let doc = || -> Result<Value, CommandError> {
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
        Ok(doc)
    };
    if let Some((file, mut handle)) = report {
        handle
            .write_all(html::report(&doc()?).as_bytes())
            .map_err(|e| html_error(file, &e))?;
        eprintln!("probe: report written to {}", file.display());
    }
    if options.json {
        write_json(out, &doc()?)?;
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

fn html_error(file: &std::path::Path, error: &std::io::Error) -> CommandError {
    CommandError::Usage(format!(
        "cannot write the --html report to {}: {error}",
        file.display()
    ))
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

    #[test]
    fn text_report_has_a_table_per_measure() {
        let obs = |text: &str, lp: f64| Observation {
            output: text.into(),
            fingerprint: Some("fp_1".into()),
            first_token: Some(("Paris".into(), lp)),
        };
        let found = tally(
            &[
                obs("Paris.", -0.1),
                obs("Paris.", -0.1),
                obs("Paris!", -0.2),
            ],
            &["boom".to_string()],
            1e-6,
        );
        let options = Options {
            n: 4,
            concurrency: 2,
            tolerance: 1e-6,
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            json: false,
            html: None,
        };
        let asker = Asker::new(&Config::defaults()).unwrap();
        let mut out = Vec::new();
        print_text(&mut out, &found, &asker, &Method::POST, &options, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "probe: 4 request(s) to POST {}/v1/chat/completions: 3 answered, 1 failed",
                asker.display()
            )
        );
        assert_eq!(
            lines[1..6],
            [
                "",
                "outputs: 2 distinct",
                "    COUNT   SHARE  OUTPUT",
                "        2   66.7%  \"Paris.\"",
                "        1   33.3%  \"Paris!\"",
            ]
        );
        assert!(text.contains("\nfingerprints: 1 distinct\n"), "{text}");
        assert!(
            text.contains("\nfirst-token logprobs: 2 distinct (tolerance 0.000001)\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nerrors: 1 distinct\n    COUNT  ERROR\n        1  boom\n"),
            "{text}"
        );
    }
}
