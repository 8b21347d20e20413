//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 with
//! hyper-util's auto builder, and shuts down gracefully.
//!
//! Start-up opens the store and binds the socket before reporting ready,
//! so every start problem (store held, port in use) surfaces as a
//! [`StartError`] before the ready line. Shutdown stops accepting, lets
//! in-flight requests finish within `server.shutdown_timeout`, then
//! flushes the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::config::{Config, TlsFiles};
use crate::serve::admin;
use crate::serve::proxy::Proxy;
use crate::serve::upstream::UpstreamSetupError;
use crate::store::fixtures::FixtureError;
use crate::store::{FixtureDir, Tier};
use crate::store::{SledStore, StoreError};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client gets this long to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed `accept` (e.g. out of file descriptors), wait this long
/// before trying again rather than spinning on the error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

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

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    proxy: Proxy,
    local_addr: SocketAddr,
    config: Config,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Opens the store, builds the proxy and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let tls = match &config.server.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let recordings: Arc<dyn Tier> = match &config.store.fixtures {
            Some(dir) => Arc::new(FixtureDir::load(dir)?),
            None => Arc::new(SledStore::open(&config.store.path)?),
        };
        let proxy = Proxy::new(&config, recordings)?;
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
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Bound the request head: a larger one is refused by hyper (431).
        builder
            .http1()
            .max_buf_size(self.config.server.max_header_bytes);
        builder.http2().max_header_list_size(
            u32::try_from(self.config.server.max_header_bytes).unwrap_or(u32::MAX),
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        // The admin endpoints need to know who is asking.
                        let service = TowerToHyperService::new(self.proxy.clone().map_request(
                            move |mut request: http::Request<hyper::body::Incoming>| {
                                admin::tag_peer(&mut request, peer);
                                request
                            },
                        ));
                        match &self.tls {
                            None => {
                                let connection = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .into_owned();
                                let connection = graceful.watch(connection);
                                tokio::spawn(async move {
                                    if let Err(error) = connection.await {
                                        tracing::debug!(%error, "connection ended with an error");
                                    }
                                });
                            }
                            Some(acceptor) => {
                                // The handshake runs in the connection's task so
                                // a slow client cannot stall the accept loop.
                                let acceptor = acceptor.clone();
                                let builder = builder.clone();
                                let watcher = graceful.watcher();
                                tokio::spawn(async move {
                                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
                                    let connection = builder
                                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                        .into_owned();
                                    if let Err(error) = watcher.watch(connection).await {
                                        tracing::debug!(%error, "connection ended with an error");
                                    }
                                });
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: waiting for in-flight requests");
        let deadline = self.config.server.shutdown_timeout;
        if tokio::time::timeout(deadline, graceful.shutdown())
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
