//! llmtape in this process, on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use llmtape::config::Config;
use llmtape::serve::server::Server;

use super::WAIT;

/// A running in-process llmtape.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub store_dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    /// Starts llmtape in front of `upstream` with extra TOML (sections and
    /// keys other than listen, upstream.url and store.path).
    pub async fn start(upstream: &str, extra_toml: &str) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut proxy = TestProxy::start_with_store(upstream, extra_toml, &store).await;
        proxy._tempdir = Some(dir);
        proxy
    }

    pub async fn start_with_store(upstream: &str, extra_toml: &str, store: &Path) -> TestProxy {
        let mut config = Config::from_toml(extra_toml).expect("test config parses");
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.upstream.url = upstream.parse().unwrap();
        // One mock answers both dialects unless the test names its own
        // Anthropic upstream.
        if !extra_toml.contains("anthropic_url") {
            config.upstream.anthropic_url = config.upstream.url.clone();
        }
        config.store.path = store.to_path_buf();
        TestProxy::start_config(config, store).await
    }

    /// Serves from a fixtures folder (mode from `extra_toml`, else replay);
    /// the store path points at a directory that must never be created.
    pub async fn start_fixtures(upstream: &str, extra_toml: &str, fixtures: &Path) -> TestProxy {
        let toml = format!(
            "{extra_toml}\n[store]\nfixtures = {:?}\n",
            fixtures.display().to_string()
        );
        let mut config = Config::from_toml(&toml).expect("test config parses");
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.upstream.url = upstream.parse().unwrap();
        let store = fixtures.with_extension("no-store-here");
        config.store.path = store.clone();
        TestProxy::start_config(config, &store).await
    }

    async fn start_config(config: Config, store: &Path) -> TestProxy {
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            store_dir: store.to_path_buf(),
            _tempdir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server (drains, flushes) and returns the store directory.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .unwrap();
        }
    }
}
