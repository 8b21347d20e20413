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
mod text;

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};

use text::{push_f64, push_quoted, push_u64, write_time};
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
}
