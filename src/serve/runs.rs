//! The counts of repeat sequences: within each run (`x-llmtape-run`, or
//! the default run, this serve's lifetime), how many times each request
//! (by plain key) has been sent.
//!
//! Only requests sent with `x-llmtape-repeats: sequence` (or under
//! `key.repeats = "sequence"`) touch it; the others never take its lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::key::RequestKey;
use crate::sync;

/// The run of requests without `x-llmtape-run`: this serve's lifetime
/// (reset like any other, `POST /_llmtape/runs/default/reset`).
pub const DEFAULT_RUN: &str = "default";

/// Named runs remembered at once: far more than the suites one machine
/// runs concurrently; past it the run started longest ago is forgotten
/// (its next request counts from 1 again), so a client that sends a fresh
/// run id per request cannot grow memory without bound.
const MAX_RUNS: usize = 4096;

/// Requests counted per run: a run of a test suite sends a few thousand
/// distinct requests; past it the run's counts start again.
const MAX_REQUESTS_PER_RUN: usize = 1 << 16;

/// Call counts by run and plain key.
#[derive(Debug, Default)]
pub struct Runs {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Run id -> plain key -> calls so far.
    counts: HashMap<String, HashMap<RequestKey, u32>>,
    /// Named runs, oldest first (the default run is never forgotten).
    order: VecDeque<String>,
}

impl Runs {
    /// Counts one more call of `key` in `run` and returns its number, 1
    /// for the first.
    pub fn next(&self, run: &str, key: &RequestKey) -> u32 {
        let mut inner = sync::lock(&self.inner);
        if !inner.counts.contains_key(run) {
            if run != DEFAULT_RUN {
                if inner.order.len() >= MAX_RUNS {
                    if let Some(oldest) = inner.order.pop_front() {
                        inner.counts.remove(&oldest);
                    }
                }
                inner.order.push_back(run.to_string());
            }
            inner.counts.insert(run.to_string(), HashMap::new());
        }
        let counts = inner
            .counts
            .get_mut(run)
            .expect("the run was inserted above");
        if counts.len() >= MAX_REQUESTS_PER_RUN && !counts.contains_key(key) {
            counts.clear();
        }
        let call = counts.entry(*key).or_insert(0);
        *call = call.saturating_add(1);
        *call
    }

    /// Starts `run`'s counts again; true if it had any.
    pub fn reset(&self, run: &str) -> bool {
        let mut inner = sync::lock(&self.inner);
        inner.order.retain(|r| r != run);
        inner.counts.remove(run).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_per_run_and_key_and_reset_starts_again() {
        let runs = Runs::default();
        let (a, b) = (
            RequestKey::from_bytes([1; 32]),
            RequestKey::from_bytes([2; 32]),
        );
        assert_eq!(runs.next(DEFAULT_RUN, &a), 1);
        assert_eq!(runs.next(DEFAULT_RUN, &a), 2);
        assert_eq!(runs.next(DEFAULT_RUN, &b), 1);
        assert_eq!(runs.next("suite-1", &a), 1);
        assert!(runs.reset(DEFAULT_RUN));
        assert_eq!(runs.next(DEFAULT_RUN, &a), 1);
        assert_eq!(runs.next("suite-1", &a), 2);
        assert!(runs.reset("suite-1"));
        assert!(!runs.reset("suite-1"));
        assert_eq!(runs.next("suite-1", &a), 1);
    }

    #[test]
    fn the_oldest_named_run_is_forgotten_past_the_limit() {
        let runs = Runs::default();
        let key = RequestKey::from_bytes([1; 32]);
        assert_eq!(runs.next(DEFAULT_RUN, &key), 1);
        for i in 0..=MAX_RUNS {
            runs.next(&format!("run-{i}"), &key);
        }
        assert_eq!(runs.next("run-0", &key), 1, "forgotten, counted afresh");
        assert_eq!(runs.next(&format!("run-{MAX_RUNS}"), &key), 2);
        assert_eq!(runs.next(DEFAULT_RUN, &key), 2, "the default run stays");
    }
}
