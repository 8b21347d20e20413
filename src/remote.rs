//! Talking to a running `llmtape serve` from the command line: the
//! `serve.json` it publishes in its store directory (admin address and a
//! per-start token, readable only by its user), and the client of its
//! command endpoint (`crate::serve::admin_commands`).
//!
//! `serve` holds its store's lock for as long as it runs and publishes
//! the file while it holds it, so a command that finds the store locked
//! reads the file and has the server run the command; a command that opens
//! the store itself and still finds the file knows the file is stale. What
//! a command is, and how its output reaches the terminal, is the
//! dispatcher's ([`crate::app`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::serve::admin::{Reply, ADMIN_PREFIX, COMMAND_PATH, HEARTBEAT};

/// The file's name in the store directory.
pub const SERVE_FILE: &str = "serve.json";

/// The `llmtape_serve` field: the file's format version.
pub const SERVE_FILE_VERSION: u32 = 1;

/// Random bytes in a token (hex-encoded in the file): 256 bits.
const TOKEN_BYTES: usize = 32;

/// A server on this machine accepts at once or not at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The server answers a command's headers before running it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A running command's answer carries a blank line every [`HEARTBEAT`];
/// this long without a byte means the server is gone or stuck.
const IDLE_TIMEOUT: Duration = Duration::from_secs(HEARTBEAT.as_secs() * 15);

/// The largest answer read: the output of `ls` on a very large store.
const MAX_REPLY_BYTES: usize = 1 << 30;

/// What `serve` publishes while it runs: where its admin endpoints are and
/// the token its command endpoint wants.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// [`SERVE_FILE_VERSION`].
    pub llmtape_serve: u32,
    /// The serving process.
    pub pid: u32,
    /// The admin endpoints' base URL, e.g. `http://127.0.0.1:8080/_llmtape/`.
    pub admin: String,
    /// 64 hex characters, new at every start.
    pub token: String,
}

impl fmt::Debug for ServeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeFile")
            .field("pid", &self.pid)
            .field("admin", &self.admin)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Why a command could not go through a running `serve`, or a `serve`
/// could not publish its file. Each is exit code 2: the user must act.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not one `serve` wrote.
    #[error("{p} is not a serve.json llmtape wrote ({reason}); delete {p} and run the command again", p = .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `serve` could not write its file.
    #[error("cannot write {} (for commands while serving): {source}; check the store directory's permissions", .path.display())]
    Publish {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store is locked, but the server the file names does not answer:
    /// the file is stale and something else holds the store.
    #[error("{p} is stale: no llmtape serve answers at {admin} (pid {pid}, stopped with kill -9?), and another process holds the store; stop that process, or delete {p} if no llmtape serve runs on this store", p = .path.display())]
    NoAnswer {
        /// The file.
        path: PathBuf,
        /// The address it names.
        admin: String,
        /// The process it names.
        pid: u32,
    },
    /// The store is not locked, so no `serve` runs on it: the file was
    /// left by one that did not stop cleanly.
    #[error("{p} is stale: the llmtape serve that wrote it (pid {pid}, {admin}) is gone without removing it (stopped with kill -9?); delete {p} and run the command again", p = .path.display())]
    Stale {
        /// The file.
        path: PathBuf,
        /// The address it names.
        admin: String,
        /// The process it names.
        pid: u32,
    },
    /// A server answers, but not to this token.
    #[error("the llmtape serve at {admin} refused the token in {p}: the file is not that server's; restart the serve that holds the store, or delete {p}", p = .path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// The address it names.
        admin: String,
    },
    /// The connection broke, or went silent, before the answer was whole.
    #[error("the llmtape serve at {admin} stopped answering before the command finished ({reason}); the store stays whole: check with `llmtape ls`, then run the command again")]
    Broken {
        /// The address.
        admin: String,
        /// What happened.
        reason: String,
    },
    /// The server answered something other than a command's reply.
    #[error("the llmtape serve at {admin} cannot run this command (HTTP {status}: {detail}); is it another llmtape version? stop it and run the command again")]
    Unexpected {
        /// The address.
        admin: String,
        /// The HTTP status.
        status: u16,
        /// The answer's error message, or what was wrong with it.
        detail: String,
    },
    /// Commands do not speak TLS to the server yet.
    #[error("the llmtape serve at {admin} serves TLS, which commands cannot go through yet; stop it and run the command again")]
    Tls {
        /// The address.
        admin: String,
    },
}

impl ServeFile {
    /// The file for a server bound to `addr` (an unspecified address, such
    /// as 0.0.0.0, is reached through loopback), with a new random token.
    pub fn new(addr: SocketAddr, tls: bool) -> io::Result<ServeFile> {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if tls { "https" } else { "http" };
        Ok(ServeFile {
            llmtape_serve: SERVE_FILE_VERSION,
            pid: std::process::id(),
            admin: format!(
                "{scheme}://{}{ADMIN_PREFIX}",
                SocketAddr::new(ip, addr.port())
            ),
            token: new_token()?,
        })
    }

    /// Where the file of the store at `store` lives.
    pub fn path(store: &Path) -> PathBuf {
        store.join(SERVE_FILE)
    }

    /// Reads the file's text; the reason it is not a serve file, if not.
    pub fn parse(text: &str) -> Result<ServeFile, String> {
        let file: ServeFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.llmtape_serve != SERVE_FILE_VERSION {
            return Err(format!(
                "format {} where {SERVE_FILE_VERSION} is known",
                file.llmtape_serve
            ));
        }
        if file.token.len() != 2 * TOKEN_BYTES || !file.token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("the token is not 64 hex characters".into());
        }
        file.host()?;
        Ok(file)
    }

    /// The file of the store at `store`, if there is one.
    pub fn read(store: &Path) -> Result<Option<ServeFile>, RemoteError> {
        let path = ServeFile::path(store);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RemoteError::Unreadable { path, source }),
        };
        ServeFile::parse(&text)
            .map(Some)
            .map_err(|reason| RemoteError::Malformed { path, reason })
    }

    /// Writes the file into `store`, readable by this user only, whole or
    /// not at all (a temporary file renamed into place); it is removed
    /// when the returned guard drops.
    pub fn publish(&self, store: &Path) -> Result<Published, RemoteError> {
        let path = ServeFile::path(store);
        let temporary = store.join(format!(".{SERVE_FILE}.{}.tmp", self.pid));
        let failed = |source| RemoteError::Publish {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).expect("a serve file always serialises");
        write_private(&temporary, format!("{text}\n").as_bytes()).map_err(failed)?;
        if let Err(error) = std::fs::rename(&temporary, &path) {
            let _ = std::fs::remove_file(&temporary);
            return Err(failed(error));
        }
        Ok(Published { path })
    }

    /// `host:port` and whether it is TLS, from [`ServeFile::admin`].
    fn host(&self) -> Result<(String, bool), String> {
        let uri: http::Uri = self
            .admin
            .parse()
            .map_err(|_| format!("admin {:?} is not a URL", self.admin))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("admin {:?} is not an http(s) URL", self.admin)),
        };
        match uri.authority() {
            Some(authority) if authority.port_u16().is_some() => {
                Ok((authority.as_str().to_string(), tls))
            }
            _ => Err(format!("admin {:?} has no host:port", self.admin)),
        }
    }

    /// Sends a command (the JSON the runner reads) and waits for its reply.
    /// A server that does not accept the connection is
    /// [`RemoteError::NoAnswer`]; the caller decides whether the file is
    /// stale.
    pub async fn send(&self, path: &Path, command: Vec<u8>) -> Result<Reply, RemoteError> {
        let admin = self.admin.clone();
        let (host, tls) = self.host().map_err(|reason| RemoteError::Malformed {
            path: path.to_path_buf(),
            reason,
        })?;
        if tls {
            return Err(RemoteError::Tls { admin });
        }
        let no_answer = || RemoteError::NoAnswer {
            path: path.to_path_buf(),
            admin: admin.clone(),
            pid: self.pid,
        };
        let broken = |reason: String| RemoteError::Broken {
            admin: admin.clone(),
            reason,
        };
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&host),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) | Err(_) => return Err(no_answer()),
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|_| no_answer())?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "command connection ended with an error");
            }
        });
        let request = http::Request::post(COMMAND_PATH)
            .header(header::HOST, &host)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(command)))
            .expect("a command request is always valid");
        let response = match tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(request)).await
        {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(broken(error.to_string())),
            Err(_) => {
                return Err(broken(format!(
                    "no answer within {}",
                    humantime::format_duration(HEAD_TIMEOUT)
                )))
            }
        };
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(error))) => return Err(broken(error.to_string())),
                Err(_) => {
                    return Err(broken(format!(
                        "silent for {}",
                        humantime::format_duration(IDLE_TIMEOUT)
                    )))
                }
            };
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_REPLY_BYTES {
                    return Err(broken("the answer is larger than 1 GiB".into()));
                }
                bytes.extend_from_slice(&data);
            }
        }
        if status == http::StatusCode::UNAUTHORIZED {
            return Err(RemoteError::Refused {
                path: path.to_path_buf(),
                admin,
            });
        }
        let unexpected = |detail: String| RemoteError::Unexpected {
            admin: admin.clone(),
            status: status.as_u16(),
            detail,
        };
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(String::from))
                .unwrap_or_else(|| "no error message".into());
            return Err(unexpected(message));
        }
        // Heartbeats are blank lines before the reply; JSON skips them.
        serde_json::from_slice(&bytes).map_err(|error| {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                broken("the answer ended before the reply".into())
            } else {
                unexpected(format!("not a command reply: {error}"))
            }
        })
    }
}

/// The published file; dropping it removes the file.
#[derive(Debug)]
pub struct Published {
    path: PathBuf,
}

impl Published {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove serve.json")
            }
        }
    }
}

/// [`TOKEN_BYTES`] from the kernel's CSPRNG, as lowercase hex.
fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `path` afresh with mode 0600 (on Unix), writes `bytes` and
/// syncs them.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(admin: &str) -> ServeFile {
        ServeFile {
            llmtape_serve: SERVE_FILE_VERSION,
            pid: 7,
            admin: admin.into(),
            token: "ab".repeat(32),
        }
    }

    #[test]
    fn a_published_file_reads_back_is_private_and_goes_with_its_guard() {
        let dir = tempfile::tempdir().unwrap();
        let written = ServeFile::new("0.0.0.0:8080".parse().unwrap(), false).unwrap();
        assert_eq!(written.admin, "http://127.0.0.1:8080/_llmtape/");
        assert_eq!(written.token.len(), 64);
        assert_ne!(
            written.token,
            ServeFile::new("[::]:1".parse().unwrap(), false)
                .unwrap()
                .token,
            "a new token every time"
        );
        let guard = written.publish(dir.path()).unwrap();
        assert_eq!(guard.path(), dir.path().join("serve.json"));
        assert_eq!(ServeFile::read(dir.path()).unwrap(), Some(written.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(guard.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["serve.json"], "no temporary file left");
        drop(guard);
        assert_eq!(ServeFile::read(dir.path()).unwrap(), None);
        assert!(!format!("{written:?}").contains(&written.token));
    }

    #[test]
    fn only_a_well_formed_file_parses() {
        let good = serde_json::to_string(&file("http://[::1]:9/_llmtape/")).unwrap();
        assert_eq!(
            ServeFile::parse(&good).unwrap().host().unwrap(),
            ("[::1]:9".into(), false)
        );
        let tls = file("https://127.0.0.1:9/_llmtape/");
        assert_eq!(tls.host().unwrap(), ("127.0.0.1:9".into(), true));
        let reason =
            |f: ServeFile| ServeFile::parse(&serde_json::to_string(&f).unwrap()).unwrap_err();
        assert!(reason(file("127.0.0.1:9")).contains("not an http(s) URL"));
        assert!(reason(file("http://127.0.0.1/_llmtape/")).contains("no host:port"));
        let mut short = file("http://127.0.0.1:9/");
        short.token.pop();
        assert!(reason(short).contains("64 hex"));
        let mut future = file("http://127.0.0.1:9/");
        future.llmtape_serve = 2;
        assert!(reason(future).contains("format 2"));
        assert!(ServeFile::parse("{").is_err());
        assert!(ServeFile::parse(r#"{"llmtape_serve":1}"#)
            .unwrap_err()
            .contains("missing field"));
        let extra = good.replace('{', r#"{"more":1,"#);
        assert!(ServeFile::parse(&extra)
            .unwrap_err()
            .contains("unknown field"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.json"), "not json").unwrap();
        let error = ServeFile::read(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("is not a serve.json llmtape wrote"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[tokio::test]
    async fn nobody_listening_is_no_answer() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let f = file(&format!("http://{addr}/_llmtape/"));
        let error = f
            .send(Path::new("s/serve.json"), b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(
            matches!(error, RemoteError::NoAnswer { pid: 7, .. }),
            "{error}"
        );
        let tls = file(&format!("https://{addr}/_llmtape/"));
        let error = tls
            .send(Path::new("s/serve.json"), b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(error, RemoteError::Tls { .. }), "{error}");
    }
}
