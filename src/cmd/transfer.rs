//! What `export` and `import` share: the summary line, the skipped list
//! and the progress line.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::error::CommandError;

/// Below this many recordings, progress is not worth printing.
const PROGRESS_MIN: usize = 200;

/// What an export or import did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Files or entries written.
    pub written: usize,
    /// Already identical, left alone.
    pub unchanged: usize,
    /// Left out, with the reason: (what, why).
    pub skipped: Vec<(String, String)>,
}

impl Summary {
    /// The one-line summary.
    pub fn line(&self, verb: &str, place: &Path) -> String {
        format!(
            "{verb} {} recording(s) {} {}: {} written, {} unchanged, {} skipped",
            self.written + self.unchanged + self.skipped.len(),
            if verb == "exported" { "to" } else { "from" },
            place.display(),
            self.written,
            self.unchanged,
            self.skipped.len()
        )
    }

    /// Prints the summary line to `out` and each skipped recording to
    /// `err`; anything skipped makes it [`CommandError::Incomplete`]
    /// (exit 1), since a partial copy must not pass a script silently.
    pub fn report(
        &self,
        verb: &str,
        place: &Path,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<(), CommandError> {
        writeln!(out, "{}", self.line(verb, place))?;
        for (what, why) in &self.skipped {
            writeln!(err, "llmtape: skipped {what}: {why}")?;
        }
        if self.skipped.is_empty() {
            Ok(())
        } else {
            Err(CommandError::Incomplete(format!(
                "{} recording(s) skipped",
                self.skipped.len()
            )))
        }
    }
}

/// Progress on stderr: a rewritten line on a terminal, a line every few
/// thousand otherwise; nothing for small jobs.
pub(crate) struct Progress {
    verb: &'static str,
    total: usize,
    terminal: bool,
}

impl Progress {
    /// A progress line for `total` steps.
    pub(crate) fn new(verb: &'static str, total: usize) -> Self {
        Progress {
            verb,
            total,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// `done` steps are done.
    pub(crate) fn tick(&self, done: usize) {
        if self.total < PROGRESS_MIN {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal && (done % 100 == 0 || done == self.total) {
            let _ = write!(err, "\r{} {done}/{}", self.verb, self.total);
            if done == self.total {
                let _ = writeln!(err);
            }
        } else if !self.terminal && (done % 5000 == 0 || done == self.total) {
            let _ = writeln!(err, "{} {done}/{}", self.verb, self.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_everything_and_fails_when_something_was_skipped() {
        let mut summary = Summary {
            written: 2,
            unchanged: 1,
            skipped: Vec::new(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        summary
            .report("exported", Path::new("fx"), &mut out, &mut err)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "exported 3 recording(s) to fx: 2 written, 1 unchanged, 0 skipped\n"
        );
        assert!(err.is_empty());

        summary.skipped.push(("a.json".into(), "not JSON".into()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let error = summary
            .report("imported", Path::new("fx"), &mut out, &mut err)
            .unwrap_err();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "imported 4 recording(s) from fx: 2 written, 1 unchanged, 1 skipped\n"
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "llmtape: skipped a.json: not JSON\n"
        );
        assert_eq!(error.to_string(), "1 recording(s) skipped");
    }
}
