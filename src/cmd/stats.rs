//! `llmtape stats`: hits, misses, tokens and cost saved, per model.
//!
//! Hits are counted by a running proxy: while `serve` holds the store the
//! command runs inside it (`crate::cmd::job`) and prints its live counters,
//! since it started. Without a server it prints what the store alone
//! tells: per model, the recordings, the tokens their answers used and
//! what recording them again would cost at `[prices]`. Usage is read as
//! [`crate::summary`] reads it, so the two agree with the web view.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use crate::cmd::write_json;
use crate::config::Prices;
use crate::error::CommandError;
use crate::serve::metrics::LiveStats;
use crate::store::Tier;
use crate::summary::recording_usage;

/// The version of the `stats --json` document.
pub const STATS_SCHEMA: u32 = 1;

/// What `stats` prints.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// JSON (schema in the README) instead of text.
    pub json: bool,
    /// The running server's counters; set by that server, never sent.
    #[serde(skip)]
    pub live: Option<LiveStats>,
}

/// One model's share of the store.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stored {
    recordings: u64,
    input_tokens: u64,
    output_tokens: u64,
}

/// Prints the live counters (`options.live`), else the store's tally.
pub fn run(
    tier: &dyn Tier,
    prices: &Prices,
    options: &Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    let source = tier.location().display().to_string();
    match &options.live {
        Some(live) => print_live(live, &source, options.json, out),
        None => print_stored(tier, prices, &source, options.json, out, err),
    }
}

fn print_live(
    live: &LiveStats,
    source: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    if json {
        let mut doc = json!({"llmtape_stats": STATS_SCHEMA, "live": true, "source": source});
        if let (Some(doc), Ok(serde_json::Value::Object(fields))) =
            (doc.as_object_mut(), serde_json::to_value(live))
        {
            doc.extend(fields);
        }
        write_json(out, &doc)?;
        return Ok(());
    }
    writeln!(
        out,
        "live counters of the llmtape serve on {source} (mode {}), since it started:",
        live.mode
    )?;
    writeln!(
        out,
        "  {} hit(s), {} miss(es), {} bypass(es); {} recorded; {} recording(s) in the store",
        live.hits, live.misses, live.bypasses, live.recorded, live.recordings
    )?;
    writeln!(
        out,
        "  saved {} input and {} output token(s), {}",
        live.saved.input_tokens,
        live.saved.output_tokens,
        money(live.saved.cost_usd, "no model has a [prices] entry")
    )?;
    if live.models.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "  {:<32}  {:>8}  {:>8}  {:>12}  {:>12}  {:>12}",
        "MODEL", "HITS", "MISSES", "INPUT SAVED", "OUTPUT SAVED", "COST SAVED"
    )?;
    for m in &live.models {
        writeln!(
            out,
            "  {:<32}  {:>8}  {:>8}  {:>12}  {:>12}  {:>12}",
            m.model,
            m.hits,
            m.misses,
            m.input_tokens,
            m.output_tokens,
            money(m.cost_usd, "-")
        )?;
    }
    Ok(())
}

fn print_stored(
    tier: &dyn Tier,
    prices: &Prices,
    source: &str,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    let mut models: BTreeMap<String, Stored> = BTreeMap::new();
    let mut unreadable = 0usize;
    for item in tier.iter() {
        match item {
            Ok(recording) => {
                let usage = recording_usage(&recording);
                let m = models
                    .entry(usage.model.unwrap_or_else(|| "-".into()))
                    .or_default();
                m.recordings += 1;
                m.input_tokens += usage.input_tokens;
                m.output_tokens += usage.output_tokens;
            }
            Err(error) if error.is_corrupt() => {
                unreadable += 1;
                let _ = writeln!(err, "llmtape: warning: {error}");
            }
            Err(error) => return Err(error.into()),
        }
    }
    if unreadable > 0 {
        let _ = writeln!(err, "llmtape: {unreadable} corrupt recording(s) skipped");
    }
    let cost = |model: &str, m: &Stored| {
        prices
            .of(model)
            .map(|p| p.cost(m.input_tokens, m.output_tokens))
    };
    let priced: Vec<f64> = models
        .iter()
        .filter_map(|(name, m)| cost(name, m))
        .collect();
    let total_cost = (!priced.is_empty()).then(|| priced.iter().sum::<f64>());
    let recordings: u64 = models.values().map(|m| m.recordings).sum();
    let input: u64 = models.values().map(|m| m.input_tokens).sum();
    let output: u64 = models.values().map(|m| m.output_tokens).sum();
    if json {
        let rows: Vec<_> = models
            .iter()
            .map(|(name, m)| {
                json!({
                    "model": name,
                    "recordings": m.recordings,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cost_usd": cost(name, m),
                })
            })
            .collect();
        let doc = json!({
            "llmtape_stats": STATS_SCHEMA,
            "live": false,
            "source": source,
            "recordings": recordings,
            "stored": {"input_tokens": input, "output_tokens": output, "cost_usd": total_cost},
            "models": rows,
        });
        write_json(out, &doc)?;
        return Ok(());
    }
    writeln!(
        out,
        "recordings in {source}: no llmtape serve runs on it, so there are no hits to count (a running proxy counts them: run stats while it serves, or read /_llmtape/metrics)"
    )?;
    writeln!(
        out,
        "  {recordings} recording(s), {input} input and {output} output token(s); recording them again would cost {}",
        money(total_cost, "an unknown amount (no model has a [prices] entry)")
    )?;
    if models.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "  {:<32}  {:>10}  {:>12}  {:>13}  {:>12}",
        "MODEL", "RECORDINGS", "INPUT TOKENS", "OUTPUT TOKENS", "COST"
    )?;
    for (name, m) in &models {
        writeln!(
            out,
            "  {:<32}  {:>10}  {:>12}  {:>13}  {:>12}",
            name,
            m.recordings,
            m.input_tokens,
            m.output_tokens,
            money(cost(name, m), "-")
        )?;
    }
    Ok(())
}

/// `$0.012300` (to a millionth of a dollar: one hit is often less than a
/// cent), or `none` when there is no price.
fn money(cost: Option<f64>, none: &str) -> String {
    match cost {
        Some(cost) => format!("${cost:.6}"),
        None => none.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Price;
    use crate::record::recording::test_entry;
    use crate::serve::metrics::Metrics;
    use crate::store::SledStore;
    use serde_json::Value;

    fn store_with(dir: &std::path::Path) -> SledStore {
        let store = SledStore::open(dir).unwrap();
        for (hex, model, input, output) in [
            ("aa", "gpt-4o-mini-2024-07-18", 1_000_000, 100_000),
            ("bb", "gpt-4o-mini-2024-07-18", 0, 100_000),
            ("cc", "other", 50, 5),
        ] {
            let body = json!({"model": model, "choices": [],
                "usage": {"prompt_tokens": input, "completion_tokens": output}});
            let e = test_entry(&hex.repeat(32), body.to_string(), "fp", Some(model), "t");
            store.put(&e.key(), &e, 5).unwrap();
        }
        store
    }

    fn prices() -> Prices {
        Prices::new([(
            "gpt-4o-mini".to_string(),
            Price {
                input: 0.15,
                output: 0.60,
            },
        )])
    }

    fn render(tier: &dyn Tier, options: &Options) -> String {
        let mut out = Vec::new();
        run(tier, &prices(), options, &mut out, &mut Vec::new()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn offline_it_tallies_the_store_per_model_at_its_price() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path());
        let json = Options {
            json: true,
            live: None,
        };
        let doc: Value = serde_json::from_str(&render(&store, &json)).unwrap();
        assert_eq!(doc["llmtape_stats"], 1);
        assert_eq!(doc["live"], false);
        assert_eq!(doc["recordings"], 3);
        assert_eq!(doc["stored"]["input_tokens"], 1_000_050);
        let mini = &doc["models"][0];
        assert_eq!(mini["model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(mini["recordings"], 2);
        // 1M input at 0.15 plus 200k output at 0.60 per million.
        let cost = mini["cost_usd"].as_f64().unwrap();
        assert!((cost - 0.27).abs() < 1e-9, "{cost}");
        assert_eq!(doc["models"][1]["cost_usd"], Value::Null);
        assert_eq!(doc["stored"]["cost_usd"].as_f64(), Some(cost));
        let text = render(&store, &Options::default());
        assert!(text.contains("no llmtape serve runs on it"), "{text}");
        assert!(text.contains("would cost $0.270000"), "{text}");
    }

    #[test]
    fn live_it_prints_the_servers_counters() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path());
        let metrics = Metrics::priced(prices());
        metrics
            .models
            .hit(metrics.models.saved("gpt-4o-mini", 10, 2));
        metrics.models.missed("gpt-4o-mini");
        let live = Options {
            json: true,
            live: Some(metrics.live("auto", 3)),
        };
        let doc: Value = serde_json::from_str(&render(&store, &live)).unwrap();
        assert_eq!(doc["live"], true);
        assert_eq!(doc["mode"], "auto");
        assert_eq!(doc["models"][0]["hits"], 1);
        assert_eq!(doc["models"][0]["misses"], 1);
        assert_eq!(doc["saved"]["input_tokens"], 10);
        let text = render(
            &store,
            &Options {
                json: false,
                ..live
            },
        );
        assert!(
            text.starts_with("live counters of the llmtape serve on "),
            "{text}"
        );
        assert!(text.contains("  gpt-4o-mini  "), "{text}");
    }
}
