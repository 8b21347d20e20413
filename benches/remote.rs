//! The team store's figures (issue 16): what the Redis tier costs a hit.
//!
//! `cargo bench --bench remote` (or `scripts/bench --remote`). Needs
//! `redis-server` and `redis-benchmark` (Debian's `redis-server` package
//! has both). One release `llmtape serve` records `BENCH_REMOTE_KEYS`
//! distinct chat completions (about 1.2 KB each) into a fresh
//! `redis-server`; then, on loopback, with one HTTP/1.1 connection per
//! client task:
//! - **remote hit vs local hit, p50 at concurrency 1**: a proxy with an
//!   empty store and the remote configured answers each of
//!   `BENCH_REMOTE_SERIAL` keys once from Redis (`x-llmtape-tier: remote`),
//!   then the same keys again from the copy it just made (`local`);
//! - **local hits with and without a remote, at concurrency 32**: that
//!   proxy against one on the recording store with no `[remote]`, each
//!   looping over the same keys for `BENCH_SECS` (default 3), best of 3
//!   alternating runs;
//! - **remote hits at concurrency 32**: a third proxy with an empty store
//!   answers every other key once from Redis, as a ratio to
//!   `redis-benchmark -t set,get -c 32 -d SIZE` (GET of the same value
//!   size, on the same machine).
//!
//! The client runs in this process, on the same cores as the servers (no
//! pinning): the figures compare runs made the same way, they are not the
//! servers' ceilings. Without `--bench` (as `cargo test --all-targets`
//! runs it) it exits at once.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Longest wait for a child's ready line or for the recordings to reach
/// Redis.
const READY: Duration = Duration::from_secs(60);
/// Client tasks in the concurrent cases.
const CONCURRENCY: usize = 32;

type Sender = SendRequest<Full<Bytes>>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The request for key number `i`: the same shape, a different question.
fn chat_request(i: u64) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": format!("Question {i}: what is the capital of France?")}],
            "temperature": 0,
        })
        .to_string(),
    )
}

/// The mock upstream's answer: about 1.2 KB of chat completion.
fn chat_completion(n: u64) -> Bytes {
    let content = "Paris is the capital of France. It sits on the Seine, in the north of the country, and has been the seat of government since the tenth century. ".repeat(6);
    Bytes::from(
        serde_json::json!({
            "id": format!("chatcmpl-bench-{n}"),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 180, "total_tokens": 192},
        })
        .to_string(),
    )
}

/// The mock upstream, on this process's runtime.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let served = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let n = served.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let _ = request.into_body().collect().await;
                        let mut response = Response::new(Full::new(chat_completion(n)));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A child process, killed when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGTERM, and waits for the exit (so the store is free).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `command`, and waits (bounded) for a stdout line holding
/// `ready`; the address is `addr` or the one in llmtape's ready line.
fn spawn(mut command: Command, ready: &'static str, addr: Option<SocketAddr>) -> Proc {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (lines, found) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains(ready) {
                let _ = lines.send(line.clone());
                break;
            }
            line.clear();
        }
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = found
        .recv_timeout(READY)
        .unwrap_or_else(|_| panic!("{command:?} did not print {ready:?} in time"));
    let addr = addr.unwrap_or_else(|| {
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    });
    Proc { child, addr }
}

fn start_redis(dir: &Path) -> Proc {
    let port = free_port();
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    spawn(
        command,
        "Ready to accept connections",
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
    )
}

fn start_llmtape(store: &Path, upstream: SocketAddr, remote: Option<&str>) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmtape"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--mode", "auto"])
        .args(["--upstream", &format!("http://{upstream}")])
        .arg("--store")
        .arg(store)
        .env("LLMTAPE_LOG", "warn");
    if let Some(url) = remote {
        command.args(["--remote", url]);
    }
    spawn(command, "llmtape listening on", None)
}

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends one chat request; returns its latency and `x-llmtape-tier`.
async fn post(sender: &mut Sender, body: Bytes) -> (Duration, String) {
    sender.ready().await.unwrap();
    let request = Request::post("/v1/chat/completions")
        .header(header::HOST, "bench")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sk-bench-dummy")
        .body(Full::new(body))
        .unwrap();
    let started = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let tier = response
        .headers()
        .get("x-llmtape-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(status, StatusCode::OK, "a benchmark request failed");
    (started.elapsed(), tier)
}

/// Each of `keys` once, at concurrency 1: the latencies, ms, sorted, after
/// checking every answer came from `tier`.
async fn serial(addr: SocketAddr, keys: std::ops::Range<u64>, tier: &str) -> Vec<f64> {
    let mut sender = connect(addr).await;
    let mut latencies = Vec::new();
    for i in keys {
        let (took, got) = post(&mut sender, chat_request(i)).await;
        assert_eq!(got, tier, "key {i}");
        latencies.push(took.as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn p50(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

/// [`CONCURRENCY`] tasks share `keys`: with `secs`, they loop over them
/// until it is up; without, each key is sent once. Requests per second.
async fn concurrent(addr: SocketAddr, keys: std::ops::Range<u64>, secs: Option<f64>) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (start, len) = (keys.start, keys.end - keys.start);
    let started = Instant::now();
    let until = secs.map(|s| started + Duration::from_secs_f64(s));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (next, done) = (next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                match until {
                    Some(until) if Instant::now() >= until => return,
                    None if n >= len => return,
                    _ => {}
                }
                post(&mut sender, chat_request(start + n % len)).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// `redis-benchmark`'s GET requests per second for `size`-byte values at
/// [`CONCURRENCY`] connections.
fn redis_benchmark_get(port: u16, size: usize) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "set,get", "-n", "200000", "--csv"])
        .args(["-c", &CONCURRENCY.to_string(), "-d", &size.to_string()])
        .output()
        .expect("redis-benchmark runs (Debian's redis-server package has it)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|line| line.starts_with("\"GET\""))
        .and_then(|line| line.split(',').nth(1))
        .and_then(|rps| rps.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no GET line in redis-benchmark's output:\n{text}"))
}

/// Waits (bounded) until `addr`'s metrics report `at_least` remote writes.
async fn wait_for_writes(addr: SocketAddr, at_least: u64) {
    let deadline = Instant::now() + READY;
    loop {
        let mut sender = connect(addr).await;
        let request = Request::get("/_llmtape/metrics")
            .header(header::HOST, "bench")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let writes = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("llmtape_remote_writes_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if writes >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{at_least} recordings in Redis in time (have {writes})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let keys: u64 = env_or("BENCH_REMOTE_KEYS", 12_000);
    let serial_keys: u64 = env_or("BENCH_REMOTE_SERIAL", 2_000).min(keys / 2);
    let secs: f64 = env_or("BENCH_SECS", 3.0);
    let dir = tempfile::tempdir().unwrap();
    let redis = start_redis(dir.path());
    let url = format!("redis://{}", redis.addr);
    let upstream = start_upstream().await;

    println!("== recording {keys} chat completions into a fresh redis-server");
    let recorder = start_llmtape(&dir.path().join("recorded"), upstream, Some(&url));
    concurrent(recorder.addr, 0..keys, None).await;
    wait_for_writes(recorder.addr, keys).await;
    recorder.stop();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let one = llmtape::store::remote::record_key("llmtape", &first_key(dir.path()));
    let size: usize = redis::cmd("STRLEN")
        .arg(&one)
        .query_async(&mut connection)
        .await
        .unwrap();

    let plain = start_llmtape(&dir.path().join("recorded"), upstream, None);
    let tiered = start_llmtape(&dir.path().join("tiered"), upstream, Some(&url));
    let remote_hits = serial(tiered.addr, 0..serial_keys, "remote").await;
    let local_hits = serial(tiered.addr, 0..serial_keys, "local").await;
    let plain_hits = serial(plain.addr, 0..serial_keys, "-").await;
    let overhead = p50(&remote_hits) - p50(&local_hits);
    println!(
        "p50 at concurrency 1 over {serial_keys} keys: remote hit {:.3} ms, local hit (remote configured) {:.3} ms, local hit (no remote) {:.3} ms; remote adds {overhead:.3} ms (target < 0.5)",
        p50(&remote_hits),
        p50(&local_hits),
        p50(&plain_hits)
    );

    let (mut with_remote, mut without) = (0f64, 0f64);
    for _ in 0..3 {
        without = without.max(concurrent(plain.addr, 0..serial_keys, Some(secs)).await);
        with_remote = with_remote.max(concurrent(tiered.addr, 0..serial_keys, Some(secs)).await);
    }
    let local_ratio = with_remote / without;
    println!(
        "local hits at concurrency {CONCURRENCY}, best of 3 x {secs} s: {with_remote:.0} req/s with a remote, {without:.0} without; ratio {local_ratio:.3} (target >= 0.95)"
    );
    drop((plain, tiered));

    let fresh = start_llmtape(&dir.path().join("fresh"), upstream, Some(&url));
    let remote_rps = concurrent(fresh.addr, serial_keys..keys, None).await;
    drop(fresh);
    let redis_rps = redis_benchmark_get(redis.addr.port(), size);
    let ratio = remote_rps / redis_rps;
    println!(
        "remote hits at concurrency {CONCURRENCY} ({} keys, each once, empty local store): {remote_rps:.0} req/s; redis-benchmark GET of {size} B: {redis_rps:.0} req/s; ratio {ratio:.3}",
        keys - serial_keys
    );
    println!();
    println!("| Shared store (Redis) | Figure | Target |");
    println!("|---|---|---|");
    println!(
        "| remote hit p50 over local hit p50, concurrency 1 | {overhead:+.3} ms ({:.3} vs {:.3} ms) | < 0.5 ms |",
        p50(&remote_hits),
        p50(&local_hits)
    );
    println!(
        "| local hits with a remote / without, concurrency {CONCURRENCY} | {local_ratio:.3} ({with_remote:.0} vs {without:.0} req/s) | >= 0.95 |"
    );
    println!(
        "| remote hits / redis-benchmark GET ({size} B), concurrency {CONCURRENCY} | {ratio:.3} ({remote_rps:.0} vs {redis_rps:.0} req/s) | reported |"
    );
}

/// The key of request 0, as the recording proxy stored it (read back from
/// its store, so the bench needs no copy of the key rules).
fn first_key(dir: &Path) -> llmtape::key::RequestKey {
    let store = llmtape::store::SledStore::open_existing(&dir.join("recorded")).unwrap();
    let first = store
        .iter()
        .next()
        .expect("the recording store holds recordings")
        .unwrap();
    first.key()
}
