//! The listener: accepts connections, admits them under
//! `server.max_connections`, hands each to its task (`serve::connection`,
//! HTTP/1.1 and HTTP/2 by hyper, TLS optional), and
//! shuts down gracefully.
//!
//! Start-up opens the store, fits `server.max_connections` under the
//! open-file limit and binds the socket before reporting ready, so every
//! start problem (store held, port in use) surfaces as a [`StartError`]
//! before the ready line. Shutdown stops accepting, lets in-flight
//! requests finish within `server.shutdown_timeout`, then flushes the
//! store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, Mode, TlsFiles};
use crate::serve::admission::{self, AcceptBackoff, Admission, Throttle};
use crate::serve::connection::{self, raw_answer};
use crate::serve::error::ProxyError;
use crate::serve::proxy::Proxy;
use crate::serve::upstream::UpstreamSetupError;
use crate::serve::watchdog::Bounds;
use crate::store::fixtures::FixtureError;
use crate::store::remote::{Remote, RemoteError};
use crate::store::{FixtureDir, Tier};
use crate::store::{SledStore, StoreError, Tiered};
use tokio_rustls::TlsAcceptor;

/// A client gets this long to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2: the server pings a connection that sent nothing for this
/// long, so a peer that vanished mid-stream (no FIN, no RST) is noticed...
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// ...when it does not answer the ping within this (hyper's default).
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fixture could not be loaded.
    #[error("cannot serve fixtures: {0}")]
    Fixtures(#[from] FixtureError),
    /// The upstream client could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; {hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The shared store (`[remote]`) refused this proxy: a password it
    /// does not accept, or a URL it cannot use.
    #[error("cannot use the shared store: {source}; check remote.url / --remote / LLMTAPE_REMOTE (a password goes in as redis://:PASSWORD@host:6379)")]
    Remote {
        /// Why.
        #[source]
        source: RemoteError,
    },
    /// The TLS certificate or key cannot be used.
    #[error(
        "cannot use {path} for TLS: {reason}; check server.tls_cert and server.tls_key (PEM files)"
    )]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// Puts the shared store behind `local`. An unreachable Redis does not
/// stop the start (it is said on stderr, and the proxy serves from the
/// local store until Redis answers); refused credentials do.
async fn start_remote(
    config: &crate::config::RemoteConfig,
    local: Arc<dyn Tier>,
    history: usize,
) -> Result<Arc<Tiered>, StartError> {
    let remote = Remote::new(config).map_err(|source| StartError::Remote { source })?;
    match remote.ping().await {
        Ok(()) => {
            tracing::info!(remote = remote.url(), prefix = %config.prefix, access = config.access.as_str(), "shared store reachable");
            if let Some(policy) = remote.eviction_policy().await {
                tracing::warn!(remote = remote.url(), policy, "the shared store may evict recordings (maxmemory-policy); set maxmemory-policy noeviction, or a memory limit that holds every recording");
            }
        }
        Err(source) if source.is_auth() => return Err(StartError::Remote { source }),
        Err(error) => {
            tracing::warn!(remote = remote.url(), %error, on_unavailable = config.on_unavailable.as_str(), "shared store unreachable at start; serving from the local store, and pushing what is recorded once it answers");
        }
    }
    Ok(Tiered::start(local, Arc::new(remote), history))
}

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    proxy: Proxy,
    local_addr: SocketAddr,
    config: Config,
    tls: Option<TlsAcceptor>,
    /// `server.max_connections`, fitted under the open-file limit.
    max_connections: usize,
}

impl Server {
    /// Opens the store, builds the proxy and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let tls = match &config.server.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let recordings: Arc<dyn Tier> = match &config.store.fixtures {
            Some(dir) => {
                // A serve that records makes its folder, as it makes a
                // store; one that only replays needs fixtures to exist.
                if matches!(config.mode, Mode::Auto | Mode::Record) && !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|source| FixtureError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                }
                Arc::new(FixtureDir::load(dir)?)
            }
            None => Arc::new(SledStore::open(&config.store.path)?),
        };
        let proxy = match &config.remote {
            None => Proxy::new(&config, recordings)?,
            Some(remote) => {
                let tiered = start_remote(remote, recordings, config.store.history).await?;
                Proxy::with_remote(&config, tiered)?
            }
        };
        let max_connections = admission::fit_to_file_limit(config.server.max_connections);
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another process uses that port: stop it, or pass --listen with another port (port 0 picks a free one)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: pick a port above 1024"
                }
                _ => "check server.listen / --listen",
            };
            StartError::Bind { addr, source, hint }
        })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr,
            source,
            hint: "check server.listen / --listen",
        })?;
        Ok(Server {
            listener,
            proxy,
            local_addr,
            config,
            tls,
            max_connections,
        })
    }

    /// The proxy this server runs (to open its command endpoint).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The line printed once the server is ready.
    pub fn ready_line(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let source = match &self.config.store.fixtures {
            Some(dir) => format!("fixtures={}", dir.display()),
            None => format!("store={}", self.config.store.path.display()),
        };
        format!(
            "llmtape listening on {scheme}://{} (mode={}, upstream={}, {source})",
            self.local_addr,
            self.config.mode,
            self.config.upstream.url.to_string().trim_end_matches('/'),
        )
    }

    /// Serves until `shutdown` completes, then drains and flushes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let server = &self.config.server;
        let metrics = self.proxy.shared.metrics.clone();
        let admission = Admission::new(self.max_connections, metrics.clone());
        let (http1, http2) = http_builders(&self.config);
        let shared = Arc::new(connection::Shared {
            proxy: self.proxy.clone(),
            metrics: metrics.clone(),
            http1,
            http2,
            bounds: Bounds {
                header: server.header_read_timeout,
                idle: server.idle_timeout,
            },
            body_read_timeout: server.body_read_timeout,
            head_timeout_answer: raw_answer(
                &ProxyError::HeaderReadTimeout {
                    timeout: server.header_read_timeout,
                },
                &[],
            ),
        });
        // Plain HTTP only: a TLS client cannot read it before a handshake.
        let refusal = raw_answer(
            &ProxyError::TooManyConnections {
                limit: admission.max(),
            },
            &[("retry-after", "1")],
        );
        let (closing, closing_seen) = watch::channel(false);
        let mut backoff = AcceptBackoff::default();
        let mut accept_failures = Throttle::new(admission::LOG_EVERY);
        let mut refusals = Throttle::new(admission::LOG_EVERY);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff.succeeded();
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors above all: the connection
                    // stays in the backlog and `accept` fails again at once,
                    // so pause (without ever spinning) and log once a second.
                    metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                    let pause = backoff.failed();
                    if let Some(left_out) = accept_failures.note(Instant::now()) {
                        tracing::warn!(%error, left_out, pause_ms = pause.as_millis() as u64, "accept failed; pausing before the next");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            let Some(admitted) = admission.admit(peer.ip()) else {
                // Refused at once, not left in the backlog where every
                // client behind it would wait too.
                metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                if let Some(left_out) = refusals.note(Instant::now()) {
                    tracing::warn!(%peer, limit = admission.max(), left_out, "refused a connection: server.max_connections are open");
                }
                if self.tls.is_none() {
                    // One non-blocking write into an empty socket buffer;
                    // a client that reads nothing gets the close alone.
                    let _ = stream.try_write(&refusal);
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let closing = closing_seen.clone();
            match &self.tls {
                None => {
                    tokio::spawn(async move {
                        connection::serve(shared, stream, peer, false, closing).await;
                        drop(admitted);
                    });
                }
                Some(acceptor) => {
                    // The handshake runs in the connection's task so a
                    // slow client cannot stall the accept loop.
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let stream = match tokio::time::timeout(
                            TLS_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        connection::serve(shared, stream, peer, h2, closing).await;
                        drop(admitted);
                    });
                }
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: waiting for in-flight requests");
        let _ = closing.send(true);
        let deadline = self.config.server.shutdown_timeout;
        if tokio::time::timeout(deadline, admission.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = %humantime::format_duration(deadline),
                "in-flight requests did not finish before server.shutdown_timeout; closing them"
            );
        }
        match self.proxy.tier().flush() {
            Ok(()) => tracing::info!("store flushed"),
            Err(error) => tracing::error!(%error, "store flush failed"),
        }
    }
}

/// hyper's side of a connection: HTTP/1.1 and HTTP/2, with the bounds
/// hyper enforces itself. The client timeouts are the watchdog's
/// (`serve::watchdog`): hyper's own HTTP/1 header timeout stays off, as it
/// writes no 408 and cannot tell a slow head from a kept-alive wait.
fn http_builders(config: &Config) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    // Bound the request head: a larger one is refused by hyper (431).
    h1.max_buf_size(config.server.max_header_bytes)
        .header_read_timeout(None);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.max_header_list_size(u32::try_from(config.server.max_header_bytes).unwrap_or(u32::MAX))
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    (h1, h2)
}

/// Builds the TLS acceptor from PEM files (HTTP/2 and HTTP/1.1 by ALPN).
fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls_error = |path: &std::path::Path, reason: String| StartError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_error(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(&files.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error(&files.key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(&files.cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls_error(&files.key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Installs SIGINT and SIGTERM handlers now and returns a future that
/// resolves when either arrives.
///
/// Installing eagerly matters: a signal that arrives after the ready line
/// but before a lazily created handler exists would kill the process with
/// the default action instead of shutting down gracefully.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
