//! How the text reports are dressed for where they go: ANSI colour, the
//! table header `ls` prints only to a person, and the width diffs wrap at.
//!
//! Detected once by the dispatcher ([`Terminal::detect`]) and handed to the
//! commands, so a report renders the same bytes into a `Vec<u8>` in a test
//! as into a pipe. Owns no report's layout.

use std::io::IsTerminal;

/// Text width that diffs wrap at when the terminal's is unknown.
pub const DEFAULT_WIDTH: usize = 100;

/// Narrowest width wrapped at, whatever `COLUMNS` says: below it a diff
/// line would hold hardly a word after its indent.
const MIN_WIDTH: usize = 40;

/// Where a report goes, as far as its looks are concerned. A command run
/// by a running `serve` is dressed for the caller's terminal, sent along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Terminal {
    /// stdout is a terminal: a person reads it (tables get a header line).
    pub interactive: bool,
    /// ANSI colour is wanted.
    pub colour: bool,
    /// Width to wrap long text at.
    pub width: usize,
}

impl Terminal {
    /// What stdout is: colour on a terminal unless `NO_COLOR` is set; the
    /// width from `COLUMNS` (at least 40), else [`DEFAULT_WIDTH`].
    pub fn detect() -> Terminal {
        let interactive = std::io::stdout().is_terminal();
        Terminal {
            interactive,
            colour: interactive && std::env::var_os("NO_COLOR").is_none(),
            width: std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(DEFAULT_WIDTH)
                .max(MIN_WIDTH),
        }
    }

    /// A pipe or a file: no header, no colour, the default width.
    #[cfg(test)]
    pub fn plain() -> Terminal {
        Terminal {
            interactive: false,
            colour: false,
            width: DEFAULT_WIDTH,
        }
    }

    /// `text` in the ANSI style `code` (e.g. `"1"` bold, `"31"` red) when
    /// colour is on.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Colours `[-removed-]` red and `{+added+}` green.
    pub fn diff(&self, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        text.replace("[-", "\x1b[31m[-")
            .replace("-]", "-]\x1b[0m")
            .replace("{+", "\x1b[32m{+")
            .replace("+}", "+}\x1b[0m")
    }
}

/// Wraps text at spaces to lines of at most `width` characters (a word
/// longer than that gets a line of its own); newlines are kept.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_inclusive(' ') {
            if !line.is_empty() && line.chars().count() + word.chars().count() > width {
                lines.push(std::mem::take(&mut line).trim_end().to_string());
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_keeps_newlines_and_long_words() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa", "bb cc"]);
        assert_eq!(wrap("aa\nbb", 80), vec!["aa", "bb"]);
        assert_eq!(
            wrap("abcdefgh ij", 4),
            vec!["abcdefgh", "ij"],
            "a word wider than the line is not cut"
        );
        assert_eq!(wrap("", 10), vec![""]);
    }

    #[test]
    fn colour_is_added_only_when_on() {
        let plain = Terminal::plain();
        assert_eq!(plain.paint("1", "key"), "key");
        assert_eq!(plain.diff("a [-b-] {+c+}"), "a [-b-] {+c+}");
        let colour = Terminal {
            colour: true,
            ..plain
        };
        assert_eq!(colour.paint("1", "key"), "\x1b[1mkey\x1b[0m");
        assert_eq!(
            colour.diff("[-b-]{+c+}"),
            "\x1b[31m[-b-]\x1b[0m\x1b[32m{+c+}\x1b[0m"
        );
    }
}
