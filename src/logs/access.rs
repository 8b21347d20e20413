//! The access log's request line, written straight into the batched
//! buffer when the plain text format is in use: the same bytes the
//! [`PlainFormat`] formatter writes for the same event, without tracing's
//! dispatch (the subscriber, the filter layer, the visitor per field),
//! which was most of a cache hit's log line in the profile (see the
//! README's Performance section).
//!
//! Whether a line is written is decided as `tracing::info!` decides it:
//! by the interest tracing caches for a callsite declared with the same
//! target, level and field names (so `LLMTAPE_LOG` filters it exactly as
//! before, per target or per field name), and, when the filter answers
//! "sometimes", by asking the subscriber. `main` installs the [`Sink`]
//! only for the text format; without it (`--log-format json`, tests with a
//! subscriber of their own, a library user) [`request_line!`] is a plain
//! `tracing::info!`.
//!
//! [`request_line!`]: crate::request_line

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tracing::callsite::{Callsite, DefaultCallsite};
use tracing::field::DisplayValue;
use tracing::Level;

use crate::key::RequestKey;

use super::text::{push_f64, push_quoted, push_u64, write_time};
use super::{with_line, BatchedLine, PlainFormat, Shared, Text};

/// Where request lines go without tracing: the batched stderr writer, and
/// the format of its lines.
pub struct Sink {
    shared: Arc<Shared>,
    format: PlainFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends request lines straight to `writer` in `format` from now on (the
/// first call wins). `main` calls it when it installs the same writer and
/// format as tracing's text subscriber.
pub fn install(writer: &super::Batched, format: PlainFormat) {
    let _ = SINK.set(Sink {
        shared: writer.shared.clone(),
        format,
    });
}

/// The installed sink, if any.
#[inline]
pub fn sink() -> Option<&'static Sink> {
    SINK.get()
}

/// Whether the event of `callsite` (an INFO event) is enabled: what
/// `tracing::info!` asks before it dispatches.
#[inline]
pub fn enabled(callsite: &'static DefaultCallsite) -> bool {
    if !tracing::level_enabled!(Level::INFO) {
        return false;
    }
    let interest = callsite.interest();
    if interest.is_never() {
        return false;
    }
    interest.is_always()
        || tracing::dispatcher::get_default(|current| current.enabled(callsite.metadata()))
}

/// What a request line holds between its time and its fields: the level,
/// the target and the message, as [`PlainFormat`] writes them plain and
/// coloured. [`request_line!`] makes it from its module's path, so the
/// line's head is one copy of a constant.
///
/// [`request_line!`]: crate::request_line
#[derive(Debug, Clone, Copy)]
pub struct LineHead {
    /// Without colour.
    pub plain: &'static str,
    /// With the level coloured.
    pub ansi: &'static str,
}

/// The [`LineHead`] of an INFO `request` line of the module it is used in.
#[doc(hidden)]
#[macro_export]
macro_rules! __line_head {
    () => {
        $crate::logs::access::LineHead {
            plain: concat!(" INFO ", module_path!(), ": request"),
            ansi: concat!("\x1b[32m INFO\x1b[0m ", module_path!(), ": request"),
        }
    };
}

impl Sink {
    /// Writes one INFO line with `head` and the fields `fields` writes
    /// (each with [`LineValue::write_field`] or [`Show::write_shown`]).
    pub fn write(&self, head: &LineHead, fields: impl FnOnce(&mut Vec<u8>)) {
        with_line(|line| {
            write_time(line, SystemTime::now());
            let head = if self.format.ansi {
                head.ansi
            } else {
                head.plain
            };
            line.extend_from_slice(head.as_bytes());
            fields(line);
            line.push(b'\n');
            let mut out = BatchedLine {
                shared: &self.shared,
                urgent: false,
            };
            // A failed write of the log is dropped, as tracing drops it.
            let _ = out.write(line);
        });
    }
}

/// A value of a request line's field, written as [`PlainFormat`] writes
/// the tracing value of the same type: strings quoted, numbers bare, a
/// `display` value as its `Display`, an `Option` only when `Some`.
///
/// `field` is the field's ` name=`, a constant the macro makes, so that
/// each is one copy of a known length.
pub trait LineValue {
    /// Writes `field` (` name=`) and the value, or nothing (for `None`).
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>);
}

/// ` name=`, as given.
#[inline]
fn push_name(line: &mut Vec<u8>, field: &'static str) {
    line.extend_from_slice(field.as_bytes());
}

impl LineValue for &str {
    #[inline]
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        let _ = push_quoted(line, self);
    }
}

/// A fixed word known to need no escaping (an outcome: `hit`, `miss`):
/// written in quotes as a `&str` is, without looking for what to escape.
/// Tracing gets the `&str`.
#[derive(Debug, Clone, Copy)]
pub struct Word(pub &'static str);

impl Show for Word {
    type Traced<'a> = &'static str;

    fn traced(&self) -> &'static str {
        self.0
    }

    #[inline]
    fn write_shown(&self, field: &'static str, line: &mut Vec<u8>) {
        debug_assert!(super::text::all_plain(self.0.as_bytes()), "{:?}", self.0);
        push_name(line, field);
        line.push(b'"');
        line.extend_from_slice(self.0.as_bytes());
        line.push(b'"');
    }
}

impl LineValue for u64 {
    #[inline]
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        push_u64(line, *self);
    }
}

impl LineValue for u16 {
    #[inline]
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        push_u64(line, u64::from(*self));
    }
}

impl LineValue for f64 {
    #[inline]
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        let _ = push_f64(line, *self);
    }
}

impl<T: fmt::Display> LineValue for DisplayValue<T> {
    #[inline]
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        let _ = write!(Text(line), "{self}");
    }
}

impl<T: LineValue> LineValue for Option<T> {
    #[inline]
    fn write_field(&self, field: &'static str, line: &mut Vec<u8>) {
        if let Some(value) = self {
            value.write_field(field, line);
        }
    }
}

/// A value given as `name = %value` to [`request_line!`]: written as its
/// `Display` writes it, without `Display`'s machinery (a third of the
/// line's cost for the method and the key); tracing gets it as
/// `tracing::field::display`. An `Option` of one is left out when `None`.
///
/// [`request_line!`]: crate::request_line
pub trait Show {
    /// What tracing records for it.
    type Traced<'a>: tracing::Value
    where
        Self: 'a;

    /// The value for tracing.
    fn traced(&self) -> Self::Traced<'_>;

    /// Writes `field` (` name=`) and the value, or nothing (for `None`).
    fn write_shown(&self, field: &'static str, line: &mut Vec<u8>);
}

impl Show for http::Method {
    type Traced<'a> = DisplayValue<&'a http::Method>;

    fn traced(&self) -> Self::Traced<'_> {
        tracing::field::display(self)
    }

    #[inline]
    fn write_shown(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        line.extend_from_slice(self.as_str().as_bytes());
    }
}

impl Show for RequestKey {
    type Traced<'a> = DisplayValue<&'a RequestKey>;

    fn traced(&self) -> Self::Traced<'_> {
        tracing::field::display(self)
    }

    #[inline]
    fn write_shown(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        let mut hex = [[0u8; 2]; 32];
        for (pair, b) in hex.iter_mut().zip(self.as_bytes()) {
            *pair = HEX_PAIRS[usize::from(*b)];
        }
        line.extend_from_slice(hex.as_flattened());
    }
}

/// A duration logged in milliseconds with three decimals: `ms = %Millis(d)`.
/// Written from its whole microseconds by integer arithmetic (the float
/// path rounds through libm); tracing gets the same number as an `f64`,
/// which the formatter writes with the same digits.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub std::time::Duration);

impl Show for Millis {
    type Traced<'a> = f64;

    fn traced(&self) -> f64 {
        self.0.as_micros() as f64 / 1000.0
    }

    #[inline]
    fn write_shown(&self, field: &'static str, line: &mut Vec<u8>) {
        push_name(line, field);
        // Whole microseconds in a u64: a u128's division is a call.
        let micros = (self.0.as_secs())
            .checked_mul(1_000_000)
            .and_then(|m| m.checked_add(u64::from(self.0.subsec_micros())));
        match micros.map(|m| (m / 1000, m)) {
            Some((whole, micros)) if whole < 1_000_000_000_000 => {
                push_u64(line, whole);
                let fraction = (micros % 1000) as u16;
                line.extend_from_slice(&[
                    b'.',
                    b'0' + (fraction / 100) as u8,
                    b'0' + (fraction / 10 % 10) as u8,
                    b'0' + (fraction % 10) as u8,
                ]);
            }
            _ => {
                let _ = push_f64(line, self.traced());
            }
        }
    }
}

/// The two hex digits of each byte: one load per byte of a key.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
        b += 1;
    }
    pairs
};

impl<T: Show> Show for Option<T> {
    type Traced<'a>
        = Option<T::Traced<'a>>
    where
        T: 'a;

    fn traced(&self) -> Self::Traced<'_> {
        self.as_ref().map(Show::traced)
    }

    #[inline]
    fn write_shown(&self, field: &'static str, line: &mut Vec<u8>) {
        if let Some(value) = self {
            value.write_shown(field, line);
        }
    }
}

/// Logs a request line: `request_line!(name = value, ...)` is
/// `tracing::info!(name = value, ..., "request")`, with the line written
/// straight to the batched log when the [`Sink`] is installed and tracing
/// would have enabled the event. Values: `&str`, `u16`, `u64`, `f64`,
/// `tracing::field::display(..)`, or an `Option` of one (left out when
/// `None`), so a field added on a rare path (`x = opt.map(display)`)
/// costs the others nothing; `name = %value` for a [`Show`] value (the
/// method, a key, an `Option` of a key, a [`Millis`], a [`Word`]),
/// written without `Display`.
#[macro_export]
macro_rules! request_line {
    ($($fields:tt)+) => {
        $crate::__request_line!(@parse [] [] $($fields)+)
    };
}

/// The fields of [`request_line!`], one at a time: what tracing gets and
/// what the direct line writes.
#[doc(hidden)]
#[macro_export]
macro_rules! __request_line {
    (@parse [$($traced:tt)*] [$($direct:tt)*] $name:ident = %$value:expr $(, $($rest:tt)*)?) => {
        $crate::__request_line!(
            @parse
            [$($traced)* $name = $crate::logs::access::Show::traced(&$value),]
            [$($direct)* (shown $name ($value))]
            $($($rest)*)?
        )
    };
    (@parse [$($traced:tt)*] [$($direct:tt)*] $name:ident = $value:expr $(, $($rest:tt)*)?) => {
        $crate::__request_line!(
            @parse
            [$($traced)* $name = $value,]
            [$($direct)* (value $name ($value))]
            $($($rest)*)?
        )
    };
    (@write $line:ident shown $name:ident $value:expr) => {
        $crate::logs::access::Show::write_shown(&$value, concat!(" ", stringify!($name), "="), $line)
    };
    (@write $line:ident value $name:ident $value:expr) => {
        $crate::logs::access::LineValue::write_field(&$value, concat!(" ", stringify!($name), "="), $line)
    };
    (@parse [$($traced:tt)*] [$(($kind:ident $name:ident ($value:expr)))+]) => {{
        static CALLSITE: ::tracing::callsite::DefaultCallsite =
            ::tracing::callsite::DefaultCallsite::new(&META);
        static META: ::tracing::Metadata<'static> = ::tracing::Metadata::new(
            concat!("event ", file!(), ":", line!()),
            module_path!(),
            ::tracing::Level::INFO,
            ::core::option::Option::Some(file!()),
            ::core::option::Option::Some(line!()),
            ::core::option::Option::Some(module_path!()),
            ::tracing::field::FieldSet::new(
                &["message", $(stringify!($name)),+],
                ::tracing::callsite::Identifier(&CALLSITE),
            ),
            ::tracing::metadata::Kind::EVENT,
        );
        match $crate::logs::access::sink() {
            ::core::option::Option::Some(sink) => {
                if $crate::logs::access::enabled(&CALLSITE) {
                    sink.write(&$crate::__line_head!(), |line| {
                        $($crate::__request_line!(@write line $kind $name $value);)+
                    });
                }
            }
            ::core::option::Option::None => {
                ::tracing::info!($($traced)* "request");
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RequestKey;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A batched writer into a buffer, never flushed by its timer.
    fn batched_into() -> (Buffer, super::super::Batched, super::super::LogGuard) {
        let out = Buffer::default();
        let (writer, guard) =
            super::super::batched(Box::new(out.clone()), Duration::from_secs(3600));
        (out, writer, guard)
    }

    /// The line without its time (which differs between two lines).
    fn untimed(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    }

    /// The fields of a hit's line and of a rare path's, with every kind of
    /// value and a string that needs escaping.
    fn log_both(key: Option<&RequestKey>, nearest: Option<&str>) {
        let method = http::Method::POST;
        let key = key.copied();
        crate::request_line!(
            method = %method,
            path = "/v1/a\"b",
            route = "chat",
            key = %key,
            outcome = "hit",
            status = 200u16,
            ms = 0.25f64,
            nearest = nearest,
            calls = 7u64,
        );
    }

    #[test]
    fn milliseconds_are_written_as_tracing_writes_their_f64() {
        use std::time::Duration;
        for d in [
            Duration::ZERO,
            Duration::from_micros(250),
            Duration::from_nanos(1_234_567),
            Duration::from_nanos(999_999),
            Duration::from_micros(12_000_345),
            Duration::from_secs(86_400 * 365),
            Duration::from_secs(u64::MAX),
        ] {
            let mut direct = Vec::new();
            Millis(d).write_shown(" ms=", &mut direct);
            let mut traced = b" ms=".to_vec();
            push_f64(&mut traced, Millis(d).traced()).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(traced).unwrap(),
                "{d:?}"
            );
        }
        let mut line = Vec::new();
        Millis(Duration::from_nanos(1_234_567)).write_shown(" ms=", &mut line);
        assert_eq!(line, b" ms=1.234");
    }

    #[test]
    fn the_direct_line_is_the_bytes_the_formatter_writes() {
        let key = RequestKey::from_bytes([0xab; 32]);
        for ansi in [false, true] {
            for (key, nearest) in [(Some(&key), None), (None, Some("ff00"))] {
                // Through tracing (no sink in this test's view).
                let (traced, writer, guard) = batched_into();
                let subscriber = tracing_subscriber::fmt()
                    .event_format(PlainFormat { ansi })
                    .with_writer(writer)
                    .finish();
                tracing::subscriber::with_default(subscriber, || {
                    tracing::info!(
                        method = tracing::field::display(&http::Method::POST),
                        path = "/v1/a\"b",
                        route = "chat",
                        key = key.map(tracing::field::display),
                        outcome = "hit",
                        status = 200u16,
                        ms = 0.25f64,
                        nearest = nearest,
                        calls = 7u64,
                        "request"
                    );
                });
                drop(guard);
                // Straight into the batch.
                let (direct, writer, guard) = batched_into();
                let sink = Sink {
                    shared: writer.shared.clone(),
                    format: PlainFormat { ansi },
                };
                sink.write(&crate::__line_head!(), |line| {
                    http::Method::POST.write_shown(" method=", line);
                    "/v1/a\"b".write_field(" path=", line);
                    "chat".write_field(" route=", line);
                    key.copied().write_shown(" key=", line);
                    Word("hit").write_shown(" outcome=", line);
                    200u16.write_field(" status=", line);
                    0.25f64.write_field(" ms=", line);
                    nearest.write_field(" nearest=", line);
                    7u64.write_field(" calls=", line);
                });
                drop(guard);
                let (traced, direct) = (traced.text(), direct.text());
                assert_eq!(untimed(&direct), untimed(&traced), "ansi {ansi}");
                assert!(traced.contains(" request method=POST path="), "{}", traced);
            }
        }
    }

    #[test]
    fn without_a_sink_the_macro_is_a_tracing_event() {
        // No test installs the global sink, so this goes through tracing.
        let (out, writer, guard) = batched_into();
        let subscriber = tracing_subscriber::fmt()
            .event_format(PlainFormat { ansi: false })
            .with_writer(writer)
            .finish();
        let key = RequestKey::from_bytes([0xab; 32]);
        tracing::subscriber::with_default(subscriber, || {
            log_both(Some(&key), None);
            log_both(None, Some("ff00"));
        });
        drop(guard);
        let text = out.text();
        assert!(
            text.contains(&format!(
                " request method=POST path=\"/v1/a\\\"b\" route=\"chat\" key={key} outcome=\"hit\" status=200 ms=0.250 calls=7\n"
            )),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                " INFO {}: request method=POST path=\"/v1/a\\\"b\" route=\"chat\" outcome=\"hit\" status=200 ms=0.250 nearest=\"ff00\" calls=7\n",
                module_path!()
            )),
            "{text}"
        );
    }

    #[test]
    fn the_callsite_is_filtered_like_the_event_it_stands_for() {
        use tracing_subscriber::EnvFilter;
        static CALLSITE: DefaultCallsite = DefaultCallsite::new(&META);
        static META: tracing::Metadata<'static> = tracing::Metadata::new(
            "event test",
            "llmtape::serve::proxy",
            Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(
                &["message", "outcome"],
                tracing::callsite::Identifier(&CALLSITE),
            ),
            tracing::metadata::Kind::EVENT,
        );
        for (directive, expected) in [
            ("llmtape=info", true),
            ("llmtape=warn", false),
            ("llmtape::serve::proxy=off,llmtape=info", false),
            ("llmtape::serve=debug", true),
            ("other=info", false),
        ] {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(directive))
                .with_writer(std::io::sink)
                .finish();
            let got = tracing::subscriber::with_default(subscriber, || enabled(&CALLSITE));
            assert_eq!(got, expected, "{directive}");
        }
    }

    #[test]
    fn a_key_is_written_as_its_display_writes_it() {
        let keys = [
            RequestKey::from_bytes(std::array::from_fn(|i| i as u8)),
            RequestKey::from_bytes(std::array::from_fn(|i| 0xff - i as u8)),
            RequestKey::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a)),
            RequestKey::from_bytes([0; 32]),
        ];
        for key in keys {
            let mut line = Vec::new();
            key.write_shown(" key=", &mut line);
            assert_eq!(String::from_utf8(line).unwrap(), format!(" key={key}"));
        }
    }
}
