//! Counters for `/_llmtape/metrics`, in the Prometheus text format.
//!
//! Lock-free counters on the hot path (one atomic add per request and per
//! histogram observation); the text is only assembled when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Price, Prices};
use crate::serve::watchdog::ClientTimeout;

/// Models counted apart; past this many, the rest share one slot
/// ([`OTHER_MODELS`]), so the table is fixed and a hit never allocates.
pub const MODEL_SLOTS: usize = 64;

/// The name of the slot the models past [`MODEL_SLOTS`] share.
pub const OTHER_MODELS: &str = "(other models)";

/// Histogram bucket bounds in seconds: from a cached hit (tens of
/// microseconds) to a long completion (minutes).
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/_llmtape/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Answered from the store (or from a shared upstream call).
    pub hits: AtomicU64,
    /// Sent upstream on a cached route.
    pub misses: AtomicU64,
    /// Forwarded without looking at the store.
    pub bypasses: AtomicU64,
    /// Recordings written.
    pub recordings: AtomicU64,
    /// Requests refused because too many were in flight.
    pub rejected: AtomicU64,
    /// Requests being handled now.
    pub in_flight: AtomicI64,
    /// Upstream answers by status, and transport failures under 0.
    upstream_status: Mutex<BTreeMap<u16, u64>>,
    /// Time to answer a hit.
    pub hit_latency: Histogram,
    /// Time the upstream took (to the end of the response).
    pub upstream_latency: Histogram,
    /// Client connections open now (the count `server.max_connections`
    /// bounds; kept by `serve::admission`).
    pub connections_open: AtomicUsize,
    /// Connections refused because `server.max_connections` was reached.
    pub connections_refused: AtomicU64,
    /// Failed `accept` calls (out of file descriptors, above all).
    pub accept_errors: AtomicU64,
    /// Client timeouts that fired, by [`ClientTimeout`] (in `ALL`'s order).
    client_timeouts: [AtomicU64; ClientTimeout::ALL.len()],
    /// Hits, misses and tokens saved, per model.
    pub models: ModelTable,
}

/// What a hit saves, worked out once per recording (when its rendering is
/// made) so counting it is a few atomic adds: the model's slot in the
/// [`ModelTable`] and the recorded usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    slot: u16,
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Debug, Default)]
struct ModelSlot {
    hits: AtomicU64,
    misses: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

/// Per-model counters: a fixed table of slots, a model given its slot the
/// first time it is seen (off the hit path, under a lock), counted with
/// atomics after that.
#[derive(Debug)]
pub struct ModelTable {
    slots: Box<[ModelSlot]>,
    /// Slot names, in slot order, with their price.
    names: Mutex<Vec<(String, Option<Price>)>>,
    prices: Prices,
}

impl Default for ModelTable {
    fn default() -> ModelTable {
        ModelTable::new(Prices::default())
    }
}

/// One model's counts, as reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelCount {
    /// The model as answers name it.
    pub model: String,
    /// Hits served from its recordings.
    pub hits: u64,
    /// Misses recorded for it.
    pub misses: u64,
    /// Input tokens the hits saved.
    pub input_tokens: u64,
    /// Output tokens the hits saved.
    pub output_tokens: u64,
    /// What those tokens cost at `[prices]`; `None` without a price.
    pub cost_usd: Option<f64>,
}

impl ModelTable {
    /// A table that prices models by `prices`.
    pub fn new(prices: Prices) -> ModelTable {
        ModelTable {
            slots: (0..MODEL_SLOTS).map(|_| ModelSlot::default()).collect(),
            names: Mutex::new(Vec::new()),
            prices,
        }
    }

    /// The slot of `model`, given one if it has none yet.
    fn slot(&self, model: &str) -> u16 {
        let mut names = crate::sync::lock(&self.names);
        if let Some(i) = names.iter().position(|(name, _)| name == model) {
            return i as u16;
        }
        if names.len() + 1 < MODEL_SLOTS {
            names.push((model.to_string(), self.prices.of(model)));
            return (names.len() - 1) as u16;
        }
        if names.len() + 1 == MODEL_SLOTS {
            names.push((OTHER_MODELS.to_string(), None));
        }
        (MODEL_SLOTS - 1) as u16
    }

    /// What a hit on a recording of `model` with this usage saves.
    pub fn saved(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Saved {
        Saved {
            slot: self.slot(model),
            input_tokens,
            output_tokens,
        }
    }

    /// What a hit on the answer in `body` (a stream: `events`) saves: its
    /// recorded usage (see [`crate::summary`]), under its model ("-" when
    /// it names none).
    pub fn saved_by(&self, body: &[u8], events: Option<&[(u64, bytes::Bytes)]>) -> Saved {
        let usage = crate::summary::usage_of(body, events);
        let model = usage.model.as_deref().unwrap_or("-");
        self.saved(model, usage.input_tokens, usage.output_tokens)
    }

    /// Counts a hit: no lock, no allocation.
    pub fn hit(&self, saved: Saved) {
        let slot = &self.slots[usize::from(saved.slot)];
        slot.hits.fetch_add(1, Ordering::Relaxed);
        slot.input_tokens
            .fetch_add(saved.input_tokens, Ordering::Relaxed);
        slot.output_tokens
            .fetch_add(saved.output_tokens, Ordering::Relaxed);
    }

    /// Counts a miss recorded for `model`.
    pub fn missed(&self, model: &str) {
        let slot = self.slot(model);
        self.slots[usize::from(slot)]
            .misses
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every model seen, in the order first seen.
    pub fn counts(&self) -> Vec<ModelCount> {
        let names = crate::sync::lock(&self.names).clone();
        names
            .into_iter()
            .zip(self.slots.iter())
            .map(|((model, price), slot)| {
                let input_tokens = slot.input_tokens.load(Ordering::Relaxed);
                let output_tokens = slot.output_tokens.load(Ordering::Relaxed);
                ModelCount {
                    model,
                    hits: slot.hits.load(Ordering::Relaxed),
                    misses: slot.misses.load(Ordering::Relaxed),
                    input_tokens,
                    output_tokens,
                    cost_usd: price.map(|p| p.cost(input_tokens, output_tokens)),
                }
            })
            .collect()
    }
}

/// A Prometheus label value: backslashes, quotes and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts an upstream answer with `status`; 0 means no answer (502/504).
    pub fn upstream_answered(&self, status: u16) {
        let mut map = crate::sync::lock(&self.upstream_status);
        *map.entry(status).or_insert(0) += 1;
    }

    /// Counts a client timeout that fired.
    pub(crate) fn timed_out(&self, which: ClientTimeout) {
        let i = ClientTimeout::ALL
            .iter()
            .position(|t| *t == which)
            .expect("ALL lists every kind");
        self.client_timeouts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, stored: usize) -> String {
        let mut out = String::with_capacity(2048);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP llmtape_requests_total Requests on cached routes and passthrough, by outcome."
        );
        let _ = writeln!(out, "# TYPE llmtape_requests_total counter");
        for (outcome, value) in [
            ("hit", &self.hits),
            ("miss", &self.misses),
            ("bypass", &self.bypasses),
        ] {
            let _ = writeln!(
                out,
                "llmtape_requests_total{{outcome=\"{outcome}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "llmtape_recordings_total",
            "Recordings written.",
            self.recordings.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "llmtape_rejected_total",
            "Requests refused with 503 because server.max_in_flight was reached.",
            self.rejected.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP llmtape_upstream_responses_total Upstream answers by status (0: unreachable or timed out).");
        let _ = writeln!(out, "# TYPE llmtape_upstream_responses_total counter");
        for (status, count) in crate::sync::lock(&self.upstream_status).iter() {
            let _ = writeln!(
                out,
                "llmtape_upstream_responses_total{{status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(out, "# HELP llmtape_in_flight Requests being handled.\n# TYPE llmtape_in_flight gauge\nllmtape_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP llmtape_connections_open Client connections open (bounded by server.max_connections).\n# TYPE llmtape_connections_open gauge\nllmtape_connections_open {}", self.connections_open.load(Ordering::Relaxed));
        counter(
            &mut out,
            "llmtape_connections_refused_total",
            "Client connections refused at once because server.max_connections was reached.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP llmtape_connections_timed_out_total Client connections closed by a timeout: header (server.header_read_timeout), body (server.body_read_timeout; on HTTP/2 the stream is reset instead), idle (server.idle_timeout).\n# TYPE llmtape_connections_timed_out_total counter");
        for (which, count) in ClientTimeout::ALL.iter().zip(&self.client_timeouts) {
            let _ = writeln!(
                out,
                "llmtape_connections_timed_out_total{{timeout=\"{}\"}} {}",
                which.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "llmtape_accept_errors_total",
            "Failed accept calls (e.g. out of file descriptors); each backs off before the next.",
            self.accept_errors.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP llmtape_store_recordings Recordings in the store or fixtures folder.\n# TYPE llmtape_store_recordings gauge\nllmtape_store_recordings {stored}");
        self.render_models(&mut out);
        self.hit_latency
            .render("llmtape_hit_seconds", "Time to answer a hit.", &mut out);
        self.upstream_latency.render(
            "llmtape_upstream_seconds",
            "Upstream time to the end of the response.",
            &mut out,
        );
        out
    }
}

/// The live counters since the proxy started, as `/_llmtape/api/stats`
/// and `llmtape stats` (while serving) give them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveStats {
    /// The default mode.
    pub mode: String,
    /// Recordings in the store or fixtures folder now.
    pub recordings: usize,
    /// Hits served.
    pub hits: u64,
    /// Misses (sent upstream on a cached route).
    pub misses: u64,
    /// Requests passed through.
    pub bypasses: u64,
    /// Recordings this process committed.
    pub recorded: u64,
    /// What the hits saved, all models together.
    pub saved: SavedTotal,
    /// Per model, in the order first seen.
    pub models: Vec<ModelCount>,
}

/// Tokens and cost saved, all models together.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedTotal {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// The cost of the priced models' tokens; `None` when no model counted
    /// has a price.
    pub cost_usd: Option<f64>,
}

impl Metrics {
    /// The live counters, with the default `mode` and the tier's count.
    pub fn live(&self, mode: &str, recordings: usize) -> LiveStats {
        let models = self.models.counts();
        let priced: Vec<f64> = models.iter().filter_map(|c| c.cost_usd).collect();
        LiveStats {
            mode: mode.to_string(),
            recordings,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bypasses: self.bypasses.load(Ordering::Relaxed),
            recorded: self.recordings.load(Ordering::Relaxed),
            saved: SavedTotal {
                input_tokens: models.iter().map(|c| c.input_tokens).sum(),
                output_tokens: models.iter().map(|c| c.output_tokens).sum(),
                cost_usd: (!priced.is_empty()).then(|| priced.iter().sum()),
            },
            models,
        }
    }

    /// Counters whose per-model costs use `prices`.
    pub fn priced(prices: Prices) -> Metrics {
        Metrics {
            models: ModelTable::new(prices),
            ..Metrics::default()
        }
    }

    /// The per-model hits, misses, tokens and cost saved.
    fn render_models(&self, out: &mut String) {
        let counts = self.models.counts();
        let _ = writeln!(out, "# HELP llmtape_model_hits_total Hits, by the model of the recording served.\n# TYPE llmtape_model_hits_total counter");
        for c in &counts {
            let _ = writeln!(
                out,
                "llmtape_model_hits_total{{model=\"{}\"}} {}",
                label(&c.model),
                c.hits
            );
        }
        let _ = writeln!(out, "# HELP llmtape_model_misses_total Misses recorded, by the model of the answer.\n# TYPE llmtape_model_misses_total counter");
        for c in &counts {
            let _ = writeln!(
                out,
                "llmtape_model_misses_total{{model=\"{}\"}} {}",
                label(&c.model),
                c.misses
            );
        }
        let _ = writeln!(out, "# HELP llmtape_tokens_saved_total Tokens hits did not send upstream (the recorded usage), by model and kind.\n# TYPE llmtape_tokens_saved_total counter");
        for c in &counts {
            for (kind, value) in [("input", c.input_tokens), ("output", c.output_tokens)] {
                let _ = writeln!(
                    out,
                    "llmtape_tokens_saved_total{{model=\"{}\",kind=\"{kind}\"}} {value}",
                    label(&c.model)
                );
            }
        }
        let _ = writeln!(out, "# HELP llmtape_cost_saved_usd_total What the saved tokens cost at [prices], by model (models without a price are left out).\n# TYPE llmtape_cost_saved_usd_total counter");
        for c in &counts {
            if let Some(cost) = c.cost_usd {
                let _ = writeln!(
                    out,
                    "llmtape_cost_saved_usd_total{{model=\"{}\"}} {cost}",
                    label(&c.model)
                );
            }
        }
    }
}

/// Counts a request as in flight while it lives.
pub(crate) struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.hits.fetch_add(2, Ordering::Relaxed);
        m.upstream_answered(200);
        m.upstream_answered(0);
        m.hit_latency.observe(Duration::from_micros(50));
        m.hit_latency.observe(Duration::from_millis(3));
        let text = m.render(7);
        assert!(
            text.contains("llmtape_requests_total{outcome=\"hit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("llmtape_upstream_responses_total{status=\"0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("llmtape_hit_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("llmtape_hit_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(text.contains("llmtape_hit_seconds_count 2"), "{text}");
        assert!(text.contains("llmtape_store_recordings 7"), "{text}");
    }

    #[test]
    fn per_model_counts_are_priced_and_rendered() {
        let prices = Prices::new([(
            "gpt-4o".to_string(),
            Price {
                input: 2.5,
                output: 10.0,
            },
        )]);
        let m = Metrics::priced(prices);
        let body = br#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":1000,"completion_tokens":100}}"#;
        let saved = m.models.saved_by(body, None);
        assert_eq!(saved, m.models.saved_by(body, None), "one slot per model");
        m.models.hit(saved);
        m.models.hit(saved);
        m.models.missed("gpt-4o-2024-08-06");
        m.models.missed("say \"hi\"");
        let counts = m.models.counts();
        assert_eq!(counts.len(), 2);
        assert_eq!(
            (
                counts[0].hits,
                counts[0].misses,
                counts[0].input_tokens,
                counts[0].output_tokens
            ),
            (2, 1, 2000, 200)
        );
        let cost = counts[0].cost_usd.unwrap();
        assert!((cost - 0.007).abs() < 1e-12, "{cost}");
        assert_eq!(counts[1].cost_usd, None);
        let live = m.live("auto", 5);
        assert_eq!(live.saved.cost_usd, Some(cost));
        assert_eq!(live.saved.input_tokens, 2000);
        let text = m.render(5);
        for line in [
            "llmtape_model_hits_total{model=\"gpt-4o-2024-08-06\"} 2",
            "llmtape_model_misses_total{model=\"say \\\"hi\\\"\"} 1",
            "llmtape_tokens_saved_total{model=\"gpt-4o-2024-08-06\",kind=\"output\"} 200",
            "llmtape_cost_saved_usd_total{model=\"gpt-4o-2024-08-06\"} 0.007",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
        }
        assert!(!text.contains("llmtape_cost_saved_usd_total{model=\"say"));
    }

    #[test]
    fn models_past_the_table_share_one_slot() {
        let table = ModelTable::default();
        for i in 0..MODEL_SLOTS + 5 {
            table.hit(table.saved(&format!("m{i}"), 1, 0));
        }
        let counts = table.counts();
        assert_eq!(counts.len(), MODEL_SLOTS);
        let other = counts.last().unwrap();
        assert_eq!((other.model.as_str(), other.hits), (OTHER_MODELS, 6));
    }

    #[test]
    fn renders_connection_counts_and_every_timeout() {
        let m = Metrics::default();
        m.connections_open.fetch_add(3, Ordering::Relaxed);
        m.connections_refused.fetch_add(2, Ordering::Relaxed);
        m.timed_out(ClientTimeout::Idle);
        m.timed_out(ClientTimeout::Idle);
        m.timed_out(ClientTimeout::Header);
        let text = m.render(0);
        for line in [
            "llmtape_connections_open 3",
            "llmtape_connections_refused_total 2",
            "llmtape_connections_timed_out_total{timeout=\"header\"} 1",
            "llmtape_connections_timed_out_total{timeout=\"body\"} 0",
            "llmtape_connections_timed_out_total{timeout=\"idle\"} 2",
            "llmtape_accept_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
        }
    }
}
