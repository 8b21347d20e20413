//! wrk as the load generator of the hit cases: a C load generator on its
//! own core, so the server, not the client, is what saturates.
//!
//! The in-process hyper client this benchmark used before saturated its
//! core before either server did, so llmtape and the bare server looked
//! alike in throughput. wrk (Debian's package; `scripts/bench` installs it)
//! runs one thread pinned to the load core, sends the same captured
//! request bytes to both servers from a Lua script (`wrk.method`,
//! `wrk.body`, `wrk.headers`), and reports req/s and a latency
//! distribution. Around each run this module reads the server's CPU time
//! (utime + stime, `/proc/PID/stat`) and wrk's own, so every figure comes
//! with the proof of who was the bottleneck: a ratio is only valid where
//! the server sits near 100% of its core.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
pub struct WrkRun {
    /// Requests completed in the run.
    pub requests: u64,
    /// Completed requests per second (wrk's figure).
    pub rps: f64,
    /// Latency percentiles, ms (wrk's `--latency` distribution).
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors, timeouts and non-2xx answers.
    pub errors: u64,
    /// Server CPU (user + system) during the run.
    pub server_cpu: Duration,
    /// wrk's own CPU (user + system).
    pub wrk_cpu: Duration,
    /// Wall time from wrk's start to its exit.
    pub wall: Duration,
}

impl WrkRun {
    /// Server CPU per request, µs.
    pub fn cpu_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// Share of one core the server used, percent.
    pub fn server_util(&self) -> f64 {
        100.0 * self.server_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Share of one core wrk used, percent.
    pub fn wrk_util(&self) -> f64 {
        100.0 * self.wrk_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// `(state, user + system CPU)` of process `pid`, from `/proc/PID/stat`.
pub fn proc_times(pid: u32) -> Option<(char, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is the first,
    // utime and stime the 12th and 13th (the 14th and 15th of the line).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Some((
        state,
        Duration::from_secs_f64(ticks as f64 / ticks_per_second()),
    ))
}

fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Whether `wrk` runs here.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Writes `body` and a Lua script that POSTs it with the headers the
/// in-process client sends (wrk adds Host and Content-Length); returns the
/// script's path.
pub fn script(dir: &Path, case: &str, body: &[u8]) -> PathBuf {
    let body_file = dir.join(format!("wrk-{case}.body"));
    std::fs::write(&body_file, body).expect("the wrk body file is written");
    let script = dir.join(format!("wrk-{case}.lua"));
    let lua = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-dummy"
wrk.headers["x-bench-case"] = "{case}"
local file = assert(io.open([[{}]], "rb"))
wrk.body = file:read("*a")
file:close()
"#,
        body_file.display()
    );
    std::fs::write(&script, lua).expect("the wrk script is written");
    script
}

/// Runs wrk (one thread, `connections` kept-alive connections, `secs`
/// seconds) against `url` with `script`, on `cpu` when given;
/// `server_cpu` reads the server's CPU time before and after.
pub fn run(
    cpu: Option<usize>,
    script: &Path,
    url: &str,
    connections: usize,
    secs: u64,
    server_cpu: impl Fn() -> Duration,
) -> WrkRun {
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg("wrk");
            command
        }
        None => Command::new("wrk"),
    };
    command
        .args(["-t1", "--latency", "--timeout", "10s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let cpu_before = server_cpu();
    let started = Instant::now();
    let mut child = command.spawn().expect("wrk starts (apt-get install wrk)");
    let pid = child.id();
    let mut output = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut output)
        .expect("wrk's output reads");
    // wrk has closed its output: it is exiting. Read its CPU time once it
    // is a zombie (exited, not yet reaped), then reap it.
    let mut wrk_cpu = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match proc_times(pid) {
            Some((state, cpu)) => {
                wrk_cpu = cpu;
                if state == 'Z' {
                    break;
                }
            }
            None => break,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = started.elapsed();
    let status = child.wait().expect("wrk is reaped");
    let server_cpu = server_cpu().saturating_sub(cpu_before);
    assert!(status.success(), "wrk failed ({status}):\n{output}");
    let mut run = parse(&output).unwrap_or_else(|| panic!("unexpected wrk output:\n{output}"));
    run.server_cpu = server_cpu;
    run.wrk_cpu = wrk_cpu;
    run.wall = wall;
    run
}

/// Reads wrk's report: `N requests in ...`, `Requests/sec:`, the latency
/// distribution, socket errors and non-2xx answers.
fn parse(output: &str) -> Option<WrkRun> {
    let mut run = WrkRun::default();
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = latency_ms(value),
            ["99%", value] => p99 = latency_ms(value),
            ["Requests/sec:", value] => rps = value.parse::<f64>().ok(),
            [n, "requests", "in", ..] => requests = n.parse::<u64>().ok(),
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().ok()?,
            _ => {}
        }
    }
    run.p50_ms = p50?;
    run.p99_ms = p99?;
    run.rps = rps?;
    run.requests = requests?;
    Some(run)
}

/// `260.00us`, `1.23ms`, `1.00s` in ms.
fn latency_ms(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// The best of repeated runs of one server: each figure from the run
/// least disturbed for it on a shared machine.
#[derive(Debug, Clone, Default)]
pub struct Best {
    /// The run with the highest throughput (req/s, p50, p99).
    pub fastest: WrkRun,
    /// The run with the lowest CPU per request (and its utilisation).
    pub leanest: WrkRun,
    /// Errors over all runs.
    pub errors: u64,
}

/// The best of `runs` (at least one).
pub fn best(runs: &[WrkRun]) -> Best {
    let pick = |better: fn(&WrkRun, &WrkRun) -> bool| {
        let mut runs = runs.iter();
        let mut best = runs.next().cloned().unwrap_or_default();
        for run in runs {
            if better(run, &best) {
                best = run.clone();
            }
        }
        best
    };
    Best {
        fastest: pick(|a, b| a.rps > b.rps),
        leanest: pick(|a, b| a.cpu_us() < b.cpu_us()),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}
