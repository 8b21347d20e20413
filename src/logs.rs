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

use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        // Records from the `log` crate (sled logs that way) carry their real
        // target and location in `log.*` fields; show them as tracing does.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write!(
            writer,
            "{} ",
            humantime::format_rfc3339_micros(SystemTime::now())
        )?;
        let (level, colour) = match *meta.level() {
            Level::ERROR => ("ERROR", "\x1b[31m"),
            Level::WARN => (" WARN", "\x1b[33m"),
            Level::INFO => (" INFO", "\x1b[32m"),
            Level::DEBUG => ("DEBUG", "\x1b[34m"),
            Level::TRACE => ("TRACE", "\x1b[35m"),
        };
        if self.ansi {
            writer.write_str(colour)?;
            writer.write_str(level)?;
            writer.write_str("\x1b[0m ")?;
        } else {
            writer.write_str(level)?;
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_char(':')?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes each field as ` name=value` (the message bare, strings quoted).
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = if field.name() == "message" {
            write!(self.writer, " {value}")
        } else {
            write!(self.writer, " {}={value}", field.name())
        };
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, format_args!("{value:.3}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
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
