//! Counters for `/_llmtape/metrics`, in the Prometheus text format.
//!
//! Lock-free counters on the hot path (one atomic add per request and per
//! histogram observation); the text is only assembled when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::serve::watchdog::ClientTimeout;

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
