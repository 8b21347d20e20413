//! The audit of a set of recordings as one document: the flips that pass
//! the model and time filters, and the per-model summary. `llmtape audit
//! --json` prints [`Report::document`]; the web view's `/_llmtape/api/audit`
//! gives [`Report::document_with_texts`], the same document with each
//! flip's answer texts and word diffs as data.

use serde_json::{json, Value};

use crate::audit::{
    answer_of, flip_pairs, flips, summarize, word_segments, Answer, Change, Flip, ModelSummary,
    AUDIT_SCHEMA,
};
use crate::record::recording::Recording;

/// The flips and summaries an audit reports.
pub struct Report<'a> {
    /// Flips, grouped by key, in time order within a key.
    pub flips: Vec<Flip>,
    /// Per model: fingerprints seen and flips between them.
    pub models: Vec<ModelSummary>,
    /// Each flip's older and newer recording, in `flips`' order.
    pairs: Vec<(&'a Recording, &'a Recording)>,
}

impl<'a> Report<'a> {
    /// The audit of `recordings` (each current one with its history):
    /// only `model`'s, and only flips (and sightings) recorded at or after
    /// `since` (an RFC 3339 time as recordings write it).
    pub fn of(
        recordings: &'a [(Recording, Vec<Recording>)],
        model: Option<&str>,
        since: Option<&str>,
    ) -> Report<'a> {
        let model_matches =
            |m: &Option<String>| model.is_none_or(|want| m.as_deref() == Some(want));
        let after = |at: &str| since.is_none_or(|s| at >= s);
        let mut kept = Vec::new();
        let mut pairs = Vec::new();
        let mut seen: Vec<&Recording> = Vec::new();
        for (entry, history) in recordings {
            for e in history.iter().chain(std::iter::once(entry)) {
                if model_matches(&e.meta.model) && after(&e.meta.recorded_at) {
                    seen.push(e);
                }
            }
            for (flip, pair) in flips(entry, history)
                .into_iter()
                .zip(flip_pairs(entry, history))
            {
                if model_matches(&flip.model) && after(&flip.new.recorded_at) {
                    kept.push(flip);
                    pairs.push(pair);
                }
            }
        }
        let models = summarize(&seen, &kept);
        Report {
            flips: kept,
            models,
            pairs,
        }
    }

    /// The `audit --json` document (schema in the README's Audit).
    pub fn document(&self, source: &str) -> Value {
        json!({
            "llmtape_audit": AUDIT_SCHEMA,
            "source": source,
            "flips": self.flips,
            "models": self.models,
        })
    }

    /// [`Report::document`] with, per flip, `old_text` and `new_text` (each
    /// choice's text, in choice order) and, in each changed choice of a
    /// `text` flip, `segments`: the word diff as `{op, text}` runs.
    pub fn document_with_texts(&self, source: &str) -> Value {
        let mut doc = self.document(source);
        let Some(flips) = doc["flips"].as_array_mut() else {
            return doc;
        };
        for ((json, flip), (old, new)) in flips.iter_mut().zip(&self.flips).zip(&self.pairs) {
            let (old, new) = (answer_of(old), answer_of(new));
            if let (Change::Text { .. }, Some(choices)) =
                (&flip.change, json["choices"].as_array_mut())
            {
                for choice in choices {
                    let index = choice["index"].as_u64().unwrap_or(0);
                    let segments = word_segments(&text_of(&old, index), &text_of(&new, index));
                    choice["segments"] = json!(segments);
                }
            }
            json["old_text"] = json!(texts(&old));
            json["new_text"] = json!(texts(&new));
        }
        doc
    }
}

/// Each choice's text; for an answer without choices, its content.
fn texts(answer: &Answer) -> Vec<String> {
    match &answer.other {
        Some(other) => vec![other.clone()],
        None => answer.choices.iter().map(|c| c.text.clone()).collect(),
    }
}

/// The text of choice `index` ("" when the answer has none).
fn text_of(answer: &Answer, index: u64) -> String {
    match &answer.other {
        Some(other) if index == 0 => other.clone(),
        Some(_) => String::new(),
        None => answer
            .choices
            .iter()
            .find(|c| c.index == index)
            .map(|c| c.text.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;

    fn chat(text: &str, fp: &str, at: &str) -> Recording {
        let body = json!({"model": "gpt-4o", "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}]});
        test_entry(&"ab".repeat(32), body.to_string(), fp, Some("gpt-4o"), at)
    }

    #[test]
    fn a_text_flip_carries_its_texts_and_segments() {
        let recordings = vec![(
            chat("Paris is lovely", "fp_b", "2026-02-01T00:00:00.000Z"),
            vec![chat("Paris is nice", "fp_a", "2026-01-01T00:00:00.000Z")],
        )];
        let report = Report::of(&recordings, None, None);
        let plain = report.document("s");
        assert!(plain["flips"][0].get("old_text").is_none());
        let doc = report.document_with_texts("s");
        let flip = &doc["flips"][0];
        assert_eq!(flip["old_text"], json!(["Paris is nice"]));
        assert_eq!(flip["new_text"], json!(["Paris is lovely"]));
        assert_eq!(
            flip["choices"][0]["segments"],
            json!([
                {"op": "equal", "text": "Paris is "},
                {"op": "delete", "text": "nice"},
                {"op": "insert", "text": "lovely"},
            ])
        );
        assert_eq!(
            flip["choices"][0]["text_diff"],
            "Paris is [-nice-]{+lovely+}"
        );
        assert_eq!(Report::of(&recordings, Some("other"), None).flips.len(), 0);
        let later = Report::of(&recordings, None, Some("2026-03-01T00:00:00.000Z"));
        assert!(later.flips.is_empty() && later.models.is_empty());
    }
}
