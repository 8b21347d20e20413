//! The response log: every recording's replayable parts (status, headers,
//! recorded-at, stream event lengths, body), appended to one file beside the
//! sled store, so that a hit the hot cache does not hold costs one lookup
//! in memory (the store mirrors the pointers) and one positional read,
//! whatever the store's size.
//!
//! Why: sled keeps values inside its B-tree leaves (up to 16 entries a
//! leaf), so reading one recording that is not in sled's cache pulls and
//! decodes a whole leaf of them, and sled's memory grows with every leaf it
//! has touched. The log keeps large values out of sled: the store holds a
//! 12-byte [`LogPointer`] per key, written in the same transaction as the
//! entry, so a pointer always names the log record of the current entry.
//!
//! The log is derived data, private to the store and never the only copy:
//! a record that cannot be read or does not check out is reported as
//! [`ResponseLogError`], and the store falls back to the entry itself. Records are append-only; an append that
//! fails or is torn by a crash leaves garbage that no pointer names.
//!
//! Record: `MAGIC (4) | key (32) | payload_len u32 LE | payload |
//! crc32(key, payload) u32 LE`, payload:
//! `status u16 | recorded_at (u16 len) | header count u16 | (name u16 len,
//! value u16 len)* | event count u32 (u32::MAX: not a stream) |
//! (offset_ms u64, len u32)* | body`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::key::RequestKey;
use crate::record::recording::{split_events, Recording};

/// The log's file name inside the store directory. It keeps the name it
/// had when this was called the replay tape, so that existing stores keep
/// their log (a renamed file would only be rebuilt, but at a cost).
pub const RESPONSE_LOG_FILE: &str = "llmtape-replay.tape";

const MAGIC: &[u8; 4] = b"LTP1";
const RECORD_HEAD: usize = MAGIC.len() + 32 + 4;
/// A CRC-32 of the key and payload: the log is our own derived data, so
/// the checksum only has to catch torn and damaged records, not forgery,
/// and CRC-32 does that at a fraction of a cryptographic hash's cost (it
/// is computed on every hit the hot cache does not hold).
const CHECKSUM_LEN: usize = 4;

/// Where a record lives in the response log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPointer {
    /// Byte offset of the record.
    pub offset: u64,
    /// Length of the whole record.
    pub len: u32,
}

impl LogPointer {
    /// Stored form: offset u64 LE, len u32 LE.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Parses the stored form; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<LogPointer> {
        let bytes: &[u8; 12] = bytes.try_into().ok()?;
        Some(LogPointer {
            offset: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            len: u32::from_le_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// A recording as replay needs it: no request, no JSON. Header names and
/// values and the body are slices of one buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayable {
    /// HTTP status.
    pub status: u16,
    /// RFC 3339 time of recording.
    pub recorded_at: Bytes,
    /// Recorded response headers, in order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// A stream's events as (offset ms, length), or `None` for a plain body.
    pub events: Option<Vec<(u64, u32)>>,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl Replayable {
    /// The replayable parts of an entry; the body is shared, not copied
    /// (see [`Replayable::compact`]).
    pub fn from_entry(entry: &Recording) -> Replayable {
        Replayable {
            status: entry.meta.response.status,
            recorded_at: Bytes::copy_from_slice(entry.meta.recorded_at.as_bytes()),
            headers: entry
                .meta
                .response
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        Bytes::copy_from_slice(n.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
            events: entry.meta.stream.as_ref().map(|events| {
                events
                    .iter()
                    .map(|e| (e.offset_ms, u32::try_from(e.len).unwrap_or(u32::MAX)))
                    .collect()
            }),
            body: entry.body.clone(),
        }
    }

    /// The same with a body of its own: an entry decoded from the store
    /// slices its body out of the whole stored value, which a cached
    /// rendering should not keep alive.
    pub fn compact(mut self) -> Replayable {
        self.body = Bytes::copy_from_slice(&self.body);
        self
    }

    /// A stream's events as slices of the body, with their offsets.
    pub fn event_slices(&self) -> Option<Vec<(u64, Bytes)>> {
        let events = self.events.as_ref()?;
        Some(split_events(
            &self.body,
            events.iter().map(|&(offset, len)| (offset, len as usize)),
        ))
    }
}

/// Why a response log record could not be used. (The messages keep the
/// name users have seen in logs, "replay tape".)
#[derive(Debug, thiserror::Error)]
pub enum ResponseLogError {
    /// The read itself failed.
    #[error("cannot read the replay tape {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bytes are not the record the pointer promised.
    #[error("replay tape record at {offset} is damaged: {reason}")]
    Damaged {
        /// Where it was read.
        offset: u64,
        /// What did not check out.
        reason: &'static str,
    },
}

/// The open response log file.
#[derive(Debug)]
pub struct ResponseLog {
    file: File,
    /// Appends take this lock; reads take none.
    appending: Mutex<()>,
    /// Where the next record goes: the end of what has been written. Reads
    /// check pointers against it, so a damaged pointer cannot make a read
    /// allocate more than the log holds.
    end: AtomicU64,
    path: PathBuf,
}

impl ResponseLog {
    /// Opens (or creates) the log in the store directory `dir`.
    pub fn open(dir: &Path) -> io::Result<ResponseLog> {
        let path = dir.join(RESPONSE_LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let end = file.metadata()?.len();
        Ok(ResponseLog {
            file,
            appending: Mutex::new(()),
            end: AtomicU64::new(end),
            path,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the replayable parts of `entry` under `key`.
    pub fn append(&self, key: &RequestKey, entry: &Recording) -> io::Result<LogPointer> {
        let record = encode(key, entry)?;
        let len = u32::try_from(record.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
        let _appending = crate::sync::lock(&self.appending);
        let offset = self.end.load(Ordering::Acquire);
        write_all_at(&self.file, &record, offset)?;
        self.end.store(offset + u64::from(len), Ordering::Release);
        Ok(LogPointer { offset, len })
    }

    /// Reads the record at `pointer` and checks that it is whole and is
    /// `key`'s.
    pub fn read(
        &self,
        key: &RequestKey,
        pointer: LogPointer,
    ) -> Result<Replayable, ResponseLogError> {
        let damaged = |reason| ResponseLogError::Damaged {
            offset: pointer.offset,
            reason,
        };
        let len = pointer.len as usize;
        if len < RECORD_HEAD + CHECKSUM_LEN {
            return Err(damaged("shorter than a record"));
        }
        let within = pointer
            .offset
            .checked_add(u64::from(pointer.len))
            .is_some_and(|end| end <= self.end.load(Ordering::Acquire));
        if !within {
            return Err(damaged("past the end of the tape"));
        }
        let mut buf = BytesMut::zeroed(len);
        read_exact_at(&self.file, &mut buf, pointer.offset).map_err(|source| {
            match source.kind() {
                io::ErrorKind::UnexpectedEof => damaged("past the end of the tape"),
                _ => ResponseLogError::Io {
                    path: self.path.clone(),
                    source,
                },
            }
        })?;
        let buf = buf.freeze();
        if &buf[..MAGIC.len()] != MAGIC {
            return Err(damaged("no record marker"));
        }
        if &buf[MAGIC.len()..MAGIC.len() + 32] != key.as_bytes() {
            return Err(damaged("another key's record"));
        }
        let payload_len = u32::from_le_bytes(
            buf[MAGIC.len() + 32..RECORD_HEAD]
                .try_into()
                .expect("slice is exactly four bytes"),
        ) as usize;
        if RECORD_HEAD + payload_len + CHECKSUM_LEN != len {
            return Err(damaged("length does not match the pointer"));
        }
        let payload = buf.slice(RECORD_HEAD..RECORD_HEAD + payload_len);
        if checksum(key, &payload) != buf[RECORD_HEAD + payload_len..] {
            return Err(damaged("checksum mismatch"));
        }
        decode_payload(payload).ok_or_else(|| damaged("payload does not parse"))
    }
}

// Positional I/O: reads share the file without a lock or a seek position.
#[cfg(unix)]
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
pub(super) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
pub(super) fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
pub(super) fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

fn checksum(key: &RequestKey, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key.as_bytes());
    hasher.update(payload);
    hasher.finalize().to_le_bytes()
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} is too long for the replay tape"),
    )
}

fn encode(key: &RequestKey, entry: &Recording) -> io::Result<Vec<u8>> {
    let meta = &entry.meta;
    let mut payload = Vec::with_capacity(entry.body.len() + 512);
    let short = |bytes: &[u8], what: &str, out: &mut Vec<u8>| -> io::Result<()> {
        let len = u16::try_from(bytes.len()).map_err(|_| too_long(what))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    };
    payload.extend_from_slice(&meta.response.status.to_le_bytes());
    short(meta.recorded_at.as_bytes(), "recorded_at", &mut payload)?;
    let count = u16::try_from(meta.response.headers.len()).map_err(|_| too_long("headers"))?;
    payload.extend_from_slice(&count.to_le_bytes());
    for (name, value) in &meta.response.headers {
        short(name.as_bytes(), "a header name", &mut payload)?;
        short(value.as_bytes(), "a header value", &mut payload)?;
    }
    let events = meta.stream.as_deref().unwrap_or(&[]);
    // u32::MAX marks a plain body; a stream has a count (maybe 0).
    let count = match &meta.stream {
        None => u32::MAX,
        Some(events) => u32::try_from(events.len()).map_err(|_| too_long("the stream"))?,
    };
    payload.extend_from_slice(&count.to_le_bytes());
    for event in events {
        payload.extend_from_slice(&event.offset_ms.to_le_bytes());
        let len = u32::try_from(event.len).map_err(|_| too_long("a stream event"))?;
        payload.extend_from_slice(&len.to_le_bytes());
    }
    payload.extend_from_slice(&entry.body);

    let payload_len = u32::try_from(payload.len()).map_err(|_| too_long("the recording"))?;
    let mut record = Vec::with_capacity(RECORD_HEAD + payload.len() + CHECKSUM_LEN);
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(&payload_len.to_le_bytes());
    record.extend_from_slice(&payload);
    record.extend_from_slice(&checksum(key, &payload));
    Ok(record)
}

/// Parses a payload; `None` if it is not well formed.
fn decode_payload(payload: Bytes) -> Option<Replayable> {
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Option<Bytes> {
        let end = at.checked_add(n).filter(|end| *end <= payload.len())?;
        let out = payload.slice(*at..end);
        *at = end;
        Some(out)
    };
    let u16_at = |at: &mut usize| -> Option<u16> {
        let b = take(at, 2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: &mut usize| -> Option<u32> {
        let b = take(at, 4)?;
        Some(u32::from_le_bytes(b[..].try_into().ok()?))
    };
    let status = u16_at(&mut at)?;
    let len = u16_at(&mut at)? as usize;
    let recorded_at = take(&mut at, len)?;
    let count = u16_at(&mut at)? as usize;
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u16_at(&mut at)? as usize;
        let name = take(&mut at, len)?;
        let len = u16_at(&mut at)? as usize;
        let value = take(&mut at, len)?;
        headers.push((name, value));
    }
    let count = u32_at(&mut at)?;
    let events = if count == u32::MAX {
        None
    } else {
        // Bounded by the payload: each event takes 12 bytes.
        if (count as usize).checked_mul(12)? > payload.len() - at {
            return None;
        }
        let mut events = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = take(&mut at, 8)?;
            let offset = u64::from_le_bytes(offset[..].try_into().ok()?);
            events.push((offset, u32_at(&mut at)?));
        }
        Some(events)
    };
    let body = payload.slice(at..);
    if let Some(events) = &events {
        let covered = events
            .iter()
            .try_fold(0usize, |sum, (_, len)| sum.checked_add(*len as usize));
        if covered != Some(body.len()) {
            return None;
        }
    }
    Some(Replayable {
        status,
        recorded_at,
        headers,
        events,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::{test_entry, StreamEvent};

    fn stream_entry(key: &RequestKey) -> Recording {
        let mut entry = test_entry(
            &key.to_hex(),
            "data: {\"a\":1}\n\ndata: [DONE]\n\n",
            "fp_s",
            None,
            "2026-12-01T00:00:00.000Z",
        );
        entry.meta.stream = Some(vec![
            StreamEvent {
                offset_ms: 5,
                len: 15,
            },
            StreamEvent {
                offset_ms: 9,
                len: 14,
            },
        ]);
        entry
    }

    #[test]
    fn a_record_reads_back_as_the_entry_replays() {
        let dir = tempfile::tempdir().unwrap();
        let log = ResponseLog::open(dir.path()).unwrap();
        let a = RequestKey::from_bytes([1; 32]);
        let b = RequestKey::from_bytes([2; 32]);
        let mut plain = test_entry(
            &a.to_hex(),
            "{\"n\":1}",
            "fp_a",
            None,
            "2026-12-01T00:00:00.000Z",
        );
        plain.meta.response.headers = vec![
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), "req_1".into()),
        ];
        let stream = stream_entry(&b);
        let pa = log.append(&a, &plain).unwrap();
        let pb = log.append(&b, &stream).unwrap();
        assert_eq!(pb.offset, u64::from(pa.len));
        assert_eq!(log.read(&a, pa).unwrap(), Replayable::from_entry(&plain));
        let replayed = log.read(&b, pb).unwrap();
        assert_eq!(replayed, Replayable::from_entry(&stream));
        let events = replayed.event_slices().unwrap();
        assert_eq!(events[1], (9, Bytes::from_static(b"data: [DONE]\n\n")));

        // Reopened, appends go after what is there.
        drop(log);
        let log = ResponseLog::open(dir.path()).unwrap();
        let pc = log.append(&a, &plain).unwrap();
        assert_eq!(pc.offset, pb.offset + u64::from(pb.len));
        assert!(log.read(&a, pa).is_ok());
    }

    #[test]
    fn a_damaged_or_foreign_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = ResponseLog::open(dir.path()).unwrap();
        let a = RequestKey::from_bytes([1; 32]);
        let entry = test_entry(
            &a.to_hex(),
            "{\"n\":1}",
            "fp",
            None,
            "2026-12-01T00:00:00.000Z",
        );
        let pointer = log.append(&a, &entry).unwrap();
        let other = RequestKey::from_bytes([9; 32]);
        assert!(matches!(
            log.read(&other, pointer),
            Err(ResponseLogError::Damaged { .. })
        ));
        let huge = LogPointer {
            offset: 0,
            len: u32::MAX,
        };
        assert!(matches!(
            log.read(&a, huge),
            Err(ResponseLogError::Damaged { .. })
        ));
        let past_end = LogPointer {
            offset: pointer.offset + 8,
            len: pointer.len,
        };
        assert!(matches!(
            log.read(&a, past_end),
            Err(ResponseLogError::Damaged { .. })
        ));
        // Flip one body byte on disk.
        let path = dir.path().join(RESPONSE_LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = pointer.len as usize - CHECKSUM_LEN - 2;
        bytes[at] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = log.read(&a, pointer).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn every_truncation_of_a_payload_is_rejected_not_a_panic() {
        let key = RequestKey::from_bytes([3; 32]);
        let record = encode(&key, &stream_entry(&key)).unwrap();
        let payload = Bytes::copy_from_slice(&record[RECORD_HEAD..record.len() - CHECKSUM_LEN]);
        assert!(decode_payload(payload.clone()).is_some());
        for cut in 0..payload.len() {
            assert!(
                decode_payload(payload.slice(..cut)).is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn pointers_round_trip_and_reject_other_lengths() {
        let p = LogPointer {
            offset: 1 << 40,
            len: 77,
        };
        assert_eq!(LogPointer::from_bytes(&p.to_bytes()), Some(p));
        assert_eq!(LogPointer::from_bytes(&[0; 11]), None);
    }
}
