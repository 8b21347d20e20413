//! Audit: what an answer says, how two answers differ, and where a key's
//! `system_fingerprint` flipped.
//!
//! An [`Answer`] is what a recording says once the transport is stripped:
//! per choice the text, tool calls, finish reason and token logprobs,
//! whether it came as one JSON body or as a stream of chunks (chat,
//! completions or Responses API). [`compare`] classifies two answers as
//! identical, logprobs-only or text-changed, with a word-level diff and
//! per-token logprob deltas. [`flips`] walks a key's recordings in time
//! order and reports every fingerprint change. Uses `entry` and `sse` only.
//!
//! When the text changed, the logprobs are still compared where the two
//! answers line up: the tokens at the start of a choice that are the same
//! in both (the common prefix of the token sequences, the first token
//! included). Those were sampled from the same context, so a delta there
//! measures the model, not the divergence; after the first differing token
//! the contexts differ and the logprobs are not comparable.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

use crate::key::RequestKey;
use crate::record::recording::Recording;

/// Version of the `audit --json` / `verify --json` schema.
pub const AUDIT_SCHEMA: u32 = 1;

mod answer;
mod report;

pub use answer::{answer_of, Answer, Choice, TokenLogprob};
pub use report::Report;

/// How two answers differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    /// Same text, tool calls, finish reasons and logprobs.
    Identical,
    /// Same text; some token logprobs moved.
    #[serde(rename = "logprobs")]
    LogprobsOnly {
        /// Per-token deltas, largest first.
        deltas: Vec<LogprobDelta>,
    },
    /// The content differs.
    Text {
        /// Per changed choice: what differs.
        choices: Vec<ChoiceDiff>,
        /// Tokens whose logprob moved among those that line up (the
        /// aligned prefix of a changed choice, every token of an unchanged
        /// one), in choice and token order.
        deltas: Vec<LogprobDelta>,
    },
}

impl Change {
    /// `identical`, `logprobs` or `text`.
    #[cfg(test)]
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Identical => "identical",
            Change::LogprobsOnly { .. } => "logprobs",
            Change::Text { .. } => "text",
        }
    }

    /// The largest absolute logprob delta (0 unless logprobs-only).
    pub fn max_delta(&self) -> f64 {
        match self {
            Change::LogprobsOnly { deltas } => deltas.first().map_or(0.0, |d| d.delta.abs()),
            _ => 0.0,
        }
    }
}

/// A token whose logprob moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogprobDelta {
    /// Which choice.
    pub choice: u64,
    /// Token position in the choice.
    pub position: usize,
    /// The token.
    pub token: String,
    /// Old logprob.
    pub old_logprob: f64,
    /// New logprob.
    pub new_logprob: f64,
    /// new - old.
    pub delta: f64,
    /// Old probability in percent.
    pub old_percent: f64,
    /// New probability in percent.
    pub new_percent: f64,
}

/// What changed in one choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceDiff {
    /// Which choice.
    pub index: u64,
    /// Word-level diff of the text: `[-removed-]{+added+}` inline.
    pub text_diff: Option<String>,
    /// Old and new tool calls, when they differ.
    pub tool_calls: Option<(String, String)>,
    /// Old and new finish reason, when they differ.
    pub finish_reason: Option<(Option<String>, Option<String>)>,
    /// Tokens at the start of the choice that are the same in both answers
    /// (their logprobs are compared); `None` when either has no logprobs.
    pub aligned_tokens: Option<usize>,
}

/// Classifies how `new` differs from `old`.
pub fn compare(old: &Answer, new: &Answer) -> Change {
    if old.other.is_some() || new.other.is_some() {
        return if old.other == new.other {
            Change::Identical
        } else {
            Change::Text {
                choices: vec![ChoiceDiff {
                    index: 0,
                    text_diff: Some("(the response body differs)".into()),
                    tool_calls: None,
                    finish_reason: None,
                    aligned_tokens: None,
                }],
                deltas: Vec::new(),
            }
        };
    }
    let empty = Choice::default();
    let count = old.choices.len().max(new.choices.len());
    let mut diffs = Vec::new();
    let mut deltas = Vec::new();
    for i in 0..count {
        let a = old.choices.get(i).unwrap_or(&empty);
        let b = new.choices.get(i).unwrap_or(&empty);
        let index = a.index.max(b.index).max(i as u64);
        let mut diff = ChoiceDiff {
            index,
            text_diff: (a.text != b.text).then(|| word_diff(&a.text, &b.text)),
            tool_calls: (a.tool_calls != b.tool_calls)
                .then(|| (a.tool_calls.clone(), b.tool_calls.clone())),
            finish_reason: (a.finish_reason != b.finish_reason)
                .then(|| (a.finish_reason.clone(), b.finish_reason.clone())),
            aligned_tokens: None,
        };
        if diff.text_diff.is_some() || diff.tool_calls.is_some() || diff.finish_reason.is_some() {
            let aligned = aligned_prefix(&a.logprobs, &b.logprobs);
            diff.aligned_tokens = aligned;
            let aligned = aligned.unwrap_or(0);
            push_moved(
                &mut deltas,
                index,
                &a.logprobs[..aligned],
                &b.logprobs[..aligned],
            );
            diffs.push(diff);
            continue;
        }
        push_moved(&mut deltas, index, &a.logprobs, &b.logprobs);
    }
    if !diffs.is_empty() {
        // Token order: the aligned prefix reads up to where the text parts.
        deltas.sort_by_key(|d| (d.choice, d.position));
        return Change::Text {
            choices: diffs,
            deltas,
        };
    }
    if deltas.is_empty() {
        return Change::Identical;
    }
    deltas.sort_by(|a, b| b.delta.abs().total_cmp(&a.delta.abs()));
    Change::LogprobsOnly { deltas }
}

/// How many tokens at the start of `old` and `new` are the same token;
/// `None` when either side has no logprobs to compare.
fn aligned_prefix(old: &[TokenLogprob], new: &[TokenLogprob]) -> Option<usize> {
    if old.is_empty() || new.is_empty() {
        return None;
    }
    Some(
        old.iter()
            .zip(new)
            .take_while(|(x, y)| x.token == y.token)
            .count(),
    )
}

/// A delta for every position where the logprob moved, position by
/// position (the token is the new answer's).
fn push_moved(
    deltas: &mut Vec<LogprobDelta>,
    choice: u64,
    old: &[TokenLogprob],
    new: &[TokenLogprob],
) {
    for (position, (x, y)) in old.iter().zip(new).enumerate() {
        if x.logprob != y.logprob {
            deltas.push(LogprobDelta {
                choice,
                position,
                token: y.token.clone(),
                old_logprob: x.logprob,
                new_logprob: y.logprob,
                delta: y.logprob - x.logprob,
                old_percent: percent(x.logprob),
                new_percent: percent(y.logprob),
            });
        }
    }
}

/// A logprob as a probability in percent.
pub fn percent(logprob: f64) -> f64 {
    logprob.exp() * 100.0
}

/// One run of a word-level diff, as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// `equal`, `delete` or `insert`.
    pub op: &'static str,
    /// The words (with their spacing).
    pub text: String,
}

/// The word-level diff [`word_diff`] writes inline, as runs of equal,
/// deleted and inserted text.
pub fn word_segments(old: &str, new: &str) -> Vec<Segment> {
    let diff = TextDiff::from_words(old, new);
    let mut out: Vec<Segment> = Vec::new();
    for change in diff.iter_all_changes() {
        let op = match change.tag() {
            ChangeTag::Equal => "equal",
            ChangeTag::Delete => "delete",
            ChangeTag::Insert => "insert",
        };
        match out.last_mut() {
            Some(last) if last.op == op => last.text.push_str(change.value()),
            _ => out.push(Segment {
                op,
                text: change.value().to_string(),
            }),
        }
    }
    out
}

/// Word-level diff, `[-removed-]{+added+}` inline.
pub fn word_diff(old: &str, new: &str) -> String {
    let diff = TextDiff::from_words(old, new);
    let mut out = String::new();
    let mut open: Option<ChangeTag> = None;
    for change in diff.iter_all_changes() {
        let tag = change.tag();
        if open != Some(tag) {
            match open {
                Some(ChangeTag::Delete) => out.push_str("-]"),
                Some(ChangeTag::Insert) => out.push_str("+}"),
                _ => {}
            }
            match tag {
                ChangeTag::Delete => out.push_str("[-"),
                ChangeTag::Insert => out.push_str("{+"),
                ChangeTag::Equal => {}
            }
            open = Some(tag);
        }
        out.push_str(change.value());
    }
    match open {
        Some(ChangeTag::Delete) => out.push_str("-]"),
        Some(ChangeTag::Insert) => out.push_str("+}"),
        _ => {}
    }
    out
}

/// A recording's identity in a flip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Its fingerprint.
    pub fingerprint: Option<String>,
    /// When it was recorded.
    pub recorded_at: String,
}

/// One fingerprint change between consecutive recordings of a key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flip {
    /// The key.
    pub key: RequestKey,
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Model of the newer recording.
    pub model: Option<String>,
    /// The earlier recording.
    pub old: Side,
    /// The later recording.
    pub new: Side,
    /// How the content changed.
    #[serde(flatten)]
    pub change: Change,
}

/// Every fingerprint flip among a key's recordings (current and history),
/// in time order.
pub fn flips(current: &Recording, history: &[Recording]) -> Vec<Flip> {
    flip_pairs(current, history)
        .into_iter()
        .map(|(old, new)| Flip {
            key: current.meta.key,
            method: current.meta.request.method.clone(),
            path: current.meta.request.path.clone(),
            model: new.meta.model.clone(),
            old: side(old),
            new: side(new),
            change: compare(&answer_of(old), &answer_of(new)),
        })
        .collect()
}

/// The (older, newer) recordings of each flip [`flips`] reports, in the
/// same order.
pub fn flip_pairs<'a>(
    current: &'a Recording,
    history: &'a [Recording],
) -> Vec<(&'a Recording, &'a Recording)> {
    let mut all: Vec<&Recording> = history.iter().chain(std::iter::once(current)).collect();
    all.sort_by(|a, b| a.meta.recorded_at.cmp(&b.meta.recorded_at));
    all.windows(2)
        .filter(|w| w[0].meta.fingerprint() != w[1].meta.fingerprint())
        .map(|w| (w[0], w[1]))
        .collect()
}

fn side(entry: &Recording) -> Side {
    Side {
        fingerprint: entry.meta.fingerprint().map(String::from),
        recorded_at: entry.meta.recorded_at.clone(),
    }
}

/// Per model: fingerprints seen and what their flips did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// The model.
    pub model: String,
    /// Each fingerprint with its first and last sighting and count.
    pub fingerprints: Vec<Sighting>,
    /// Flips from one fingerprint to another, with how many changed what.
    pub transitions: Vec<Transition>,
}

/// A fingerprint seen for a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sighting {
    /// The fingerprint ("-" when a recording had none).
    pub fingerprint: String,
    /// Earliest recording with it.
    pub first_seen: String,
    /// Latest recording with it.
    pub last_seen: String,
    /// How many recordings carry it.
    pub recordings: usize,
}

/// Flips between two fingerprints of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Old fingerprint.
    pub from: String,
    /// New fingerprint.
    pub to: String,
    /// How many keys flipped this way.
    pub flips: usize,
    /// Of those, how many changed text.
    pub text: usize,
    /// How many changed only logprobs.
    pub logprobs: usize,
    /// How many were identical.
    pub identical: usize,
}

/// Summarises recordings (all of them, for sightings) and flips by model.
pub fn summarize(recordings: &[&Recording], flips: &[Flip]) -> Vec<ModelSummary> {
    let mut sightings: BTreeMap<String, BTreeMap<String, Sighting>> = BTreeMap::new();
    for entry in recordings {
        let model = entry.meta.model.clone().unwrap_or_else(|| "-".into());
        let fp = entry.meta.fingerprint().unwrap_or("-").to_string();
        let at = &entry.meta.recorded_at;
        let s = sightings
            .entry(model)
            .or_default()
            .entry(fp.clone())
            .or_insert(Sighting {
                fingerprint: fp,
                first_seen: at.clone(),
                last_seen: at.clone(),
                recordings: 0,
            });
        s.recordings += 1;
        if *at < s.first_seen {
            s.first_seen.clone_from(at);
        }
        if *at > s.last_seen {
            s.last_seen.clone_from(at);
        }
    }
    let mut transitions: BTreeMap<(String, String, String), Transition> = BTreeMap::new();
    for flip in flips {
        let model = flip.model.clone().unwrap_or_else(|| "-".into());
        let from = flip.old.fingerprint.clone().unwrap_or_else(|| "-".into());
        let to = flip.new.fingerprint.clone().unwrap_or_else(|| "-".into());
        let t = transitions
            .entry((model, from.clone(), to.clone()))
            .or_insert(Transition {
                from,
                to,
                flips: 0,
                text: 0,
                logprobs: 0,
                identical: 0,
            });
        t.flips += 1;
        match flip.change {
            Change::Identical => t.identical += 1,
            Change::LogprobsOnly { .. } => t.logprobs += 1,
            Change::Text { .. } => t.text += 1,
        }
    }
    let models: BTreeSet<&String> = sightings.keys().collect();
    models
        .into_iter()
        .map(|model| {
            let mut fingerprints: Vec<Sighting> = sightings[model].values().cloned().collect();
            fingerprints.sort_by(|a, b| a.first_seen.cmp(&b.first_seen));
            ModelSummary {
                model: model.clone(),
                fingerprints,
                transitions: transitions
                    .iter()
                    .filter(|((m, _, _), _)| m == model)
                    .map(|(_, t)| t.clone())
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    fn chat(content: &str, fp: &str, at: &str, logprobs: &[f64]) -> Recording {
        let tokens: Vec<Value> = content
            .split_inclusive(' ')
            .zip(logprobs)
            .map(|(t, lp)| serde_json::json!({"token": t, "logprob": lp, "bytes": [], "top_logprobs": []}))
            .collect();
        let body = serde_json::json!({
            "id": "x", "model": "gpt-4o", "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": tokens}, "finish_reason": "stop"}]
        });
        crate::record::recording::test_entry(
            &"ab".repeat(32),
            body.to_string(),
            fp,
            Some("gpt-4o"),
            at,
        )
    }

    #[test]
    fn classifies_identical_logprob_only_and_text_changes() {
        let a = chat(
            "Paris is nice",
            "fp_a",
            "2026-01-01T00:00:00Z",
            &[-0.1, -0.2, -0.3],
        );
        let same = chat(
            "Paris is nice",
            "fp_b",
            "2026-01-02T00:00:00Z",
            &[-0.1, -0.2, -0.3],
        );
        let jitter = chat(
            "Paris is nice",
            "fp_b",
            "2026-01-02T00:00:00Z",
            &[-0.1, -0.25, -0.3],
        );
        let other = chat(
            "Paris is lovely",
            "fp_b",
            "2026-01-02T00:00:00Z",
            &[-0.1, -0.2, -0.3],
        );
        assert_eq!(
            compare(&answer_of(&a), &answer_of(&same)),
            Change::Identical
        );
        let Change::LogprobsOnly { deltas } = compare(&answer_of(&a), &answer_of(&jitter)) else {
            panic!("logprobs only expected");
        };
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[0].position, 1);
        assert!((deltas[0].delta + 0.05).abs() < 1e-12);
        assert!((deltas[0].old_percent - 81.873).abs() < 0.01);
        let Change::Text { choices, deltas } = compare(&answer_of(&a), &answer_of(&other)) else {
            panic!("text expected");
        };
        assert_eq!(
            choices[0].text_diff.as_deref(),
            Some("Paris is [-nice-]{+lovely+}")
        );
        assert_eq!(choices[0].aligned_tokens, Some(2), "\"Paris \", \"is \"");
        assert!(deltas.is_empty(), "no aligned logprob moved: {deltas:?}");
    }

    /// The text deltas of `old` -> `new`: (aligned tokens of choice 0,
    /// (position, token, delta) per moved token).
    fn text_deltas(old: &Recording, new: &Recording) -> (Option<usize>, Vec<(usize, String, f64)>) {
        let Change::Text { choices, deltas } = compare(&answer_of(old), &answer_of(new)) else {
            panic!("text expected");
        };
        let moved = deltas
            .iter()
            .map(|d| {
                assert_eq!(d.choice, 0);
                assert!((d.new_logprob - d.old_logprob - d.delta).abs() < 1e-12);
                assert!((d.old_percent - percent(d.old_logprob)).abs() < 1e-12);
                (d.position, d.token.clone(), (d.delta * 1e6).round() / 1e6)
            })
            .collect();
        (choices[0].aligned_tokens, moved)
    }

    #[test]
    fn changed_text_still_shows_the_first_tokens_move() {
        let old = chat("Paris is nice", "fp_a", "t1", &[-0.1, -0.2, -0.3]);
        let new = chat("Paris is lovely", "fp_b", "t2", &[-0.3, -0.2, -0.9]);
        assert_eq!(
            text_deltas(&old, &new),
            (Some(2), vec![(0, "Paris ".to_string(), -0.2)]),
            "the first token moved; the third differs, so its logprob is not compared"
        );
    }

    #[test]
    fn changed_text_compares_a_common_prefix_of_n_tokens_in_order() {
        let old = chat(
            "The capital is Paris of course",
            "fp_a",
            "t1",
            &[-0.5, -0.1, -0.2, -0.3, -0.4, -0.6],
        );
        let new = chat(
            "The capital is Paris indeed",
            "fp_b",
            "t2",
            &[-0.1, -0.1, -0.25, -0.9, -0.4],
        );
        assert_eq!(
            text_deltas(&old, &new),
            (
                Some(4),
                vec![
                    (0, "The ".to_string(), 0.4),
                    (2, "is ".to_string(), -0.05),
                    (3, "Paris ".to_string(), -0.6),
                ]
            ),
            "four tokens line up; position 1 did not move; token order, not size"
        );
        let differs_at_once = chat("Lyon is nice", "fp_b", "t2", &[-2.0, -0.2, -0.3]);
        assert_eq!(
            text_deltas(&old, &differs_at_once),
            (Some(0), vec![]),
            "the first token differs: nothing lines up"
        );
    }

    #[test]
    fn changed_text_without_logprobs_has_no_deltas() {
        let old = chat("Paris is nice", "fp_a", "t1", &[]);
        let new = chat("Paris is lovely", "fp_b", "t2", &[]);
        assert_eq!(text_deltas(&old, &new), (None, vec![]));
        let one_sided = chat("Paris is lovely", "fp_b", "t2", &[-0.1, -0.2, -0.3]);
        assert_eq!(text_deltas(&old, &one_sided), (None, vec![]));
        let json = serde_json::to_value(compare(&answer_of(&old), &answer_of(&new))).unwrap();
        assert_eq!(json["change"], "text");
        assert_eq!(json["deltas"], serde_json::json!([]));
        assert_eq!(json["choices"][0]["aligned_tokens"], Value::Null);
    }

    #[test]
    fn flips_are_found_in_time_order() {
        let e1 = chat("a", "fp_1", "2026-01-01T00:00:00Z", &[-0.1]);
        let e2 = chat("a", "fp_1", "2026-01-02T00:00:00Z", &[-0.1]);
        let e3 = chat("b", "fp_2", "2026-01-03T00:00:00Z", &[-0.1]);
        let e4 = chat("b", "fp_3", "2026-01-04T00:00:00Z", &[-0.2]);
        let found = flips(&e4, &[e3.clone(), e1.clone(), e2.clone()]);
        let pairs: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|f| {
                (
                    f.old.fingerprint.as_deref().unwrap(),
                    f.new.fingerprint.as_deref().unwrap(),
                    f.change.as_str(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![("fp_1", "fp_2", "text"), ("fp_2", "fp_3", "logprobs")]
        );
        let summary = summarize(&[&e1, &e2, &e3, &e4], &found);
        assert_eq!(summary[0].fingerprints.len(), 3);
        assert_eq!(summary[0].fingerprints[0].recordings, 2);
        assert_eq!(summary[0].transitions.len(), 2);
    }

    #[test]
    fn streams_are_read_like_bodies() {
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Pa\"},\"logprobs\":{\"content\":[{\"token\":\"Pa\",\"logprob\":-0.5}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ris\",\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";
        let events = crate::record::sse::EventSplitter::new().push(&Bytes::from(body));
        let mut entry = chat("", "fp", "t", &[]);
        entry.body = Bytes::from(body);
        entry.meta.stream = Some(
            events
                .iter()
                .map(|e| crate::record::recording::StreamEvent {
                    offset_ms: 0,
                    len: e.len(),
                })
                .collect(),
        );
        let answer = answer_of(&entry);
        assert_eq!(answer.choices[0].text, "Paris");
        assert_eq!(answer.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(answer.choices[0].logprobs[0].logprob, -0.5);
        assert!(
            answer.choices[0]
                .tool_calls
                .contains(r#""arguments":"{\"a\":1}""#),
            "{}",
            answer.choices[0].tool_calls
        );
    }

    #[test]
    fn bodies_without_choices_compare_without_volatile_fields() {
        let mut a = chat("x", "fp", "t", &[]);
        a.body = Bytes::from_static(
            br#"{"object":"list","data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":1}}"#,
        );
        let mut b = a.clone();
        b.body = Bytes::from_static(
            br#"{"object":"list","data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":2}}"#,
        );
        assert_eq!(compare(&answer_of(&a), &answer_of(&b)), Change::Identical);
        b.body = Bytes::from_static(br#"{"object":"list","data":[{"embedding":[0.1,0.3]}]}"#);
        assert_eq!(compare(&answer_of(&a), &answer_of(&b)).as_str(), "text");
    }
}
