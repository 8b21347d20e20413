//! A real `redis-server` per test, on a free port of 127.0.0.1, with no
//! persistence; stopped (killed) when dropped.
//!
//! `scripts/test` installs Debian's `redis-server` when it is missing. A
//! test that finds none skips with a line on stderr, unless `CI` is set:
//! then a missing server is a failure, never a silent skip.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::WAIT;

/// The line `redis-server` logs once it accepts connections.
const READY: &str = "Ready to accept connections";

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Whether `redis-server` is installed; when it is not, says the test
    /// is skipped, or fails it when `CI` is set.
    pub fn installed_or_skip() -> bool {
        if installed() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed and CI is set: run scripts/test (it installs Debian's redis-server)"
        );
        eprintln!("skipping: redis-server is not installed (scripts/test installs it)");
        false
    }

    /// Starts a server, or `None` (after saying so) when `redis-server` is
    /// not installed and `CI` is not set.
    pub async fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[]).await
    }

    /// [`RedisServer::start`] with more `redis-server` arguments
    /// (`--requirepass`); the test's own connection then does not work.
    pub async fn start_with(extra: &[&str]) -> Option<RedisServer> {
        if !RedisServer::installed_or_skip() {
            return None;
        }
        // A port freed just now can be taken by another test before the
        // server binds it: then the server exits, and we try another.
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = RedisServer::start_on_with(port, extra).await {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A server that speaks only TLS (`rediss://`), on a free port, with
    /// `cert` and `key` (PEM files); clients are not asked for a
    /// certificate. The test's own plain connection does not work on it.
    pub async fn start_tls(cert: &Path, key: &Path) -> Option<RedisServer> {
        if !RedisServer::installed_or_skip() {
            return None;
        }
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        for _ in 0..5 {
            let port = free_port();
            let port_arg = port.to_string();
            let tls = [
                "--port",
                "0",
                "--tls-port",
                &port_arg,
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-ca-cert-file",
                cert,
                "--tls-auth-clients",
                "no",
            ];
            if let Some(server) = RedisServer::start_on_with(port, &tls).await {
                return Some(server);
            }
        }
        panic!("redis-server (TLS) did not start on any of 5 free ports");
    }

    /// Starts a server on `port`; `None` when it exits before it is ready.
    pub async fn start_on(port: u16) -> Option<RedisServer> {
        RedisServer::start_on_with(port, &[]).await
    }

    async fn start_on_with(port: u16, extra: &[&str]) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(READY) {
                    return true;
                }
            }
            false
        })
        .await
        .expect("redis-server ready or gone in time");
        if !ready {
            let _ = child.kill().await;
            return None;
        }
        // Keep draining its log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        if !extra.is_empty() {
            return Some(server);
        }
        let pong: String = redis::cmd("PING")
            .query_async(&mut server.connection().await)
            .await
            .unwrap();
        assert_eq!(pong, "PONG");
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection for the test's own commands (bounded by [`WAIT`]).
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
            .await
            .expect("redis answers in time")
            .expect("redis connection")
    }

    /// Runs one command (`["SET", "k", "v"]`) and returns its answer.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut command = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for arg in &args[1..] {
            command.arg(*arg);
        }
        tokio::time::timeout(WAIT, command.query_async(&mut self.connection().await))
            .await
            .expect("redis answers in time")
            .unwrap()
    }

    /// The raw value under `name`, if any.
    pub async fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.cmd(&[b"GET", name.as_bytes()]).await
    }

    /// Recordings under `prefix` (not their leases, nor the change list
    /// `{PREFIX}:changes`).
    pub async fn recordings(&self, prefix: &str) -> usize {
        let names: Vec<String> = self
            .cmd(&[b"KEYS", format!("{{{prefix}:*}}").as_bytes()])
            .await;
        names.len()
    }

    /// Waits (at most [`WAIT`]) until `name` holds a value, and returns it.
    pub async fn wait_for(&self, name: &str) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(value) = self.get(name).await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} in redis within {WAIT:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the server.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("redis-server still running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Kills the server and waits for it to exit.
    pub async fn kill(mut self) -> u16 {
        let _ = self.child.kill().await;
        self.port
    }
}

/// The recording's Redis key, as the proxy names it.
pub fn redis_record_key(prefix: &str, key_hex: &str) -> String {
    format!("{{{prefix}:{key_hex}}}")
}

fn installed() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
