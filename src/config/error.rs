//! The one error type of configuration: every problem in one line, each
//! naming its key and the fix.

use std::path::PathBuf;

/// A configuration that cannot be used; the message lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{origin}: {}", one_line(&source.to_string()))]
    Syntax {
        /// The file, or "configuration".
        origin: String,
        /// What the TOML parser said (the message shows it in one line).
        source: toml::de::Error,
    },
    /// One or more values are wrong; each names its key and the fix.
    #[error("{origin}: {}", problems.join("; "))]
    Invalid {
        /// The file, or "configuration".
        origin: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// A parser's message in one line (toml's span pictures take several).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
