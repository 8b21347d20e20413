//! `llmtape prune`: deletes the recordings (history and all) that every
//! given filter keeps: older than a duration (by the current recording's
//! `recorded_at`), a model, a route, a namespace; `--dry-run` lists them
//! instead. From a store or a fixtures folder.
//!
//! Without any filter it refuses (exit 2) rather than empty the store;
//! finding nothing to remove is not an error (a scheduled clean-up often
//! finds nothing).

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::cmd::filter::Filter;
use crate::cmd::listing::request_target;
use crate::error::CommandError;
use crate::record::recording::Recording;
use crate::store::Tier;

/// Which recordings `prune` deletes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// Only recordings made longer ago than this (humantime: `30d`, `12h`).
    pub older_than: Option<String>,
    /// Only those the filter keeps.
    pub filter: Filter,
    /// List what would go, delete nothing.
    pub dry_run: bool,
}

/// Deletes (or, with `dry_run`, lists) the selected recordings and prints
/// `removed N recording(s) from PLACE` (`would remove ...`).
pub fn run(
    tier: &dyn Tier,
    options: &Options,
    now: SystemTime,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let f = &options.filter;
    if options.older_than.is_none()
        && f.model.is_none()
        && f.route.is_none()
        && f.namespace.is_none()
    {
        return Err(CommandError::Usage(
            "prune needs at least one of --older-than, --model, --route, --namespace (to remove every recording, delete the store directory or the fixtures)".into(),
        ));
    }
    let cutoff = match &options.older_than {
        None => None,
        Some(text) => Some(cutoff(text, now)?),
    };
    let mut recordings = Vec::new();
    for item in tier.iter() {
        match item {
            Ok(recording) => recordings.push(recording),
            // Not prunable by what it holds; `rm` deletes it by key.
            Err(error) if error.is_corrupt() => {}
            Err(error) => return Err(error.into()),
        }
    }
    let chosen = select(&recordings, f, cutoff);
    let location = tier.location().display();
    if options.dry_run {
        for recording in &chosen {
            let m = &recording.meta;
            writeln!(
                out,
                "{}  {}  {} {}  {}",
                m.key,
                m.recorded_at,
                m.request.method,
                request_target(recording),
                m.model.as_deref().unwrap_or("-")
            )?;
        }
        writeln!(
            out,
            "would remove {} recording(s) from {location}",
            chosen.len()
        )?;
        return Ok(());
    }
    let mut removed = 0usize;
    for recording in &chosen {
        if tier.remove(&recording.key())? {
            removed += 1;
        }
    }
    tier.flush()?;
    writeln!(out, "removed {removed} recording(s) from {location}")?;
    Ok(())
}

/// The moment `--older-than TEXT` means, counted back from `now`.
fn cutoff(text: &str, now: SystemTime) -> Result<SystemTime, CommandError> {
    let usage = |why: String| {
        CommandError::Usage(format!(
            "--older-than {text:?} is not a duration ({why}); write e.g. 30d, 12h or 90m"
        ))
    };
    let age: Duration = humantime::parse_duration(text).map_err(|e| usage(e.to_string()))?;
    now.checked_sub(age)
        .ok_or_else(|| usage("longer ago than the clock goes".into()))
}

/// The recordings every set filter keeps, in the order given. A recording
/// whose time does not parse is never older than anything.
pub(crate) fn select<'a>(
    recordings: &'a [Recording],
    filter: &Filter,
    cutoff: Option<SystemTime>,
) -> Vec<&'a Recording> {
    recordings
        .iter()
        .filter(|recording| filter.keeps(recording))
        .filter(|recording| {
            cutoff.is_none_or(|cutoff| {
                humantime::parse_rfc3339_weak(&recording.meta.recorded_at)
                    .is_ok_and(|at| at < cutoff)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RequestKey;
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-03-01T00:00:00Z").unwrap()
    }

    fn recordings() -> Vec<Recording> {
        [
            ("aa", Some("gpt-4o"), "2026-01-01T00:00:00.000Z"),
            ("bb", Some("gpt-4o-mini"), "2026-02-27T00:00:00.000Z"),
            ("cc", None, "2026-02-28T12:00:00.000Z"),
            ("dd", Some("gpt-4o"), "not a time"),
        ]
        .into_iter()
        .map(|(hex, model, at)| test_entry(&hex.repeat(32), "{}", "fp", model, at))
        .collect()
    }

    fn keys(chosen: &[&Recording]) -> Vec<String> {
        chosen
            .iter()
            .map(|r| r.meta.key.to_hex()[..2].to_string())
            .collect()
    }

    #[test]
    fn selection_is_every_filter_at_once_by_the_recorded_time() {
        let all = recordings();
        let none = Filter::default();
        let older = |days: u64| Some(now() - DAY * days as u32);
        assert_eq!(keys(&select(&all, &none, older(30))), ["aa"]);
        assert_eq!(keys(&select(&all, &none, older(1))), ["aa", "bb"]);
        assert_eq!(
            keys(&select(&all, &none, Some(now()))),
            ["aa", "bb", "cc"],
            "an unreadable time is never old"
        );
        let gpt4o = Filter {
            model: Some("gpt-4o".into()),
            ..Filter::default()
        };
        assert_eq!(keys(&select(&all, &gpt4o, None)), ["aa", "dd"]);
        assert_eq!(keys(&select(&all, &gpt4o, older(1))), ["aa"]);
        let embeddings = Filter {
            route: Some("embeddings".into()),
            ..Filter::default()
        };
        assert!(select(&all, &embeddings, None).is_empty());
    }

    #[test]
    fn older_than_is_a_duration_and_some_filter_is_required() {
        assert_eq!(cutoff("30d", now()).unwrap(), now() - DAY * 30);
        assert_eq!(cutoff("12h", now()).unwrap(), now() - DAY / 2);
        let error = cutoff("30 days ago", now()).unwrap_err();
        assert!(matches!(error, CommandError::Usage(_)));
        assert!(
            error
                .to_string()
                .starts_with("--older-than \"30 days ago\" is not a duration ("),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let refused = run(&store, &Options::default(), now(), &mut Vec::new()).unwrap_err();
        assert!(matches!(refused, CommandError::Usage(_)));
    }

    #[test]
    fn a_dry_run_lists_and_keeps_and_a_run_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for recording in recordings() {
            let key: RequestKey = recording.key();
            store.put(&key, &recording, 5).unwrap();
        }
        let options = Options {
            older_than: Some("1d".into()),
            dry_run: true,
            ..Options::default()
        };
        let mut out = Vec::new();
        run(&store, &options, now(), &mut out).unwrap();
        let place = dir.path().display();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{}  2026-01-01T00:00:00.000Z  POST /v1/chat/completions  gpt-4o\n\
                 {}  2026-02-27T00:00:00.000Z  POST /v1/chat/completions  gpt-4o-mini\n\
                 would remove 2 recording(s) from {place}\n",
                "aa".repeat(32),
                "bb".repeat(32)
            )
        );
        assert_eq!(store.len(), 4);
        let mut out = Vec::new();
        let options = Options {
            dry_run: false,
            ..options
        };
        run(&store, &options, now(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("removed 2 recording(s) from {place}\n")
        );
        assert_eq!(store.len(), 2);
        let mut out = Vec::new();
        run(&store, &options, now(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("removed 0 recording(s) from {place}\n"),
            "nothing left to prune is no error"
        );
    }
}
