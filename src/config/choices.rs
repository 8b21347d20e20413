//! The settings that take one of a few words: the mode, the key scope and
//! the replay timing, each with the spelling used in config, headers and
//! logs.

use std::fmt;
use std::str::FromStr;

/// What the proxy does with a request on a cached route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Replay a hit; forward and record a miss.
    #[default]
    Auto,
    /// Always forward and re-record.
    Record,
    /// Replay a hit; answer a miss with 404, never contact the upstream.
    Replay,
    /// Forward everything, store nothing.
    Passthrough,
}

impl Mode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [Mode; 4] = [Mode::Auto, Mode::Record, Mode::Replay, Mode::Passthrough];

    /// The mode's name as it appears in config, headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Record => "record",
            Mode::Replay => "replay",
            Mode::Passthrough => "passthrough",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown mode {s:?}: expected one of auto, record, replay, passthrough")
            })
    }
}

/// Whether the caller's API key is part of the request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// One cache for everyone: a replay with a dummy key hits.
    #[default]
    Global,
    /// Each API key sees only its own recordings.
    ApiKey,
}

/// How a recorded stream is paced on replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    /// Send everything at once.
    #[default]
    Instant,
    /// Reproduce the recorded gaps between events.
    Recorded,
}

impl FromStr for Timing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "instant" => Ok(Timing::Instant),
            "recorded" => Ok(Timing::Recorded),
            other => Err(format!(
                "unknown replay timing {other:?}: expected instant or recorded"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_case_insensitively_and_reject_unknowns() {
        assert_eq!("Replay".parse::<Mode>().unwrap(), Mode::Replay);
        assert!("replay-only".parse::<Mode>().is_err());
    }
}
