//! Soak (issue 6.7): a bounded load test over a mix of hits, misses,
//! streams and bad requests, on loopback, that asserts no unexpected
//! status, byte-identical hits, a consistent store afterwards and flat
//! memory.
//!
//! Short form (the default, run in CI): 5 s at concurrency 16.
//! Long form, for a release or a change to the hot path:
//!
//! ```text
//! LLMTAPE_SOAK_SECS=60 LLMTAPE_SOAK_CONCURRENCY=64 \
//!     cargo test --release --test it soak:: -- --nocapture
//! ```
//!
//! The proxy under test is the real `llmtape serve`, a child process, and
//! the memory measured is that child's RSS (`/proc/PID/status`): the other
//! tests of this binary run beside this one and allocate in this process,
//! never in the child. The mock upstream runs lean: it keeps nothing per
//! request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::support::*;

/// Default run length and concurrency (the short form).
const DEFAULT_SECS: u64 = 5;
const DEFAULT_CONCURRENCY: usize = 16;
/// Warm-up load before the baseline RSS is taken: long enough for the
/// allocator, connection pools and tokio's workers to reach steady state.
const WARM_UP: Duration = Duration::from_secs(1);
/// Requests recorded in warm-up and replayed as hits; every fourth streams.
const HIT_SET: usize = 32;
/// The proxy's body limit in this test, and a body just over it.
const MAX_BODY_BYTES: usize = 65_536;
const TOO_LARGE_BYTES: usize = MAX_BODY_BYTES + 4_096;
/// How much RSS may grow from the end of warm-up to the end of the run.
///
/// Everything per request (connections, buffers, bodies, flights) must be
/// released: with hits and bad requests only, RSS stays within 1 MiB over
/// a million requests. What legitimately grows is sled, with every new
/// recording: its page cache, capped at 64 MiB by `SledStore::open`
/// (`cache_capacity`), plus per-page bookkeeping that sled keeps resident
/// (a few MiB per 100k recordings) and allocator slack; hence 64 + 32 MiB.
/// Measured (release, 2 cores, the RSS of the `serve` child): the long
/// form records ~138k entries and grows ~50 MiB; a leak of 150 bytes per
/// request on top (~50 MiB over its ~346k requests) would fail it. (In
/// the test process, with the load generator and mock beside the proxy,
/// it was ~145k entries and ~72 MiB.) The short form (~6k requests) only
/// catches gross leaks.
const RSS_GROWTH_BOUND_KIB: u64 = (64 + 32) * 1024;

/// The kinds of request in the mix, with the only status each may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// One of the warm-up recordings again: 200, `hit`, the recorded bytes.
    Hit,
    /// A request never seen before: 200, `miss`.
    Miss,
    /// A fresh `"stream": true` request: 200, `miss`, a whole stream.
    Stream,
    /// An invalid `x-llmtape-mode` header: 400.
    BadMode,
    /// A body over `server.max_body_bytes`: 413.
    TooLarge,
}

impl Kind {
    /// Four hits, two misses, two streams, one of each bad request in ten.
    const MIX: [Kind; 10] = [
        Kind::Hit,
        Kind::Miss,
        Kind::Hit,
        Kind::Stream,
        Kind::BadMode,
        Kind::Hit,
        Kind::Miss,
        Kind::Hit,
        Kind::Stream,
        Kind::TooLarge,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Hit => "hits",
            Kind::Miss => "misses",
            Kind::Stream => "streams",
            Kind::BadMode => "bad_mode",
            Kind::TooLarge => "too_large",
        }
    }

    fn expected_status(self) -> StatusCode {
        match self {
            Kind::Hit | Kind::Miss | Kind::Stream => StatusCode::OK,
            Kind::BadMode => StatusCode::BAD_REQUEST,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

fn chat(content: &str, stream: bool) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "seed": 7,
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

/// The warm-up recordings: request body -> the bytes recorded for it.
struct Recorded {
    requests: Vec<String>,
    bodies: Vec<Bytes>,
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    by_kind: HashMap<Kind, u64>,
    problems: Vec<String>,
    /// Fresh requests answered 200 `miss` (each must be in the store).
    recorded: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_insert(0) += n;
        }
        self.problems.extend(other.problems);
        self.recorded += other.recorded;
    }

    fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

/// One request of `kind`; returns what went wrong, if anything.
async fn one(
    client: &HttpClient,
    url: &str,
    kind: Kind,
    unique: &str,
    hit: usize,
    recorded: &Recorded,
) -> Result<(), String> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-dummy");
    let body = match kind {
        Kind::Hit => recorded.requests[hit].clone(),
        Kind::Miss => chat(unique, false),
        Kind::Stream => chat(unique, true),
        Kind::BadMode => {
            builder = builder.header("x-llmtape-mode", "sometimes");
            chat(unique, false)
        }
        Kind::TooLarge => chat(&"x".repeat(TOO_LARGE_BYTES), false),
    };
    let request = builder.body(Full::new(Bytes::from(body))).unwrap();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{kind:?}: request failed: {e:?}"))?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("{kind:?}: body failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, bytes))
    };
    let (parts, bytes) = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("{kind:?}: no answer within {WAIT:?}"))??;
    if parts.status != kind.expected_status() {
        return Err(format!(
            "{kind:?}: status {} (expected {}): {}",
            parts.status,
            kind.expected_status(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ));
    }
    let cache = parts
        .headers
        .get("x-llmtape-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match kind {
        Kind::Hit => {
            if cache != "hit" {
                return Err(format!("Hit: x-llmtape-cache {cache:?}"));
            }
            if bytes != recorded.bodies[hit] {
                return Err(format!("Hit: replay of #{hit} differs from its recording"));
            }
        }
        Kind::Miss | Kind::Stream => {
            if cache != "miss" {
                return Err(format!("{kind:?}: x-llmtape-cache {cache:?}"));
            }
            if kind == Kind::Stream && !bytes.ends_with(b"data: [DONE]\n\n") {
                return Err("Stream: not a whole stream".into());
            }
        }
        Kind::BadMode | Kind::TooLarge => {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("{kind:?}: error body is not JSON: {e}"))?;
        }
    }
    Ok(())
}

/// Sends the mix until `deadline`.
async fn worker(
    url: String,
    worker: usize,
    phase: &'static str,
    deadline: Instant,
    recorded: Arc<Recorded>,
) -> Tally {
    let client = http_client();
    let mut tally = Tally::default();
    let mut i = 0usize;
    while Instant::now() < deadline {
        // Offset by worker so the mix is interleaved across workers.
        let kind = Kind::MIX[(i + worker) % Kind::MIX.len()];
        let unique = format!("soak {phase} worker {worker} request {i}");
        let hit = (i * 7 + worker) % HIT_SET;
        match one(&client, &url, kind, &unique, hit, &recorded).await {
            Ok(()) => {
                *tally.by_kind.entry(kind).or_insert(0) += 1;
                if matches!(kind, Kind::Miss | Kind::Stream) {
                    tally.recorded += 1;
                }
            }
            Err(problem) => tally.problems.push(problem),
        }
        i += 1;
    }
    tally
}

async fn run_load(
    url: &str,
    concurrency: usize,
    phase: &'static str,
    length: Duration,
    recorded: &Arc<Recorded>,
) -> Tally {
    let deadline = Instant::now() + length;
    let handles: Vec<_> = (0..concurrency)
        .map(|w| {
            tokio::spawn(worker(
                url.to_string(),
                w,
                phase,
                deadline,
                recorded.clone(),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for handle in handles {
        let t = tokio::time::timeout(length + WAIT, handle)
            .await
            .expect("workers stop in time")
            .expect("worker did not panic");
        tally.merge(t);
    }
    tally
}

/// The resident set size of process `pid` in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("VmRSS in {path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_stays_correct_and_flat() {
    let secs: u64 = env_number("LLMTAPE_SOAK_SECS").unwrap_or(DEFAULT_SECS);
    let concurrency: usize = env_number("LLMTAPE_SOAK_CONCURRENCY").unwrap_or(DEFAULT_CONCURRENCY);
    let upstream = MockUpstream::start_lean().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = dir.path().join("soak.toml");
    std::fs::write(
        &config,
        format!("[server]\nmax_body_bytes = {MAX_BODY_BYTES}\n"),
    )
    .unwrap();
    let mut cmd = serve_cmd(dir.path(), &upstream.url(), &store);
    // Warnings only, as an in-process proxy logs nothing: per-request info
    // lines would only slow the child down.
    cmd.arg("--config")
        .arg(&config)
        .env("LLMTAPE_LOG", "llmtape=warn");
    let mut proxy = Serve::start(cmd).await;
    let url = proxy.url("/v1/chat/completions");

    // Warm-up 1: record the hit set.
    let requests: Vec<String> = (0..HIT_SET)
        .map(|i| chat(&format!("soak hit {i}"), i % 4 == 0))
        .collect();
    let mut bodies = Vec::new();
    for request in &requests {
        let response = send(
            Method::POST,
            &url,
            &[("content-type", "application/json")],
            request.clone(),
        )
        .await;
        assert_eq!(response.status, StatusCode::OK);
        bodies.push(response.body);
    }
    let recorded = Arc::new(Recorded { requests, bodies });

    // Warm-up 2: the full mix, then the baseline.
    let warm = run_load(&url, concurrency, "warm-up", WARM_UP, &recorded).await;
    assert!(warm.problems.is_empty(), "warm-up: {:#?}", warm.problems);
    let rss_warm = rss_kib(proxy.pid());

    // The run.
    let started = Instant::now();
    let tally = run_load(
        &url,
        concurrency,
        "run",
        Duration::from_secs(secs),
        &recorded,
    )
    .await;
    let elapsed = started.elapsed();
    let rss_end = rss_kib(proxy.pid());

    let count = |k: Kind| tally.by_kind.get(&k).copied().unwrap_or(0);
    let total = tally.total() + tally.problems.len() as u64;
    println!(
        "soak: {total} requests in {:.1}s at concurrency {concurrency} ({:.0} req/s): {}; {} problems; RSS of serve {} MiB after warm-up, {} MiB at the end",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        [Kind::Hit, Kind::Miss, Kind::Stream, Kind::BadMode, Kind::TooLarge]
            .map(|k| format!("{}={}", k.as_str(), count(k)))
            .join(" "),
        tally.problems.len(),
        rss_warm / 1024,
        rss_end / 1024,
    );

    let distinct = count_by(&tally.problems);
    assert!(
        tally.problems.is_empty(),
        "{} unexpected outcomes (distinct, with counts): {distinct:#?}",
        tally.problems.len()
    );
    for kind in Kind::MIX {
        assert!(count(kind) > 0, "the run exercised {kind:?}");
    }
    assert!(
        rss_end <= rss_warm + RSS_GROWTH_BOUND_KIB,
        "RSS grew from {rss_warm} KiB after warm-up to {rss_end} KiB, more than {RSS_GROWTH_BOUND_KIB} KiB"
    );

    // Afterwards: every recording whole, and every fresh answer recorded.
    let stopped = proxy.terminate().await;
    assert!(
        stopped.success(),
        "serve stops cleanly: {stopped:?}; its log: {}",
        proxy.log()
    );
    let store = SledStore::open(&store).expect("the store opens after the run");
    let mut entries = 0u64;
    for (i, item) in store.iter().enumerate() {
        item.unwrap_or_else(|e| panic!("entry #{i} decodes: {e}"));
        entries += 1;
    }
    let expected = HIT_SET as u64 + warm.recorded + tally.recorded;
    assert_eq!(
        entries, expected,
        "the store holds the {HIT_SET} hit recordings and every fresh 200 miss"
    );
    assert_eq!(
        upstream.calls() as u64,
        expected,
        "hits and bad requests never reach the upstream"
    );
}
