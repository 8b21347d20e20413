//! Slow and idle clients cannot lock the proxy out (issue 13): the real
//! binary on real sockets, with short client timeouts in its config. A
//! partial head, a partial body and an idle keep-alive connection are each
//! closed after their timeout; a connection flood past the file limit
//! leaves room for a client and the health probe; a long stream that
//! pauses longer than every timeout still arrives whole.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::support::*;

/// The client timeouts the tests run with: short, so a test takes
/// moments; every wait on them is still bounded by `WAIT`.
const SHORT: &str = "300ms";

/// A `[server]` section with every client timeout at `timeout`.
fn bounds(timeout: &str) -> String {
    format!(
        "[server]\nheader_read_timeout = \"{timeout}\"\nbody_read_timeout = \"{timeout}\"\nidle_timeout = \"{timeout}\"\n"
    )
}

/// The binary serving in front of a mock, with `config` as its file.
struct Setup {
    mock: MockUpstream,
    serve: Serve,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(config: &str) -> Setup {
        Setup::start_with(config, |cmd| cmd).await
    }

    /// `wrap` may put the command under another (e.g. `prlimit`).
    async fn start_with(config: &str, wrap: impl FnOnce(Command) -> Command) -> Setup {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slow.toml"), config).unwrap();
        let mut cmd = serve_cmd(dir.path(), &mock.url(), &dir.path().join("store"));
        cmd.args(["--config", "slow.toml"]);
        let serve = Serve::start(wrap(cmd)).await;
        Setup {
            mock,
            serve,
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        tokio::time::timeout(WAIT, TcpStream::connect(&self.serve.addr))
            .await
            .expect("connected in time")
            .expect("connects")
    }

    /// The value of one metrics line, e.g.
    /// `llmtape_connections_timed_out_total{timeout="idle"}`.
    async fn metric(&self, name: &str) -> u64 {
        let text = send(Method::GET, &self.serve.url("/_llmtape/metrics"), &[], "").await;
        let text = String::from_utf8_lossy(&text.body).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in the metrics: {text}"))
    }
}

/// Everything the peer sends until it closes; a reset counts as a close
/// (after what came before it).
async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read_all)
        .await
        .expect("the proxy closes the connection in time");
    out
}

/// One HTTP/1.1 answer read off `socket` (head and a content-length body).
async fn read_answer(socket: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_one = async {
        loop {
            let n = socket.read(&mut buf).await.expect("reads");
            assert!(
                n > 0,
                "closed mid-answer: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read_one)
        .await
        .expect("an answer in time")
}

#[tokio::test]
async fn a_partial_head_gets_408_and_the_connection_is_closed() {
    let setup = Setup::start(&bounds(SHORT)).await;
    let mut socket = setup.connect().await;
    socket
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty")
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut socket).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer:?}");
    assert!(
        answer.contains("server.header_read_timeout") && answer.contains("request_head_timeout"),
        "the OpenAI-shaped body names the key: {answer:?}"
    );
    assert_eq!(
        setup
            .metric("llmtape_connections_timed_out_total{timeout=\"header\"}")
            .await,
        1
    );
    assert_eq!(setup.mock.calls(), 0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_without_an_answer() {
    let setup = Setup::start(&bounds(SHORT)).await;
    let mut socket = setup.connect().await;
    let answer = read_to_close(&mut socket).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(
        setup
            .metric("llmtape_connections_timed_out_total{timeout=\"header\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_stall_part_way_through_the_http2_preface_is_closed_without_an_http1_answer() {
    // It may be an HTTP/2 client: HTTP/1 bytes would be garbage to it.
    // A method that only starts like the preface is HTTP/1 and gets its 408.
    for (sent, expect_408) in [(&b"PRI * HTTP/2.0\r\n"[..], false), (b"PRX /v1", true)] {
        let setup = Setup::start(&bounds(SHORT)).await;
        let mut socket = setup.connect().await;
        socket.write_all(sent).await.unwrap();
        let answer = String::from_utf8(read_to_close(&mut socket).await).unwrap();
        if expect_408 {
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
        } else {
            assert!(answer.is_empty(), "{answer:?}");
        }
        assert_eq!(
            setup
                .metric("llmtape_connections_timed_out_total{timeout=\"header\"}")
                .await,
            1
        );
    }
}

#[tokio::test]
async fn a_partial_body_gets_408_and_the_connection_is_closed() {
    let setup = Setup::start(&bounds(SHORT)).await;
    let mut socket = setup.connect().await;
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"model\":\"gpt-4o-mini\",",
        )
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut socket).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer:?}");
    assert!(
        answer.contains("server.body_read_timeout") && answer.contains("request_body_timeout"),
        "{answer:?}"
    );
    assert_eq!(setup.mock.calls(), 0, "nothing reached the upstream");
    assert_eq!(
        setup
            .metric("llmtape_connections_timed_out_total{timeout=\"body\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_partial_body_on_a_forwarded_route_gets_408_too() {
    // Not a cached route: the body streams to the upstream as it comes.
    let setup = Setup::start(&bounds(SHORT)).await;
    let mut socket = setup.connect().await;
    socket
        .write_all(
            b"POST /v1/files HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/octet-stream\r\ncontent-length: 200\r\n\r\npart of a file",
        )
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut socket).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "the client stalled, not the upstream: {answer:?}"
    );
    assert!(answer.contains("request_body_timeout"), "{answer:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let setup = Setup::start(&bounds(SHORT)).await;
    let mut socket = setup.connect().await;
    socket
        .write_all(b"GET /_llmtape/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(
        !answer.contains("connection: close"),
        "kept alive: {answer}"
    );
    // Then nothing: the proxy closes it, with nothing more to say.
    let rest = read_to_close(&mut socket).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(
        setup
            .metric("llmtape_connections_timed_out_total{timeout=\"idle\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_long_stream_pausing_past_every_client_timeout_arrives_whole() {
    let setup = Setup::start(&bounds(SHORT)).await;
    // Four pauses of 800 ms, each longer than the header, body and idle
    // timeouts (300 ms): they bound the client, not the upstream.
    let response = open_stream(
        &setup.serve.url("/v1/chat/completions"),
        STREAM_CHAT,
        &[
            ("x-mock-stream-delay-ms", "800"),
            ("x-mock-stream-events", "4"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-llmtape-cache"], "miss");
    let mut body = response.into_body();
    let text = String::from_utf8(read_all(&mut body).await.expect("not cut")).unwrap();
    for i in 0..4 {
        assert!(text.contains(&format!("tok{i} #1")), "event {i} in {text}");
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    for which in ["header", "body", "idle"] {
        let name = format!("llmtape_connections_timed_out_total{{timeout=\"{which}\"}}");
        assert_eq!(setup.metric(&name).await, 0, "{which}");
    }
}

/// A TLS client for the self-signed certificate `der`, speaking `alpn`.
fn tls_connector(der: Vec<u8>, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Serves over TLS with the client timeouts at [`SHORT`]; returns the
/// setup and the certificate.
async fn start_tls() -> (Setup, Vec<u8>, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let config = format!(
        "{}tls_cert = {:?}\ntls_key = {:?}\n",
        bounds(SHORT),
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.toml"), config).unwrap();
    let mut cmd = serve_cmd(dir.path(), &mock.url(), &dir.path().join("store"));
    cmd.args(["--config", "slow.toml"]);
    let serve = Serve::start(cmd).await;
    (
        Setup {
            mock,
            serve,
            _dir: dir,
        },
        cert.der().to_vec(),
        certs,
    )
}

async fn tls_connect(
    setup: &Setup,
    der: Vec<u8>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = setup.connect().await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, tls_connector(der, alpn).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds")
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_is_closed() {
    let (setup, der, _certs) = start_tls().await;
    let der_again = der.clone();
    let tls = tls_connect(&setup, der, b"h2").await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = Request::get("https://localhost/_llmtape/health")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("body in time")
        .unwrap();
    // Then nothing: the server ends the connection (GOAWAY, then close).
    let ended = tokio::time::timeout(WAIT, connection)
        .await
        .expect("the proxy ends the idle HTTP/2 connection in time");
    assert!(matches!(ended, Ok(Ok(()))), "a clean GOAWAY: {ended:?}");
    let metrics = tls_get(&setup, der_again, "/_llmtape/metrics").await;
    assert!(
        metrics.contains("\nllmtape_connections_timed_out_total{timeout=\"idle\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_http2_connection_without_tls_that_asks_nothing_gets_a_goaway() {
    // Prior knowledge: the preface alone says HTTP/2 (no ALPN, and no
    // request that would). Its first request is owed within the header
    // timeout, as on any connection; past it an HTTP/2 client gets a
    // GOAWAY, where one taken for HTTP/1 would get a 408 in HTTP/1 bytes
    // (a protocol error to it).
    let setup = Setup::start(&bounds(SHORT)).await;
    let socket = setup.connect().await;
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(socket),
    )
    .await
    .expect("h2 handshake");
    let ended = tokio::time::timeout(WAIT, connection)
        .await
        .expect("the proxy ends the idle HTTP/2 connection in time");
    assert!(matches!(ended, Ok(())), "a clean GOAWAY: {ended:?}");
    let header = setup
        .metric("llmtape_connections_timed_out_total{timeout=\"header\"}")
        .await;
    let idle = setup
        .metric("llmtape_connections_timed_out_total{timeout=\"idle\"}")
        .await;
    assert_eq!((header, idle), (1, 0), "timed out as (a slow head, idle)");
}

/// GET `path` over TLS (HTTP/1.1, one request, then the close).
async fn tls_get(setup: &Setup, der: Vec<u8>, path: &str) -> String {
    let mut tls = tls_connect(setup, der, b"http/1.1").await;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("reads");
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn a_partial_head_over_tls_gets_408_too() {
    let (setup, der, _certs) = start_tls().await;
    let mut tls = tls_connect(&setup, der, b"http/1.1").await;
    tls.write_all(b"GET /_llmtape/health HTTP/1.1\r\nhost: local")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
}

/// Connections the flood opens: far past the file limit the proxy runs
/// under below.
const FLOOD: usize = 2000;

/// The proxy's open-file limit in the flood test (its soft and hard).
const PROXY_FILES: u32 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_past_the_file_limit_leaves_room_for_a_client_and_the_probe() {
    // This process holds the flood's client ends: it raises its own file
    // limit, so it runs alone.
    if ran_in_own_process(
        "slow_clients::a_flood_of_slow_connections_past_the_file_limit_leaves_room_for_a_client_and_the_probe",
        &[],
    )
    .await
    {
        return;
    }
    let needed = FLOOD as u64 + 512;
    let files = rlimit::increase_nofile_limit(needed).unwrap();
    assert!(
        files >= needed,
        "this test needs {needed} open files, has {files}"
    );

    // The slow connections are cut after a second, so the flood's first
    // wave holds every place while the rest of it is refused.
    let setup = Setup::start_with(&bounds("1s"), |cmd| {
        let mut wrapped = Command::new("prlimit");
        wrapped
            .arg(format!("--nofile={PROXY_FILES}:{PROXY_FILES}"))
            .arg(cmd.as_std().get_program())
            .args(cmd.as_std().get_args())
            .current_dir(cmd.as_std().get_current_dir().unwrap())
            .kill_on_drop(true);
        for (name, value) in cmd.as_std().get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        wrapped
    })
    .await;
    setup
        .serve
        .wait_for_log("server.max_connections cannot be reached")
        .await;
    let url = setup.serve.url("/v1/chat/completions");
    assert_eq!(post(&url, CHAT).await.cache(), "miss", "recorded first");

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut socket = setup.connect().await;
        // Refused ones are closed already: a failed write is expected.
        let _ = socket
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            .await;
        flood.push(socket);
    }

    // A client that retries as the OpenAI SDKs do (on 503 and on a closed
    // connection) gets its hit; every attempt is answered or closed at
    // once, none waits in the backlog.
    let hit = retry_until_answered(&url, CHAT).await;
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.cache(), "hit");
    assert_eq!(setup.mock.calls(), 1);
    let health = retry_until_answered(&setup.serve.url("/_llmtape/health"), "").await;
    assert_eq!(health.status, StatusCode::OK);

    let refused = setup.metric("llmtape_connections_refused_total").await;
    assert!(refused > 0, "the flood went past the limit");
    assert!(
        setup
            .metric("llmtape_connections_timed_out_total{timeout=\"header\"}")
            .await
            > 0
    );
    let log = setup.serve.log();
    let refusal_lines = log.matches("refused a connection").count() as u64;
    assert!(
        refusal_lines * 10 < refused,
        "refusals are logged once a second, not each ({refusal_lines} lines for {refused})"
    );
    drop(flood);
}

/// How long a retrying client waits between attempts (what an SDK's
/// backoff does, shortened).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Sends a request (POST when `body` is not empty) on a fresh connection
/// until it is answered with anything but a 503, within `WAIT`.
async fn retry_until_answered(url: &str, body: &'static str) -> Reply {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let method = if body.is_empty() {
            Method::GET
        } else {
            Method::POST
        };
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test-dummy")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let attempt = async {
            let response = http_client().request(request).await.ok()?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.ok()?.to_bytes();
            Some(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        // A refusal is immediate: an attempt that hangs waits in a backlog.
        let reply = tokio::time::timeout(WAIT, attempt)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "attempt {attempt} was neither answered nor refused in time",
                    attempt = attempts
                )
            });
        match reply {
            Some(reply) if reply.status != StatusCode::SERVICE_UNAVAILABLE => return reply,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still refused after {attempts} attempts"
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
