//! The pieces of a text log line: a string field's value quoted as
//! `{:?}` quotes it, numbers, and the time, each written with as little
//! work as a request line can afford (see the README's Performance).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use super::Text;

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
pub(super) fn all_plain(bytes: &[u8]) -> bool {
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
pub(super) fn push_quoted(line: &mut Vec<u8>, value: &str) -> fmt::Result {
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
pub(super) fn push_f64(line: &mut Vec<u8>, value: f64) -> fmt::Result {
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
pub(super) fn push_u64(line: &mut Vec<u8>, mut value: u64) {
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

thread_local! {
    /// The second last formatted on this thread and its text up to the
    /// seconds (`2026-12-01T19:30:05`): lines in one second share it.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> =
        const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `now` as RFC 3339 with microseconds, UTC, and a space: what
/// `humantime::format_rfc3339_micros` writes, with the date and time of
/// day formatted once a second per thread.
pub(super) fn write_time(line: &mut Vec<u8>, now: SystemTime) {
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
    use std::time::Duration;

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
