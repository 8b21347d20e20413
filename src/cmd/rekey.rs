//! `llmtape rekey [--dry-run]`: recomputes every recording's key under the
//! current key rules (presets, ignore_fields) from its stored request, on
//! a store or a fixtures folder, so a user who changes the rules keeps the
//! recordings they already have.
//!
//! A recording whose key changes moves to its new key; recordings whose
//! new keys are the same merge: the newest (by `recorded_at`) becomes the
//! recording, the others and their histories go to history (newest kept,
//! at most `store.history`). A sequence call keeps its number: call N is
//! re-derived from the new plain key.
//!
//! What it cannot do, it says: the stored request is the canonical one,
//! with what the rules of its day removed already gone, so a rule turned
//! off cannot bring a field back (such keys stay as they are: the request
//! without the field); and with `key.scope = "api-key"` a key mixes in a
//! hash of the caller's credential, which no recording keeps, so rekey
//! refuses.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use serde_json::Value;

use crate::cmd::listing::short_key;
use crate::config::{Config, Scope};
use crate::error::CommandError;
use crate::key::{
    call_key, remove_fields, Canonical, CanonicalBody, FormPart, KeyRules, RequestKey,
};
use crate::record::recording::{RecordedRequest, Recording, RequestBody};
use crate::store::Tier;

/// What `rekey` does.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// Report what would change, change nothing.
    pub dry_run: bool,
}

/// Rekeys every recording of `tier` under `config`'s key rules and
/// prints what changed and what merged.
pub fn run(
    tier: &dyn Tier,
    config: &Config,
    options: &Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    if config.key.scope == Scope::ApiKey {
        return Err(CommandError::Usage(
            "rekey cannot recompute keys under key.scope = \"api-key\": each key mixes in a hash of the caller's credential, which recordings never keep; set key.scope = \"global\" to rekey".into(),
        ));
    }
    let rules = config.key.rules();
    // First pass: old key -> new key, bodies dropped as they go.
    let mut moves: BTreeMap<RequestKey, Vec<(RequestKey, String)>> = BTreeMap::new();
    let mut total = 0usize;
    for item in tier.iter() {
        let recording = match item {
            Ok(recording) => recording,
            Err(error) if error.is_corrupt() => {
                writeln!(
                    err,
                    "skipped an unreadable recording ({error}); it keeps its key"
                )?;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        total += 1;
        let old = recording.meta.key;
        let new = match new_key(&recording, &rules) {
            Some(new) => new,
            None => {
                writeln!(
                    err,
                    "skipped {}: its stored request body does not decode; it keeps its key",
                    short_key(&old)
                )?;
                old
            }
        };
        moves
            .entry(new)
            .or_default()
            .push((old, recording.meta.recorded_at.clone()));
    }
    // A group needs writing when one of its members moves into it.
    let groups: Vec<(RequestKey, Vec<RequestKey>)> = moves
        .into_iter()
        .filter(|(new, members)| members.iter().any(|(old, _)| old != new))
        .map(|(new, mut members)| {
            members.sort_by(|a, b| a.1.cmp(&b.1));
            (new, members.into_iter().map(|(old, _)| old).collect())
        })
        .collect();
    let changed: usize = groups
        .iter()
        .map(|(new, members)| members.iter().filter(|old| *old != new).count())
        .sum();
    let merged = groups
        .iter()
        .filter(|(_, members)| members.len() > 1)
        .count();
    let verb = if options.dry_run {
        "would move"
    } else {
        "moved"
    };
    for (new, members) in &groups {
        for old in members.iter().filter(|old| *old != new) {
            writeln!(out, "{verb} {} -> {}", short_key(old), short_key(new))?;
        }
        if members.len() > 1 {
            let names: Vec<String> = members.iter().map(short_key).collect();
            writeln!(
                out,
                "{} {} into {}: the newest ({}) is kept, the others go to its history",
                if options.dry_run {
                    "would merge"
                } else {
                    "merged"
                },
                names.join(", "),
                short_key(new),
                names.last().expect("a merge has members"),
            )?;
        }
    }
    if !options.dry_run && !groups.is_empty() {
        write_groups(tier, &groups, config.store.history)?;
        tier.flush()?;
    }
    writeln!(
        out,
        "{} {total} recording(s) in {} under presets [{}] and ignore_fields [{}]: {changed} key(s) {}, {merged} merge(s)",
        if options.dry_run { "checked" } else { "rekeyed" },
        tier.location().display(),
        rules.presets.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
        rules.ignore_fields.join(", "),
        if options.dry_run { "would change" } else { "changed" },
    )?;
    Ok(())
}

/// Reads every member of every group, then removes the old keys, then
/// writes each group under its new key: reading everything first keeps a
/// key that is both one recording's old key and another's new key safe.
fn write_groups(
    tier: &dyn Tier,
    groups: &[(RequestKey, Vec<RequestKey>)],
    history_limit: usize,
) -> Result<(), CommandError> {
    let mut read = Vec::with_capacity(groups.len());
    for (new, members) in groups {
        let mut recordings = Vec::new();
        for old in members {
            let mut history = tier.history(old)?;
            if let Some(current) = tier.get(old)? {
                history.push(current);
            }
            recordings.extend(history);
        }
        read.push((*new, members, recordings));
    }
    for (new, members, _) in &read {
        for old in members.iter() {
            if old != new {
                tier.remove(old)?;
            }
        }
    }
    for (new, _, mut recordings) in read {
        for recording in &mut recordings {
            recording.meta.key = new;
        }
        // Oldest first; a stable sort keeps each key's own order on ties.
        recordings.sort_by(|a, b| a.meta.recorded_at.cmp(&b.meta.recorded_at));
        let Some(current) = recordings.pop() else {
            continue;
        };
        let skip = recordings.len().saturating_sub(history_limit);
        tier.replace(&new, &current, &recordings[skip..])?;
    }
    Ok(())
}

/// The key `recording` has under `rules`; `None` when its stored request
/// cannot be read back.
pub fn new_key(recording: &Recording, rules: &KeyRules) -> Option<RequestKey> {
    let canonical = canonical_of(&recording.meta.request, rules)?;
    Some(call_key(&canonical.key(), recording.meta.call.unwrap_or(1)))
}

/// The canonical form of a stored request under `rules`. The stored
/// request is already canonical, so only the rules are applied again.
fn canonical_of(request: &RecordedRequest, rules: &KeyRules) -> Option<Canonical> {
    let mut removed = Vec::new();
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).ok();
    let body = match &request.body {
        RequestBody::Empty => CanonicalBody::Empty,
        RequestBody::Text(text) => CanonicalBody::Bytes(text.as_bytes().to_vec()),
        RequestBody::Base64(text) => CanonicalBody::Bytes(b64(text)?),
        RequestBody::Json(value) => match form_parts(value, b64) {
            Some(parts) => CanonicalBody::Multipart(parts),
            None => {
                let mut value = value.clone();
                remove_fields(&request.path, &mut value, rules, &mut removed);
                CanonicalBody::Json(value)
            }
        },
    };
    Some(Canonical {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        body,
        namespace: request.namespace.clone(),
        tenant: None,
        removed,
        // The keyed headers were kept with the request, canonical already.
        headers: request.headers.clone(),
    })
}

/// A multipart form as `RecordedRequest::from_canonical` stores it: an
/// array of objects with exactly `headers` (strings) and `content_base64`.
fn form_parts(value: &Value, b64: impl Fn(&str) -> Option<Vec<u8>>) -> Option<Vec<FormPart>> {
    let items = value.as_array()?;
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|item| {
            let object = item.as_object().filter(|o| o.len() == 2)?;
            let headers = object
                .get("headers")?
                .as_array()?
                .iter()
                .map(|h| h.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()?;
            let content = b64(object.get("content_base64")?.as_str()?)?;
            Some(FormPart { headers, content })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Preset, RequestParts};
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    fn recording_of(body: &str, path: &str, at: &str, rules: &KeyRules) -> Recording {
        let canonical = Canonical::new(
            &RequestParts {
                anthropic_version: None,
                anthropic_beta: Vec::new(),
                method: "POST",
                path,
                query: None,
                content_type: Some("application/json"),
                body: body.as_bytes(),
                namespace: None,
                credential: None,
            },
            rules,
        );
        let mut recording = test_entry(&canonical.key().to_hex(), "{}", "fp", Some("m"), at);
        recording.meta.request = RecordedRequest::from_canonical(&canonical);
        recording
    }

    fn config(toml: &str) -> Config {
        Config::from_toml(toml).unwrap()
    }

    #[test]
    fn the_stored_request_gives_back_the_key_it_was_recorded_under() {
        let rules = Config::defaults().key.rules();
        let form =
            "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n";
        for (body, content_type) in [
            (r#"{"model":"m","user":"u","n":1.0}"#, "application/json"),
            ("not json", "text/plain"),
            (form, "multipart/form-data; boundary=b"),
        ] {
            let canonical = Canonical::new(
                &RequestParts {
                    anthropic_version: None,
                    anthropic_beta: Vec::new(),
                    method: "POST",
                    path: "/v1/audio/transcriptions",
                    query: Some("b=1&a=2"),
                    content_type: Some(content_type),
                    body: body.as_bytes(),
                    namespace: Some("ns"),
                    credential: None,
                },
                &rules,
            );
            let mut recording = test_entry(&canonical.key().to_hex(), "{}", "fp", None, "t");
            recording.meta.request = RecordedRequest::from_canonical(&canonical);
            assert_eq!(new_key(&recording, &rules), Some(canonical.key()), "{body}");
            recording.meta.call = Some(3);
            assert_eq!(
                new_key(&recording, &rules),
                Some(call_key(&canonical.key(), 3))
            );
        }
    }

    #[test]
    fn new_rules_move_and_merge_keys_and_dry_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old_rules = KeyRules {
            presets: vec![],
            ..Config::defaults().key.rules()
        };
        let turn = |cch: &str| {
            format!(
                r#"{{"model":"claude","system":[{{"type":"text","text":"x-anthropic-billing-header: cch={cch};"}},{{"type":"text","text":"hi"}}]}}"#
            )
        };
        let a = recording_of(
            &turn("1"),
            "/v1/messages",
            "2026-01-01T00:00:00.000Z",
            &old_rules,
        );
        let b = recording_of(
            &turn("2"),
            "/v1/messages",
            "2026-01-02T00:00:00.000Z",
            &old_rules,
        );
        let plain = recording_of(
            r#"{"model":"gpt"}"#,
            "/v1/chat/completions",
            "2026-01-03T00:00:00.000Z",
            &old_rules,
        );
        for r in [&a, &b, &plain] {
            store.put(&r.key(), r, 5).unwrap();
        }
        let config = config("");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(
            &store,
            &config,
            &Options { dry_run: true },
            &mut out,
            &mut err,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("2 key(s) would change, 1 merge(s)"), "{text}");
        assert!(text.contains("would merge"), "{text}");
        assert!(store.get(&a.key()).unwrap().is_some(), "dry run wrote");

        let mut out = Vec::new();
        run(&store, &config, &Options::default(), &mut out, &mut err).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("rekeyed 3 recording(s)"), "{text}");
        assert!(text.contains("2 key(s) changed, 1 merge(s)"), "{text}");
        let new = new_key(&a, &config.key.rules()).unwrap();
        assert_eq!(new_key(&b, &config.key.rules()), Some(new));
        assert!(store.get(&a.key()).unwrap().is_none());
        assert!(store.get(&b.key()).unwrap().is_none());
        let current = store.get(&new).unwrap().unwrap();
        assert_eq!(
            current.meta.recorded_at, b.meta.recorded_at,
            "the newest wins"
        );
        assert_eq!(current.meta.key, new);
        let history = store.history(&new).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].meta.recorded_at, a.meta.recorded_at);
        assert!(store.get(&plain.key()).unwrap().is_some(), "untouched");

        // Run again: nothing left to change.
        let mut out = Vec::new();
        run(&store, &config, &Options::default(), &mut out, &mut err).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("0 key(s) changed, 0 merge(s)"), "{text}");
        assert!(config.key.presets.contains(&Preset::ClaudeCode));
    }

    #[test]
    fn a_fixtures_folder_is_rekeyed_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = crate::store::FixtureDir::load(dir.path()).unwrap();
        let old_rules = KeyRules {
            presets: vec![],
            ..Config::defaults().key.rules()
        };
        let body = r#"{"model":"gpt","stream":false}"#;
        let recording = recording_of(
            body,
            "/v1/chat/completions",
            "2026-01-01T00:00:00.000Z",
            &old_rules,
        );
        fixtures
            .put(&recording.key(), &recording, 5, false)
            .unwrap();
        let before = crate::store::fixtures::fixture_files(dir.path()).unwrap();
        let config = config("[key]\npresets = [\"openai-defaults\"]\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(&fixtures, &config, &Options::default(), &mut out, &mut err).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1 key(s) changed, 0 merge(s)"), "{text}");
        let new = new_key(&recording, &config.key.rules()).unwrap();
        assert_ne!(new, recording.key());
        let reloaded = crate::store::FixtureDir::load(dir.path()).unwrap();
        assert!(reloaded.get(&recording.key()).is_none());
        assert_eq!(reloaded.get(&new).unwrap().body, recording.body);
        let after = crate::store::fixtures::fixture_files(dir.path()).unwrap();
        assert_eq!(after.len(), 1);
        assert_ne!(after, before, "the file moved to its new key's name");
    }

    #[test]
    fn the_api_key_scope_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let error = run(
            &store,
            &config("[key]\nscope = \"api-key\"\n"),
            &Options::default(),
            &mut out,
            &mut err,
        )
        .unwrap_err();
        assert_eq!(error.code(), 2);
        assert!(error.to_string().contains("key.scope"), "{error}");
    }
}
