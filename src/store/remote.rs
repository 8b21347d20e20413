//! The shared tier: recordings in Redis, for several proxies at once.
//!
//! Owns the Redis side only: the key layout, the connection (the `redis`
//! crate's tokio connection manager, which reconnects by itself), the
//! per-command timeout, the breaker, and the checks a value passes before
//! it counts as a recording. How the two tiers combine (local first, copy
//! on a remote hit, pushes after a local commit) is `store::tiered`.
//!
//! Layout: one Redis key per recording, `{PREFIX:KEYHEX}`, whose value is
//! the [`Recording`] encoding (the same bytes the sled store keeps, with
//! their blake3 checksum). The braces are a Cluster hash tag: any other key
//! about one recording (`{PREFIX:KEYHEX}:lease`) lands on the same slot, so
//! no command ever spans slots (CROSSSLOT). The prefix separates teams.
//!
//! A value is only served when it decodes (magic, checksum, metadata) and
//! names the key it is stored under; anything else is a miss, counted in
//! [`RemoteStats::bad_values`], never a wrong replay.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::config::{Access, RemoteConfig};
use crate::key::RequestKey;
use crate::record::recording::Recording;

/// Consecutive failed commands that open the breaker: one lost packet is
/// not an outage, three in a row are.
const BREAKER_THRESHOLD: usize = 3;
/// How long an open breaker refuses commands before letting one probe
/// through: short enough that a restarted Redis is used again within a
/// second or two, long enough that an outage costs nothing per request.
const BREAKER_COOLDOWN: Duration = Duration::from_millis(500);
/// Keys asked for per `SCAN` round (`ls --remote`, `pull`).
const SCAN_BATCH: usize = 500;

/// Why a Redis command gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The breaker is open: Redis failed repeatedly and is not asked.
    #[error("the shared store {url} is unavailable (after repeated failures; retrying in the background)")]
    Open {
        /// The URL without its password.
        url: String,
    },
    /// The command did not finish within `remote.timeout`.
    #[error("the shared store {url} did not answer within {timeout:?} (remote.timeout)")]
    Timeout {
        /// The URL without its password.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// Redis answered with an error, or the connection failed.
    #[error("the shared store {url}: {source}")]
    Redis {
        /// The URL without its password.
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// This proxy is configured `access = "read-only"`.
    #[error("the shared store is read-only for this proxy (remote.access = \"read-only\")")]
    ReadOnly,
}

impl RemoteError {
    /// Redis refused our credentials: a configuration mistake, not an
    /// outage.
    pub fn is_auth(&self) -> bool {
        match self {
            RemoteError::Redis { source, .. } => {
                source.kind() == redis::ErrorKind::AuthenticationFailed
                    || source
                        .code()
                        .is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
                    || source.to_string().contains("WRONGPASS")
                    || source.to_string().contains("NOAUTH")
            }
            _ => false,
        }
    }
}

/// Counters for health and metrics.
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// Local misses answered from Redis.
    pub hits: AtomicU64,
    /// Local misses Redis did not hold either.
    pub misses: AtomicU64,
    /// Recordings written to Redis.
    pub writes: AtomicU64,
    /// Commands that failed or timed out (breaker refusals not counted).
    pub errors: AtomicU64,
    /// Values that were not a recording of the key asked for.
    pub bad_values: AtomicU64,
    /// Local copies replaced by a newer recording another proxy wrote
    /// (`store::remote_changes`).
    pub replaced: AtomicU64,
}

/// Open or closed, counted in consecutive failures.
#[derive(Debug, Default)]
struct Breaker {
    failures: AtomicUsize,
    /// When the breaker last opened, or let a probe through.
    opened: Mutex<Option<Instant>>,
}

impl Breaker {
    /// Whether a command may go to Redis now: always while closed; while
    /// open, one probe per cooldown.
    fn admit(&self) -> bool {
        if self.failures.load(Ordering::Relaxed) < BREAKER_THRESHOLD {
            return true;
        }
        let mut opened = crate::sync::lock(&self.opened);
        match *opened {
            Some(at) if at.elapsed() < BREAKER_COOLDOWN => false,
            _ => {
                *opened = Some(Instant::now());
                true
            }
        }
    }

    fn success(&self) {
        if self.failures.swap(0, Ordering::Relaxed) >= BREAKER_THRESHOLD {
            tracing::info!("shared store reachable again; breaker closed");
        }
        *crate::sync::lock(&self.opened) = None;
    }

    fn failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures == BREAKER_THRESHOLD {
            *crate::sync::lock(&self.opened) = Some(Instant::now());
            tracing::warn!(
                failures,
                "shared store failing; breaker open, serving from the local store"
            );
        }
    }

    fn is_open(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= BREAKER_THRESHOLD
    }
}

/// The Redis tier. Cheap to share behind an `Arc`; commands run
/// concurrently on one multiplexed connection.
pub struct Remote {
    /// Replaced after a failed command: a connection whose replies timed
    /// out (a stopped Redis) is not always reconnected by the manager.
    connection: Mutex<ConnectionManager>,
    manager_config: ConnectionManagerConfig,
    client: redis::Client,
    config: RemoteConfig,
    url: String,
    breaker: Breaker,
    /// Whether the last command reached Redis (for health).
    reachable: std::sync::atomic::AtomicBool,
    /// Counters.
    pub stats: RemoteStats,
}

impl Remote {
    /// A Redis tier for `config`. Connects lazily: an unreachable Redis is
    /// found by the first command (see [`Remote::ping`]), not here.
    pub fn new(config: &RemoteConfig) -> Result<Remote, RemoteError> {
        let url = config.display_url();
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| RemoteError::Redis {
                url: url.clone(),
                source,
            })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            // Reconnects are cheap on loopback or a LAN; the breaker, not
            // the manager's backoff, decides when to give up for a while.
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                .map_err(|source| RemoteError::Redis {
                    url: url.clone(),
                    source,
                })?;
        Ok(Remote {
            connection: Mutex::new(connection),
            manager_config,
            client,
            config: config.clone(),
            url,
            breaker: Breaker::default(),
            reachable: std::sync::atomic::AtomicBool::new(false),
            stats: RemoteStats::default(),
        })
    }

    /// The configuration this tier runs with.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this proxy writes to Redis.
    pub fn writable(&self) -> bool {
        self.config.access == Access::ReadWrite
    }

    /// `"up"` when the last command reached Redis and the breaker is
    /// closed, else `"down"` (health's `remote` field).
    pub fn state(&self) -> &'static str {
        if self.reachable.load(Ordering::Relaxed) && !self.breaker.is_open() {
            "up"
        } else {
            "down"
        }
    }

    /// Whether the breaker is open (for metrics).
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The Redis key of `key`'s recording.
    pub fn record_key(&self, key: &RequestKey) -> String {
        record_key(&self.config.prefix, key)
    }

    /// The connection to send a command on (a cheap handle).
    fn connection(&self) -> ConnectionManager {
        crate::sync::lock(&self.connection).clone()
    }

    /// Starts over with a fresh (lazy) connection.
    fn reconnect(&self) {
        match ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.manager_config.clone(),
        ) {
            Ok(fresh) => *crate::sync::lock(&self.connection) = fresh,
            Err(error) => tracing::debug!(%error, "shared store connection not renewed"),
        }
    }

    /// Runs one command under the timeout and the breaker.
    async fn run<T, F>(&self, command: F) -> Result<T, RemoteError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.admit() {
            return Err(RemoteError::Open {
                url: self.url.clone(),
            });
        }
        let result = match tokio::time::timeout(self.config.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(RemoteError::Redis {
                url: self.url.clone(),
                source,
            }),
            Err(_) => Err(RemoteError::Timeout {
                url: self.url.clone(),
                timeout: self.config.timeout,
            }),
        };
        match &result {
            Ok(_) => {
                self.reachable.store(true, Ordering::Relaxed);
                self.breaker.success();
            }
            Err(error) => {
                self.reachable.store(false, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                // Credentials refused is a configuration error, but it
                // also means nothing will work: count it like an outage.
                self.breaker.failure();
                if matches!(error, RemoteError::Timeout { .. })
                    || matches!(error, RemoteError::Redis { source, .. } if source.is_io_error() || source.is_timeout())
                {
                    self.reconnect();
                }
                tracing::debug!(%error, "shared store command failed");
            }
        }
        result
    }

    /// Asks Redis for a `PONG`.
    pub async fn ping(&self) -> Result<(), RemoteError> {
        let mut connection = self.connection();
        self.run(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }

    /// `maxmemory-policy` when Redis would evict keys (anything but
    /// `noeviction` with a memory limit set), else `None`. `CONFIG` may be
    /// refused (managed Redis): then nothing is known and nothing said.
    pub async fn eviction_policy(&self) -> Option<String> {
        let mut connection = self.connection();
        let answer: Vec<String> = self
            .run(async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory*")
                    .query_async(&mut connection)
                    .await
            })
            .await
            .ok()?;
        let value = |name: &str| {
            answer
                .chunks(2)
                .find(|pair| pair.first().map(String::as_str) == Some(name))
                .and_then(|pair| pair.get(1).cloned())
        };
        let policy = value("maxmemory-policy")?;
        let limited = value("maxmemory").is_some_and(|limit| limit != "0");
        (limited && policy != "noeviction").then_some(policy)
    }

    /// The recording for `key`, checked: `Ok(None)` when Redis has none or
    /// holds a value that is not a recording of `key` (counted and logged,
    /// never served).
    pub async fn get(&self, key: &RequestKey) -> Result<Option<Recording>, RemoteError> {
        let found = self.read(key).await?;
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }

    /// [`Remote::get`] without counting a hit or a miss (a refresh of a
    /// local copy is neither).
    pub async fn read(&self, key: &RequestKey) -> Result<Option<Recording>, RemoteError> {
        let mut connection = self.connection();
        let name = self.record_key(key);
        let raw: Option<Vec<u8>> = self.run(async move { connection.get(name).await }).await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        match check(key, Bytes::from(raw)) {
            Ok(recording) => Ok(Some(recording)),
            Err(why) => {
                self.stats.bad_values.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %key, why, "value in the shared store is not a recording of this key; treated as a miss");
                Ok(None)
            }
        }
    }

    /// Writes `recording` as the current one for its key, replacing any,
    /// and tells the other proxies (`store::remote_changes`): the key goes
    /// into the change list first (so a failed write leaves at most an
    /// entry that points at an older recording, which a reader ignores),
    /// then the value, then the announcement. Three commands, not one
    /// script: the change list and the recording sit on different Cluster
    /// slots.
    pub async fn put(&self, recording: &Recording) -> Result<(), RemoteError> {
        if !self.writable() {
            return Err(RemoteError::ReadOnly);
        }
        let key = recording.key();
        let at = recorded_ms(recording);
        let mut connection = self.connection();
        let changes = self.changes_key();
        let hex = key.to_hex();
        self.run(async move { connection.zadd::<_, _, _, ()>(changes, hex, at).await })
            .await?;
        let mut connection = self.connection();
        let name = self.record_key(&key);
        let value = recording.encode();
        self.run(async move { connection.set::<_, _, ()>(name, value).await })
            .await?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let mut connection = self.connection();
        let channel = self.changes_channel();
        let message = format!("{} {at}", key.to_hex());
        // Written either way: a proxy that misses the announcement catches
        // up from the change list when it next (re)subscribes.
        let _ = self
            .run(async move { connection.publish::<_, _, ()>(channel, message).await })
            .await;
        Ok(())
    }

    /// `{PREFIX}:changes`: a sorted set of every key written, scored by
    /// the time of the recording written (ms since the epoch). Outside the
    /// `{PREFIX:*}` pattern, so never taken for a recording.
    pub fn changes_key(&self) -> String {
        format!("{{{}}}:changes", self.config.prefix)
    }

    /// `{PREFIX}:changed`: where each write is announced as `KEYHEX MS`.
    pub fn changes_channel(&self) -> String {
        format!("{{{}}}:changed", self.config.prefix)
    }

    /// The change list from index `from`, at most `count` entries: each
    /// key with the time of its recording in Redis (ms).
    pub async fn changes(
        &self,
        from: usize,
        count: usize,
    ) -> Result<Vec<(RequestKey, u64)>, RemoteError> {
        let mut connection = self.connection();
        let name = self.changes_key();
        let stop = (from + count).saturating_sub(1) as isize;
        let rows: Vec<(String, f64)> = self
            .run(async move {
                connection
                    .zrange_withscores(name, from as isize, stop)
                    .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(hex, at)| Some((RequestKey::from_hex(&hex)?, at as u64)))
            .collect())
    }

    /// Writes `recording` unless Redis holds a newer recording of its key
    /// (pushes after an outage, `push`): returns whether it was written.
    pub async fn put_unless_newer(&self, recording: &Recording) -> Result<bool, RemoteError> {
        if !self.writable() {
            return Err(RemoteError::ReadOnly);
        }
        if let Some(there) = self.get(&recording.key()).await? {
            // RFC 3339 UTC with milliseconds: text order is time order.
            if there.meta.recorded_at >= recording.meta.recorded_at {
                return Ok(false);
            }
        }
        self.put(recording).await?;
        Ok(true)
    }

    /// Every recording key under this prefix (`ls --remote`, `pull`). Each
    /// `SCAN` round is one command under the timeout.
    pub async fn keys(&self) -> Result<Vec<RequestKey>, RemoteError> {
        let pattern = format!("{{{}:*}}", self.config.prefix);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let mut connection = self.connection();
            let pattern = pattern.clone();
            let (next, batch): (u64, Vec<String>) = self
                .run(async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query_async(&mut connection)
                        .await
                })
                .await?;
            keys.extend(
                batch
                    .iter()
                    .filter_map(|name| parse_record_key(&self.config.prefix, name)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// `SET name value NX PX ttl`: whether it was set.
    pub async fn set_nx_px(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, RemoteError> {
        let mut connection = self.connection();
        let set: Option<String> = self
            .run(async move {
                redis::cmd("SET")
                    .arg(name)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Whether `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, RemoteError> {
        let mut connection = self.connection();
        self.run(async move { connection.exists(name).await }).await
    }

    /// The channel a recording of `key` is announced on.
    pub fn channel(&self, key: &RequestKey) -> String {
        format!("{}:recorded", self.record_key(key))
    }

    /// Announces that `key` is recorded (waiting proxies re-check).
    pub async fn announce(&self, key: &RequestKey) -> Result<(), RemoteError> {
        let mut connection = self.connection();
        let channel = self.channel(key);
        self.run(async move { connection.publish::<_, _, ()>(channel, key.to_hex()).await })
            .await
    }

    /// `EVAL script 1 name args...` (the lease's compare-and-set scripts).
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        script: &str,
        name: &str,
        args: &[&[u8]],
    ) -> Result<T, RemoteError> {
        let mut connection = self.connection();
        let mut command = redis::cmd("EVAL");
        command.arg(script).arg(1).arg(name);
        for arg in args {
            command.arg(*arg);
        }
        self.run(async move { command.query_async(&mut connection).await })
            .await
    }

    /// A connection of its own, for commands that hold one (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}

/// When `recording` was made, in ms since the epoch (0 if its time does
/// not parse: then any other recording counts as newer).
pub fn recorded_ms(recording: &Recording) -> u64 {
    rfc3339_ms(&recording.meta.recorded_at)
}

/// An RFC 3339 time in ms since the epoch, 0 if it does not parse.
pub fn rfc3339_ms(at: &str) -> u64 {
    humantime::parse_rfc3339_weak(at)
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// `{PREFIX:KEYHEX}`: the braces are the Cluster hash tag.
pub fn record_key(prefix: &str, key: &RequestKey) -> String {
    format!("{{{prefix}:{}}}", key.to_hex())
}

/// The request key in a recording's Redis key, if `name` is one under
/// `prefix` (and not a lease or another key about it).
pub fn parse_record_key(prefix: &str, name: &str) -> Option<RequestKey> {
    let hex = name
        .strip_prefix('{')?
        .strip_prefix(prefix)?
        .strip_prefix(':')?
        .strip_suffix('}')?;
    RequestKey::from_hex(hex)
}

/// Decodes a value and checks it is a recording of `key`.
fn check(key: &RequestKey, raw: Bytes) -> Result<Recording, String> {
    let recording = Recording::decode(raw).map_err(|e| e.to_string())?;
    if recording.key() != *key {
        return Err(format!(
            "it is the recording of key {}",
            recording.key().to_hex()
        ));
    }
    Ok(recording)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;

    #[test]
    fn keys_carry_a_hash_tag_and_parse_back() {
        let key = RequestKey::from_bytes([0xab; 32]);
        let name = record_key("team-a", &key);
        assert_eq!(name, format!("{{team-a:{}}}", "ab".repeat(32)));
        assert_eq!(parse_record_key("team-a", &name), Some(key));
        assert_eq!(parse_record_key("team-b", &name), None, "another team's");
        assert_eq!(parse_record_key("team-a", &format!("{name}:lease")), None);
    }

    #[test]
    fn only_a_sound_recording_of_the_key_asked_for_passes() {
        let hex = "cd".repeat(32);
        let key = RequestKey::from_hex(&hex).unwrap();
        let at = "2026-11-22T00:00:00.000Z";
        let recording = test_entry(&hex, &b"{}"[..], "fp", Some("m"), at);
        let raw = recording.encode();
        assert!(check(&key, Bytes::from(raw.clone())).is_ok());
        let other = RequestKey::from_bytes([1; 32]);
        assert!(
            check(&other, Bytes::from(raw.clone())).is_err(),
            "wrong key"
        );
        let mut flipped = raw.clone();
        flipped[20] ^= 1;
        assert!(check(&key, Bytes::from(flipped)).is_err(), "corrupt");
        assert!(check(&key, Bytes::from_static(b"hello")).is_err(), "junk");
    }

    #[test]
    fn recording_times_are_milliseconds_and_a_bad_time_is_the_oldest() {
        let hex = "cd".repeat(32);
        let at = |t: &str| recorded_ms(&test_entry(&hex, &b"{}"[..], "fp", None, t));
        assert_eq!(at("1970-01-01T00:00:01.250Z"), 1250);
        assert!(at("2026-11-22T00:00:00.001Z") > at("2026-11-22T00:00:00.000Z"));
        assert_eq!(at("yesterday"), 0);
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_closes_on_success() {
        let breaker = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD {
            assert!(breaker.admit());
            breaker.failure();
        }
        assert!(breaker.is_open());
        // The first admit after opening is within the cooldown.
        assert!(!breaker.admit());
        breaker.success();
        assert!(!breaker.is_open());
        assert!(breaker.admit());
    }
}
