//! Load benchmark (issue 7): llmtape with a warm store against a bare hyper
//! server returning the same bytes from memory, driven by the same load
//! generator in the same run, plus misses against the mock upstream called
//! directly.
//!
//! `cargo bench --bench load` (or `scripts/bench`). Environment:
//! `BENCH_SECS` (seconds per measured run, default 5), `BENCH_CONCURRENCY`
//! (the high-concurrency case, default 32), `LLMTAPE_LOG` (llmtape's log
//! filter, default `llmtape=info` as `serve` has; lines go to a sink).
//!
//! Everything shares one process and one tokio runtime: the load generator,
//! llmtape, the bare server and the mock upstream compete for the same
//! cores. Nothing is pinned. Ratios are the point, not absolute numbers.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it exits at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtape::config::Config;
use llmtape::key::{Canonical, KeyRules, RequestParts};
use llmtape::server::Server;
use serde_json::json;
use tokio::net::TcpListener;

/// Events in the benchmark stream, `data: [DONE]` included.
const STREAM_EVENTS: usize = 20;
/// Pause after the first upstream stream event in the time-to-first-byte
/// case, so the first byte is clearly apart from the end of the stream.
const TTFB_GAP_MS: u64 = 2;

type MockBody = UnsyncBoxBody<Bytes, Infallible>;
type BenchClient = Client<HttpConnector, Full<Bytes>>;

// ---------------------------------------------------------------------------
// The bytes: one chat completion of about 1.2 KB and a 20-event stream.

fn chat_completion() -> Bytes {
    let content = "Paris is the capital of France. It sits on the Seine, in the north of the country, and has been the seat of government since the tenth century with few interruptions. Its population is about two million in the city proper and over twelve million in the metropolitan area. ".repeat(3);
    let body = json!({
        "id": "chatcmpl-bench0000000000000000000001",
        "object": "chat.completion",
        "created": 1_717_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench00001",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content.trim_end(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 24, "completion_tokens": 180, "total_tokens": 204},
    });
    Bytes::from(serde_json::to_vec(&body).expect("a json! value serialises"))
}

fn stream_events() -> Vec<Bytes> {
    let mut events = Vec::with_capacity(STREAM_EVENTS);
    for i in 0..STREAM_EVENTS - 1 {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": ""})
        } else {
            json!({"content": format!(" word{i}")})
        };
        let finish = if i == STREAM_EVENTS - 2 {
            json!("stop")
        } else {
            json!(null)
        };
        let chunk = json!({
            "id": "chatcmpl-bench0000000000000000000002",
            "object": "chat.completion.chunk",
            "created": 1_717_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_bench00001",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        events.push(Bytes::from(format!("data: {chunk}\n\n")));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// What a mock server answers with.
struct Answers {
    chat: Bytes,
    events: Vec<Bytes>,
    stream: Bytes,
    /// Send a stream event by event (the upstream) or as one body (the bare
    /// server, like llmtape's instant replay).
    framed: bool,
}

// ---------------------------------------------------------------------------
// The servers.

/// A bare hyper HTTP/1 server: reads the request body, answers from memory.
/// `framed` is the mock upstream; otherwise it is the ceiling.
async fn start_mock(answers: Arc<Answers>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0 works on any machine with loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let answers = answers.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, answers.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    request: Request<Incoming>,
    answers: Arc<Answers>,
) -> Result<Response<MockBody>, Infallible> {
    let gap_ms = request
        .headers()
        .get("x-bench-gap-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    const STREAM_FIELD: &[u8] = b"\"stream\":true";
    let wants_stream = body.windows(STREAM_FIELD.len()).any(|w| w == STREAM_FIELD);
    let builder = Response::builder()
        .header("x-request-id", "req_bench0000000000000001")
        .header("openai-processing-ms", "42");
    let response = if !wants_stream {
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(answers.chat.clone()).boxed_unsync())
    } else {
        let builder = builder.header(header::CONTENT_TYPE, "text/event-stream");
        if !answers.framed {
            builder.body(Full::new(answers.stream.clone()).boxed_unsync())
        } else {
            let events = answers.events.clone();
            let frames = futures_util::stream::unfold(0usize, move |i| {
                let event = events.get(i).cloned();
                async move {
                    let event = event?;
                    if i == 1 && gap_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                    }
                    Some((Ok::<_, Infallible>(Frame::data(event)), i + 1))
                }
            });
            builder.body(StreamBody::new(frames).boxed_unsync())
        }
    };
    Ok(response.expect("static headers are valid"))
}

/// llmtape in this process, store in `dir`, mode auto.
async fn start_llmtape(
    upstream: SocketAddr,
    dir: &std::path::Path,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut config = Config::from_toml("").expect("the empty configuration is valid");
    config.server.listen = "127.0.0.1:0".parse().expect("a valid address");
    config.store.path = dir.join("store");
    config.upstream.url = format!("http://{upstream}")
        .parse()
        .expect("a valid upstream URL");
    let server = Server::bind(config)
        .await
        .unwrap_or_else(|e| panic!("llmtape did not start: {e}"));
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

// ---------------------------------------------------------------------------
// The load generator.

/// Makes the body of the n-th request of a run.
type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// One request shape, sent to one server.
#[derive(Clone)]
struct Shot {
    uri: Uri,
    body: BodyFn,
    /// Extra request headers.
    headers: Vec<(&'static str, String)>,
    /// The `x-llmtape-cache` value every answer must carry, if any.
    expect_cache: Option<&'static str>,
}

/// What a run measured.
#[derive(Default)]
struct Run {
    elapsed: Duration,
    /// Send to end of body, nanoseconds, one per good request.
    total: Vec<u64>,
    /// Send to first body byte, nanoseconds.
    first: Vec<u64>,
    errors: u64,
    unexpected: u64,
}

impl Run {
    fn rps(&self) -> f64 {
        self.total.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn total_ms(&self, q: f64) -> f64 {
        percentile(&self.total, q)
    }

    fn first_ms(&self, q: f64) -> f64 {
        percentile(&self.first, q)
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank] as f64 / 1e6
}

/// `concurrency` tasks send `shot` back to back on kept-alive connections for
/// `secs` (after a short warm-up that is not counted).
async fn drive(client: &BenchClient, shot: &Shot, concurrency: usize, secs: f64) -> Run {
    let counter = Arc::new(AtomicU64::new(0));
    let warm = (secs / 5.0).min(1.0);
    let _ = phase(client, shot, concurrency, warm, &counter).await;
    let mut run = phase(client, shot, concurrency, secs, &counter).await;
    run.total.sort_unstable();
    run.first.sort_unstable();
    run
}

async fn phase(
    client: &BenchClient,
    shot: &Shot,
    concurrency: usize,
    secs: f64,
    counter: &Arc<AtomicU64>,
) -> Run {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let shot = shot.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match one(&client, &shot, n).await {
                    Ok((total, first, as_expected)) => {
                        run.total.push(total);
                        run.first.push(first);
                        if !as_expected {
                            run.unexpected += 1;
                        }
                    }
                    Err(_) => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for task in tasks {
        let run = task.await.expect("a load task does not panic");
        all.total.extend(run.total);
        all.first.extend(run.first);
        all.errors += run.errors;
        all.unexpected += run.unexpected;
    }
    all.elapsed = started.elapsed();
    all
}

/// One request: (ns to end of body, ns to first body byte, outcome as expected).
async fn one(
    client: &BenchClient,
    shot: &Shot,
    n: u64,
) -> Result<(u64, u64, bool), Box<dyn std::error::Error + Send + Sync>> {
    let mut request = Request::post(shot.uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sk-bench");
    for (name, value) in &shot.headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new((shot.body)(n)))?;
    let sent = Instant::now();
    let response = client.request(request).await?;
    let ok = response.status().is_success()
        && match shot.expect_cache {
            Some(want) => response
                .headers()
                .get("x-llmtape-cache")
                .is_some_and(|v| v.as_bytes() == want.as_bytes()),
            None => true,
        };
    let mut body = response.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if frame?.data_ref().is_some_and(|d| !d.is_empty()) && first.is_none() {
            first = Some(sent.elapsed());
        }
    }
    let total = sent.elapsed();
    let first = first.unwrap_or(total);
    Ok((total.as_nanos() as u64, first.as_nanos() as u64, ok))
}

/// Sends one request and returns the body, for warming and byte checks.
async fn fetch(client: &BenchClient, shot: &Shot, n: u64) -> (Option<String>, Bytes) {
    let mut request = Request::post(shot.uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sk-bench");
    for (name, value) in &shot.headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new((shot.body)(n)))
        .expect("a valid request");
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("warm-up request to {} failed: {e}", shot.uri));
    let cache = response
        .headers()
        .get("x-llmtape-cache")
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("warm-up body reads")
        .to_bytes();
    (cache, body)
}

// ---------------------------------------------------------------------------
// Request bodies.

fn chat_request(content: &str, stream: bool) -> Bytes {
    let mut request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer in one short paragraph."},
            {"role": "user", "content": content},
        ],
        "temperature": 0,
        "seed": 7,
        "max_tokens": 256,
    });
    if stream {
        request["stream"] = json!(true);
    }
    Bytes::from(serde_json::to_vec(&request).expect("a json! value serialises"))
}

fn fixed(body: Bytes) -> BodyFn {
    Arc::new(move |_| body.clone())
}

/// A distinct request every time, so each one is a miss.
fn distinct(stream: bool, run: u64) -> BodyFn {
    Arc::new(move |n| {
        chat_request(
            &format!("What is the capital of France? (miss {run}-{n})"),
            stream,
        )
    })
}

/// A chat request of at least `target` bytes (many messages).
fn big_chat_request(target: usize) -> Vec<u8> {
    let mut messages = vec![json!({"role": "system", "content": "You are a careful assistant."})];
    let sentence =
        "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ";
    let mut turn = 0usize;
    loop {
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        messages
            .push(json!({"role": role, "content": format!("turn {turn}: {}", sentence.repeat(4))}));
        turn += 1;
        let body = serde_json::to_vec(&json!({
            "model": "gpt-4o-mini", "messages": messages, "temperature": 0.2, "seed": 42, "user": "bench",
        }))
        .expect("a json! value serialises");
        if body.len() >= target {
            return body;
        }
    }
}

/// Median time to canonicalise and hash a ~100 KB chat request, in ms
/// (criterion's `benches/key.rs` measures it properly).
fn key_cost_ms() -> (usize, f64) {
    let body = big_chat_request(100 * 1024);
    let rules = KeyRules {
        ignore_fields: vec!["/user".to_string()],
        per_credential: false,
    };
    let parts = RequestParts {
        method: "POST",
        path: "/v1/chat/completions",
        query: None,
        content_type: Some("application/json"),
        body: &body,
        namespace: None,
        credential: None,
    };
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        std::hint::black_box(Canonical::new(&parts, &rules).key());
        times.push(started.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    (body.len(), percentile(&times, 0.5))
}

// ---------------------------------------------------------------------------
// The report.

struct Row {
    case: String,
    concurrency: usize,
    tape: Run,
    base: Run,
    /// Compare time to first byte instead of throughput.
    ttfb: bool,
    target: &'static str,
    met: bool,
}

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.1}")
    }
}

fn print_run(label: &str, run: &Run) {
    println!(
        "    {label:<9} {:>9.0} req/s  p50 {:>8} ms  p99 {:>8} ms  ttfb p50 {:>8} ms  ({} requests, {} errors, {} unexpected)",
        run.rps(),
        fmt_ms(run.total_ms(0.5)),
        fmt_ms(run.total_ms(0.99)),
        fmt_ms(run.first_ms(0.5)),
        run.total.len(),
        run.errors,
        run.unexpected,
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn main() {
    if !std::env::args().skip(1).any(|a| a == "--bench") {
        println!(
            "load benchmark: skipped (run it with `cargo bench --bench load` or scripts/bench)"
        );
        return;
    }
    // The same log filter `llmtape serve` starts with, formatted as it would
    // be but written nowhere: the per-request line's cost is included.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMTAPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("llmtape=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::sink)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    runtime.block_on(bench());
}

async fn bench() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let high: usize = env_or("BENCH_CONCURRENCY", 32);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpu_model();
    println!("# llmtape load benchmark");
    println!(
        "# {cores} cores ({cpu}); {secs} s per run; load generator, llmtape, bare server and mock upstream share one process and one tokio runtime, nothing pinned"
    );

    let chat = chat_completion();
    let events = stream_events();
    let stream: Bytes = events.concat().into();
    println!(
        "# response: chat completion {} bytes; stream {} events, {} bytes",
        chat.len(),
        events.len(),
        stream.len()
    );
    let bare = start_mock(Arc::new(Answers {
        chat: chat.clone(),
        events: events.clone(),
        stream: stream.clone(),
        framed: false,
    }))
    .await;
    let upstream = start_mock(Arc::new(Answers {
        chat: chat.clone(),
        events: events.clone(),
        stream: stream.clone(),
        framed: true,
    }))
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (tape, stop, task) = start_llmtape(upstream, dir.path()).await;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: BenchClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let path = "/v1/chat/completions";
    let uri =
        |addr: SocketAddr| -> Uri { format!("http://{addr}{path}").parse().expect("a valid URI") };

    // Warm the store: one miss each, then the same requests hit.
    let hit_body = chat_request("What is the capital of France?", false);
    let stream_body = chat_request("What is the capital of France?", true);
    let hit = |addr, body: &Bytes, expect| Shot {
        uri: uri(addr),
        body: fixed(body.clone()),
        headers: Vec::new(),
        expect_cache: expect,
    };
    for (body, want) in [(&hit_body, &chat), (&stream_body, &stream)] {
        let shot = hit(tape, body, None);
        let (first, _) = fetch(&client, &shot, 0).await;
        let (second, replayed) = fetch(&client, &shot, 0).await;
        let (_, direct) = fetch(&client, &hit(bare, body, None), 0).await;
        println!(
            "# warm-up: {:?} then {:?}; replay {} the bare server's bytes",
            first.unwrap_or_default(),
            second.unwrap_or_default(),
            if replayed == *want && direct == *want {
                "matches"
            } else {
                "DIFFERS from"
            }
        );
    }

    let mut rows = Vec::new();
    let mut case = |name: String,
                    concurrency: usize,
                    tape_run: Run,
                    base_run: Run,
                    ttfb: bool,
                    target: &'static str| {
        println!("  {name} (concurrency {concurrency})");
        print_run("llmtape", &tape_run);
        print_run("baseline", &base_run);
        let met = match target {
            t if t.starts_with("≥ 0.8") => {
                tape_run.rps() / base_run.rps() >= 0.8
                    && tape_run.total_ms(0.99) <= 1.5 * base_run.total_ms(0.99)
            }
            t if t.starts_with("≥ 0.7") => tape_run.rps() / base_run.rps() >= 0.7,
            _ => {
                let (a, b) = if ttfb {
                    (tape_run.first_ms(0.5), base_run.first_ms(0.5))
                } else {
                    (tape_run.total_ms(0.5), base_run.total_ms(0.5))
                };
                a - b < 1.0
            }
        };
        rows.push(Row {
            case: name,
            concurrency,
            tape: tape_run,
            base: base_run,
            ttfb,
            target,
            met,
        });
    };

    println!("\n## runs");
    for concurrency in [1, high] {
        let t = drive(
            &client,
            &hit(tape, &hit_body, Some("hit")),
            concurrency,
            secs,
        )
        .await;
        let b = drive(&client, &hit(bare, &hit_body, None), concurrency, secs).await;
        let target = if concurrency == high {
            "≥ 0.8 rps, p99 ≤ 1.5×"
        } else {
            "—"
        };
        case(
            "chat hit vs bare server".into(),
            concurrency,
            t,
            b,
            false,
            target,
        );
    }
    {
        let t = drive(&client, &hit(tape, &stream_body, Some("hit")), high, secs).await;
        let b = drive(&client, &hit(bare, &stream_body, None), high, secs).await;
        case(
            format!("{STREAM_EVENTS}-event stream hit vs bare server"),
            high,
            t,
            b,
            false,
            "≥ 0.7 rps",
        );
    }
    let run_id = std::process::id() as u64;
    {
        let miss = |addr, expect| Shot {
            uri: uri(addr),
            body: distinct(false, run_id),
            headers: Vec::new(),
            expect_cache: expect,
        };
        let t = drive(&client, &miss(tape, Some("miss")), 1, secs).await;
        let b = drive(&client, &miss(upstream, None), 1, secs).await;
        case(
            "chat miss vs upstream direct".into(),
            1,
            t,
            b,
            false,
            "added p50 < 1 ms",
        );
    }
    {
        let ttfb = |addr, expect| Shot {
            uri: uri(addr),
            body: distinct(true, run_id + 1_000_000),
            headers: vec![("x-bench-gap-ms", TTFB_GAP_MS.to_string())],
            expect_cache: expect,
        };
        let t = drive(&client, &ttfb(tape, Some("miss")), 1, secs).await;
        let b = drive(&client, &ttfb(upstream, None), 1, secs).await;
        case(
            format!("stream miss, time to first byte ({TTFB_GAP_MS} ms pause after event 1) vs upstream direct"),
            1,
            t,
            b,
            true,
            "added p50 < 1 ms",
        );
    }
    let (key_bytes, key_ms) = key_cost_ms();

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;

    println!("\n## table\n");
    println!(
        "`scripts/bench` (BENCH_SECS={secs}, BENCH_CONCURRENCY={high}) on {cores} cores, {cpu}; llmtape {}; load generator and servers in one process, not pinned.\n",
        env!("CARGO_PKG_VERSION")
    );
    println!("| case | conc. | llmtape req/s | baseline req/s | ratio | llmtape p50 / p99 ms | baseline p50 / p99 ms | p99 ratio | target | met |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for row in &rows {
        let (tape_p50, base_p50, tape_p99, base_p99) = if row.ttfb {
            (
                row.tape.first_ms(0.5),
                row.base.first_ms(0.5),
                row.tape.first_ms(0.99),
                row.base.first_ms(0.99),
            )
        } else {
            (
                row.tape.total_ms(0.5),
                row.base.total_ms(0.5),
                row.tape.total_ms(0.99),
                row.base.total_ms(0.99),
            )
        };
        let ratio = if row.target.starts_with("added") {
            format!("+{} ms p50", fmt_ms(tape_p50 - base_p50))
        } else {
            format!("{:.2}", row.tape.rps() / row.base.rps())
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} / {} | {} / {} | {:.2} | {} | {} |",
            row.case,
            row.concurrency,
            row.tape.rps(),
            row.base.rps(),
            ratio,
            fmt_ms(tape_p50),
            fmt_ms(tape_p99),
            fmt_ms(base_p50),
            fmt_ms(base_p99),
            tape_p99 / base_p99,
            row.target,
            if row.target == "—" {
                "—"
            } else if row.met {
                "yes"
            } else {
                "no"
            }
        );
    }
    println!(
        "| key of a {} KB chat request (median of 200; see `cargo bench --bench key`) | — | — | — | {} ms | — | — | — | < 1 ms | {} |",
        key_bytes / 1024,
        fmt_ms(key_ms),
        if key_ms < 1.0 { "yes" } else { "no" }
    );
    let bad: u64 = rows
        .iter()
        .map(|r| r.tape.errors + r.tape.unexpected + r.base.errors + r.base.unexpected)
        .sum();
    if bad > 0 {
        println!("\nwarning: {bad} requests failed or had an unexpected x-llmtape-cache value; see the runs above");
    }
}
