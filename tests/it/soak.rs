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
//!     cargo test --release --test soak -- --nocapture
//! ```
//!
//! The upstream here is a lean mock defined in this file that keeps
//! nothing per request (the shared `MockUpstream` remembers every request
//! it sees, which would show up as growth in this process's RSS).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{TestProxy, WAIT};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use llmtape::store::Store;

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
/// recording: its page cache, capped at 64 MiB by `Store::open`
/// (`cache_capacity`), plus per-page bookkeeping that sled keeps resident
/// (a few MiB per 100k recordings) and allocator slack; hence 64 + 32 MiB.
/// Measured (release, 2 cores): the long form records ~145k entries and
/// grows ~72 MiB; a leak of 100 bytes per request on top (~35 MiB over its
/// ~360k requests) would fail it. The short form (~7k requests) only
/// catches gross leaks.
const RSS_GROWTH_BOUND_KIB: u64 = (64 + 32) * 1024;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

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
// A lean upstream
// ---------------------------------------------------------------------------

/// Answers chat completions like OpenAI, plain or streamed, and keeps
/// nothing but a call counter.
struct LeanUpstream {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
}

type MockBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

impl LeanUpstream {
    async fn start() -> LeanUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| lean_answer(counter.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        LeanUpstream { addr, calls }
    }
}

async fn lean_answer(
    calls: Arc<AtomicU64>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let stream = serde_json::from_slice::<serde_json::Value>(&body)
        .map(|v| v["stream"] == true)
        .unwrap_or(false);
    let mut response = if stream {
        let events: Vec<Result<http_body::Frame<Bytes>, _>> = (0..3)
            .map(|i| format!("data: {{\"id\":\"chatcmpl-{n}\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_soak\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} #{n}\"}},\"finish_reason\":null}}]}}\n\n"))
            .chain(std::iter::once("data: [DONE]\n\n".to_string()))
            .map(|event| Ok(http_body::Frame::data(Bytes::from(event))))
            .collect();
        let mut response =
            Response::new(StreamBody::new(futures_util::stream::iter(events)).boxed_unsync());
        response.headers_mut().insert(
            "content-type",
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        response
    } else {
        let text = format!("{{\n  \"id\": \"chatcmpl-{n}\",\n  \"object\": \"chat.completion\",\n  \"model\": \"gpt-4o-mini\",\n  \"choices\": [{{\"index\": 0, \"message\": {{\"role\": \"assistant\", \"content\": \"reply #{n}\"}}, \"finish_reason\": \"stop\"}}],\n  \"usage\": {{\"prompt_tokens\": 9, \"completion_tokens\": 3, \"total_tokens\": 12, \"score\": 1.0}},\n  \"system_fingerprint\": \"fp_soak\"\n}}\n");
        let mut response = Response::new(
            Full::new(Bytes::from(text))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        response
    };
    response
        .headers_mut()
        .insert("x-request-id", format!("req_{n}").parse().unwrap());
    Ok(response)
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
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
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

/// This process's resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_stays_correct_and_flat() {
    let secs: u64 = env_or("LLMTAPE_SOAK_SECS", DEFAULT_SECS);
    let concurrency: usize = env_or("LLMTAPE_SOAK_CONCURRENCY", DEFAULT_CONCURRENCY);
    let upstream = LeanUpstream::start().await;
    let mut proxy = TestProxy::start(
        &format!("http://{}", upstream.addr),
        &format!("[server]\nmax_body_bytes = {MAX_BODY_BYTES}\n"),
    )
    .await;
    let url = proxy.url("/v1/chat/completions");

    // Warm-up 1: record the hit set.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let requests: Vec<String> = (0..HIT_SET)
        .map(|i| chat(&format!("soak hit {i}"), i % 4 == 0))
        .collect();
    let mut bodies = Vec::new();
    for request in &requests {
        let response = client
            .request(
                Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(request.clone())))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.into_body().collect().await.unwrap().to_bytes());
    }
    let recorded = Arc::new(Recorded { requests, bodies });

    // Warm-up 2: the full mix, then the baseline.
    let warm = run_load(&url, concurrency, "warm-up", WARM_UP, &recorded).await;
    assert!(warm.problems.is_empty(), "warm-up: {:#?}", warm.problems);
    let rss_warm = rss_kib();

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
    let rss_end = rss_kib();

    let count = |k: Kind| tally.by_kind.get(&k).copied().unwrap_or(0);
    let total = tally.total() + tally.problems.len() as u64;
    println!(
        "soak: {total} requests in {:.1}s at concurrency {concurrency} ({:.0} req/s): {}; {} problems; RSS {} MiB after warm-up, {} MiB at the end",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        [Kind::Hit, Kind::Miss, Kind::Stream, Kind::BadMode, Kind::TooLarge]
            .map(|k| format!("{}={}", k.as_str(), count(k)))
            .join(" "),
        tally.problems.len(),
        rss_warm / 1024,
        rss_end / 1024,
    );

    let distinct: HashMap<&String, usize> =
        tally.problems.iter().fold(HashMap::new(), |mut m, p| {
            *m.entry(p).or_insert(0) += 1;
            m
        });
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
    proxy.stop().await;
    let store = Store::open(&proxy.store_dir).expect("the store opens after the run");
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
        upstream.calls.load(Ordering::SeqCst),
        expected,
        "hits and bad requests never reach the upstream"
    );
}
