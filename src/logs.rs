//! The text log format: `TIME LEVEL target: message field=value ...`, one
//! line per event, written with as little machinery as a line needs.
//!
//! Why not tracing-subscriber's default: `serve` writes one line per
//! request, and the default formatter (styled field names, padded levels,
//! a visitor per field) cost a quarter of a cache hit's CPU in the profile
//! (see the README's Performance section). This one writes the same
//! information in about half the instructions. Colour only when
//! stderr is a terminal, and then only on the level. `--log-format json`
//! keeps tracing-subscriber's JSON formatter.
//!
//! It also owns where the lines go: [`batched`] buffers them for stderr
//! and writes a batch every [`FLUSH_INTERVAL`] (or when a batch fills, or
//! at once for a warning or an error), so a busy `serve` makes one
//! write(2) per interval, not one per request. The [`LogGuard`] that
//! `main` keeps flushes what is left when it drops, after the command
//! (and `serve`'s graceful shutdown) has returned: a clean stop loses no
//! line, a `kill -9` at most the last interval's.

pub mod access;

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::Metadata;
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The longest a buffered log line waits for stderr: short enough that a
/// user watching the log sees each request "at once", long enough that a
/// busy server writes hundreds of lines per write(2); and what a `kill -9`
/// may lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A batch this large is written without waiting for the timer, so a burst
/// of lines never holds more than this in memory (about 500 request lines).
const BATCH_BYTES: usize = 64 * 1024;

/// A [`MakeWriter`] that batches lines for one destination (stderr in
/// `main`): INFO and below wait in a buffer, WARN and ERROR are written at
/// once together with what was waiting before them (order is kept).
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// What the writers, the flusher thread and the guard share.
struct Shared {
    state: Mutex<State>,
    /// Set when the guard drops: the flusher thread stops.
    stopped: AtomicBool,
}

struct State {
    buffer: Vec<u8>,
    out: Box<dyn Write + Send>,
    /// After the guard dropped: every line is written at once.
    direct: bool,
}

impl State {
    /// Writes the buffer out. A failed write of the log is dropped: there
    /// is nowhere left to report it.
    fn write_out(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.out.write_all(&self.buffer);
            let _ = self.out.flush();
            self.buffer.clear();
        }
    }
}

impl Shared {
    fn flush(&self) {
        crate::sync::lock(&self.state).write_out();
    }
}

/// Keeps the batches flowing; flushes what is left when dropped. `main`
/// holds it for the whole run.
pub struct LogGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl LogGuard {
    /// Writes every buffered line now.
    pub fn flush(&self) {
        self.shared.flush();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        {
            let mut state = crate::sync::lock(&self.shared.state);
            state.write_out();
            // Lines logged after this (a late destructor) are not lost.
            state.direct = true;
        }
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
    }
}

/// Batches log lines for `out`, written every `interval` by a small thread
/// of its own (so commands without a runtime log the same way).
pub fn batched(out: Box<dyn Write + Send>, interval: Duration) -> (Batched, LogGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::with_capacity(BATCH_BYTES),
            out,
            direct: false,
        }),
        stopped: AtomicBool::new(false),
    });
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("llmtape-log-flush".into())
            .spawn(move || {
                while !shared.stopped.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    shared.flush();
                }
            })
    };
    let writer = Batched {
        shared: shared.clone(),
    };
    match flusher {
        Ok(flusher) => (
            writer,
            LogGuard {
                shared,
                flusher: Some(flusher),
            },
        ),
        Err(_) => {
            // No thread to flush on a timer: write every line at once, as
            // before batching.
            crate::sync::lock(&shared.state).direct = true;
            (
                writer,
                LogGuard {
                    shared,
                    flusher: None,
                },
            )
        }
    }
}

/// The writer of one event: the formatter writes the whole line in one
/// call.
pub struct BatchedLine<'a> {
    shared: &'a Shared,
    /// WARN or ERROR: write it (and what waits before it) now.
    urgent: bool,
}

impl Write for BatchedLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = crate::sync::lock(&self.shared.state);
        if state.direct {
            state.out.write_all(bytes)?;
            state.out.flush()?;
            return Ok(bytes.len());
        }
        state.buffer.extend_from_slice(bytes);
        if self.urgent || state.buffer.len() >= BATCH_BYTES {
            state.write_out();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = BatchedLine<'a>;

    fn make_writer(&'a self) -> BatchedLine<'a> {
        BatchedLine {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> BatchedLine<'a> {
        BatchedLine {
            shared: &self.shared,
            // More verbose levels are greater: WARN and ERROR are <= WARN.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// The text format of llmtape's logs.
#[derive(Debug, Clone, Copy)]
pub struct PlainFormat {
    /// Colour the level (stderr is a terminal).
    pub ansi: bool,
}

impl<S, N> FormatEvent<S, N> for PlainFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is built in a buffer of this thread's and handed to the
        // writer in one call: the writer is a `dyn fmt::Write`, and a call
        // per piece was a fifth of the line's cost.
        with_line(|line| {
            self.format_line(line, event)?;
            // Only text goes in (str, chars, formatted values), so this
            // never fails; checked once per line, not once per piece.
            writer.write_str(std::str::from_utf8(line).map_err(|_| fmt::Error)?)
        })
    }
}

/// Runs `build` on this thread's line buffer, emptied (its capacity kept).
/// The buffer is bytes, not a `String`, so ASCII pieces go in without a
/// UTF-8 check each; only text is ever pushed.
fn with_line<R>(build: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    LINE.with(|line| match line.try_borrow_mut() {
        Ok(mut line) => {
            line.clear();
            build(&mut line)
        }
        // Formatting a field logged again on this thread: no buffer.
        Err(_) => build(&mut Vec::new()),
    })
}

thread_local! {
    /// The line being formatted on this thread (its capacity is kept).
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `fmt::Write` into a line buffer, for values formatted with `{}`/`{:?}`.
struct Text<'a>(&'a mut Vec<u8>);

impl fmt::Write for Text<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

impl PlainFormat {
    fn format_line(&self, line: &mut Vec<u8>, event: &Event<'_>) -> fmt::Result {
        // Records from the `log` crate (sled logs that way) carry their real
        // target and location in `log.*` fields; show them as tracing does.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        self.push_head(line, *meta.level(), meta.target());
        let mut fields = Fields {
            writer: line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push(b'\n');
        Ok(())
    }

    /// The start of every line: `TIME LEVEL target:`.
    fn push_head(&self, line: &mut Vec<u8>, level: Level, target: &str) {
        write_time(line, SystemTime::now());
        let (level, colour): (&[u8], &[u8]) = match level {
            Level::ERROR => (b"ERROR", b"\x1b[31m"),
            Level::WARN => (b" WARN", b"\x1b[33m"),
            Level::INFO => (b" INFO", b"\x1b[32m"),
            Level::DEBUG => (b"DEBUG", b"\x1b[34m"),
            Level::TRACE => (b"TRACE", b"\x1b[35m"),
        };
        if self.ansi {
            line.extend_from_slice(colour);
            line.extend_from_slice(level);
            line.extend_from_slice(b"\x1b[0m ");
        } else {
            line.extend_from_slice(level);
            line.push(b' ');
        }
        line.extend_from_slice(target.as_bytes());
        line.push(b':');
    }
}

/// Bytes a string field's value holds as they are inside its quotes: what
/// `{:?}` leaves unescaped (printable ASCII but `"` and `\`). The spec of
/// [`all_plain`], which tests it a word at a time.
#[cfg(test)]
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// Whether `{:?}` leaves every byte of `bytes` as it is (printable ASCII
/// but `"` and `\`), eight at a time: a byte at a time was a quarter of a
/// request line (its path, route and outcome).
fn all_plain(bytes: &[u8]) -> bool {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let len = bytes.len();
    if len < 8 {
        // In a word of spaces (plain).
        let mut padded = u64::from_le_bytes([b' '; 8]);
        for (i, b) in bytes.iter().enumerate() {
            padded ^= u64::from(b ^ b' ') << (8 * i);
        }
        return plain_word(padded);
    }
    let mut at = 0;
    while at + 8 <= len {
        if !plain_word(word(at)) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the words before.
    at == len || plain_word(word(len - 8))
}

/// Whether all eight bytes of `x` are plain: none is below 0x20, 0x7f or
/// above, `"` or `\`. Each test is exact: a byte that borrows in a
/// subtraction is found, and only a byte that would is.
fn plain_word(x: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // A high bit where a byte of `v` is below `n` (for `n` <= 0x80).
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let not_plain = below(x, 0x20)
        | below(x ^ (ONES * u64::from(b'"')), 1)
        | below(x ^ (ONES * u64::from(b'\\')), 1)
        | below(x ^ (ONES * 0x7f), 1)
        | (x & HIGH);
    not_plain == 0
}

/// A string field's value: quoted, escaped as `{:?}` escapes it.
fn push_quoted(line: &mut Vec<u8>, value: &str) -> fmt::Result {
    if all_plain(value.as_bytes()) {
        // What `{:?}` writes for a string with nothing to escape (a
        // path, a method), without its per-character escaping.
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
        Ok(())
    } else {
        write!(Text(line), "{value:?}")
    }
}

/// A float field's value (milliseconds and the like): three decimals by
/// integer arithmetic (float formatting with a precision was a tenth of a
/// log line).
fn push_f64(line: &mut Vec<u8>, value: f64) -> fmt::Result {
    if value.is_finite() && (0.0..1e12).contains(&value) {
        let thousandths = (value * 1000.0).round() as u64;
        push_u64(line, thousandths / 1000);
        let fraction = thousandths % 1000;
        line.extend_from_slice(&[
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ]);
        Ok(())
    } else {
        write!(Text(line), "{value:.3}")
    }
}

/// An unsigned field's value, in decimal.
fn push_u64(line: &mut Vec<u8>, mut value: u64) {
    // Most are short (a status, whole milliseconds, a count).
    if value < 10 {
        line.push(b'0' + value as u8);
        return;
    }
    if value < 1000 {
        let pair = DECIMAL_PAIRS[(value % 100) as usize];
        if value < 100 {
            line.extend_from_slice(&pair);
        } else {
            line.extend_from_slice(&[b'0' + (value / 100) as u8, pair[0], pair[1]]);
        }
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
}

/// Writes each field as ` name=value` (the message bare, strings quoted).
struct Fields<'a> {
    writer: &'a mut Vec<u8>,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Whether `field` is written, and if so its ` name=` (or the space
    /// before a bare message) is.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        self.writer.push(b' ');
        if field.name() != "message" {
            self.writer.extend_from_slice(field.name().as_bytes());
            self.writer.push(b'=');
        }
        true
    }

    fn value(&mut self, value: fmt::Arguments<'_>) {
        self.result = Text(self.writer).write_fmt(value);
    }

    fn text(&mut self, value: &str) {
        self.writer.extend_from_slice(value.as_bytes());
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        if field.name() == "message" {
            self.text(value);
        } else {
            self.result = push_quoted(self.writer, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            push_u64(self.writer, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.value(format_args!("{value}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.text(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            self.result = push_f64(self.writer, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.value(format_args!("{value:?}"));
        }
    }
}

thread_local! {
    /// The second last formatted on this thread and its text up to the
    /// seconds (`2026-12-01T19:30:05`): lines in one second share it.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> =
        const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `now` as RFC 3339 with microseconds, UTC, and a space: what
/// `humantime::format_rfc3339_micros` writes, with the date and time of
/// day formatted once a second per thread.
fn write_time(line: &mut Vec<u8>, now: SystemTime) {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (second, micros) = (since.as_secs(), since.subsec_micros());
    let (cached, mut text) = SECOND.get();
    if cached != second {
        // `2026-12-01T19:30:05Z` (always 20 bytes) without the `Z`.
        let whole = humantime::format_rfc3339_seconds(now).to_string();
        let n = whole.len().saturating_sub(1).min(text.len());
        text[..n].copy_from_slice(&whole.as_bytes()[..n]);
        SECOND.set((second, text));
    }
    // The seconds' text and the microseconds in one copy of known length.
    let mut out = [0u8; 28];
    out[..19].copy_from_slice(&text);
    out[19] = b'.';
    for (at, pair) in [
        (20, micros / 10_000),
        (22, micros / 100 % 100),
        (24, micros % 100),
    ] {
        out[at..at + 2].copy_from_slice(&DECIMAL_PAIRS[pair as usize % 100]);
    }
    out[26] = b'Z';
    out[27] = b' ';
    line.extend_from_slice(&out);
}

/// The two decimal digits of 0 to 99.
const DECIMAL_PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        pairs[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(ansi: bool, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(PlainFormat { ansi })
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_request_line_has_time_level_target_message_and_fields() {
        let key = crate::key::RequestKey::from_bytes([0xab; 32]);
        let line = capture(false, || {
            tracing::info!(
                method = %"POST",
                path = "/v1/chat/completions",
                key = tracing::field::display(&key),
                status = 200u64,
                ms = 0.25f64,
                hit = true,
                "request"
            );
        });
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert_eq!(
            rest,
            format!(
                " INFO llmtape::logs::tests: request method=POST path=\"/v1/chat/completions\" key={key} status=200 ms=0.250 hit=true\n"
            )
        );
    }

    /// A destination that counts its writes.
    #[derive(Clone, Default)]
    struct Counted {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl io::Write for Counted {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Counted {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }

        fn writes(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    /// Logs through a batched writer with `interval`.
    fn batched_logs(interval: Duration) -> (Counted, LogGuard, tracing::Dispatch) {
        let out = Counted::default();
        let (writer, guard) = batched(Box::new(out.clone()), interval);
        let subscriber = tracing_subscriber::fmt()
            .event_format(PlainFormat { ansi: false })
            .with_writer(writer)
            .finish();
        (out, guard, tracing::Dispatch::new(subscriber))
    }

    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn info_lines_are_written_in_one_batch_in_order() {
        let (out, guard, logs) = batched_logs(NEVER);
        tracing::dispatcher::with_default(&logs, || {
            for i in 0..100 {
                tracing::info!(i, "request");
            }
        });
        assert_eq!(out.writes(), 0, "nothing written per line");
        guard.flush();
        assert_eq!(out.writes(), 1, "one write for the batch");
        let text = out.text();
        let numbers: Vec<&str> = text
            .lines()
            .map(|l| l.rsplit_once("i=").unwrap().1)
            .collect();
        let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(numbers, expected);
    }

    #[test]
    fn the_timer_flushes_without_being_asked() {
        let (out, _guard, logs) = batched_logs(Duration::from_millis(20));
        tracing::dispatcher::with_default(&logs, || tracing::info!("request"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !out.text().contains("request") {
            assert!(std::time::Instant::now() < deadline, "the timer flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn dropping_the_guard_writes_what_is_left_and_later_lines_go_straight_out() {
        let (out, guard, logs) = batched_logs(NEVER);
        tracing::dispatcher::with_default(&logs, || {
            tracing::info!("first");
            tracing::info!("second");
        });
        drop(guard);
        assert_eq!(out.writes(), 1);
        assert!(out.text().contains("first") && out.text().contains("second"));
        tracing::dispatcher::with_default(&logs, || tracing::info!("late"));
        assert!(
            out.text().contains("late"),
            "a line after the guard is written"
        );
    }

    #[test]
    fn a_warning_is_written_at_once_after_what_waited() {
        let (out, _guard, logs) = batched_logs(NEVER);
        tracing::dispatcher::with_default(&logs, || {
            tracing::info!("before");
            tracing::warn!("careful");
        });
        let text = out.text();
        let (before, careful) = (text.find("before"), text.find("careful"));
        assert!(before.is_some() && careful > before, "{text}");
    }

    #[test]
    fn a_full_batch_is_written_without_the_timer() {
        let (out, _guard, logs) = batched_logs(NEVER);
        let long = "x".repeat(1000);
        tracing::dispatcher::with_default(&logs, || {
            for _ in 0..(2 * BATCH_BYTES / 1000) {
                tracing::info!(%long, "request");
            }
        });
        assert!(out.writes() >= 1, "a full batch went out");
        assert!(out.writes() <= 2);
    }

    #[test]
    fn the_time_is_what_humantime_writes() {
        for micros in [
            0u64,
            1,
            999_999,
            1_764_619_805_123_456,
            1_764_619_805_000_001,
        ] {
            let now = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            let mut out = Vec::new();
            write_time(&mut out, now);
            // Twice: the second from the cache.
            write_time(&mut out, now);
            let expected = format!("{} ", humantime::format_rfc3339_micros(now));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{expected}{expected}")
            );
        }
    }

    #[test]
    fn fields_are_written_as_the_formatter_would() {
        let line = capture(false, || {
            tracing::info!(
                path = "/v1/a\"b",
                ms = 1234.56789f64,
                tiny = 0.0004f64,
                odd = f64::NAN,
                n = 0u64,
                big = u64::MAX,
                neg = -5i64,
                "request"
            );
        });
        let fields = line.split_once(": ").unwrap().1;
        assert_eq!(
            fields,
            format!(
                "request path={:?} ms=1234.568 tiny=0.000 odd=NaN n=0 big={} neg=-5\n",
                "/v1/a\"b",
                u64::MAX
            )
        );
    }

    #[test]
    fn colour_only_on_the_level_and_only_when_asked() {
        let plain = capture(false, || tracing::warn!("careful"));
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = capture(true, || tracing::warn!("careful"));
        assert!(
            coloured.contains(" \x1b[33m WARN\x1b[0m llmtape::logs::tests: careful\n"),
            "{coloured}"
        );
    }

    #[test]
    fn a_plain_check_a_word_at_a_time_agrees_with_the_table() {
        // Every byte value at every place of strings of every length up
        // to three words, among plain bytes and among other odd ones.
        for len in 1..=24 {
            for at in 0..len {
                for background in [b'a', b'~', b' '] {
                    for b in 0..=255u8 {
                        let mut bytes = vec![background; len];
                        bytes[at] = b;
                        assert_eq!(
                            all_plain(&bytes),
                            PLAIN[usize::from(b)],
                            "byte {b:#04x} at {at} of {len}"
                        );
                    }
                }
            }
        }
        assert!(all_plain(b""));
        assert!(all_plain(b"/v1/chat/completions"));
        assert!(!all_plain("/v1/caf\u{e9}".as_bytes()));
        let mut quoted = Vec::new();
        push_quoted(&mut quoted, "a\"b\\c\u{1}d").unwrap();
        assert_eq!(quoted, format!("{:?}", "a\"b\\c\u{1}d").into_bytes());
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut values: Vec<u64> = (0..=2000).collect();
        for power in 1..20 {
            let p = 10u64.pow(power);
            values.extend([p - 1, p, p + 1]);
        }
        values.push(u64::MAX);
        for value in values {
            let mut line = Vec::new();
            push_u64(&mut line, value);
            assert_eq!(line, value.to_string().into_bytes());
        }
    }
}
