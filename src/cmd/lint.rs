//! `llmtape lint`, and what must never be in a fixture: credentials. The
//! scan is also used by `export`, which refuses to write a fixture that
//! fails it.
//!
//! Recordings never hold request credentials (see [`crate::record::redact`]); this
//! catches what slipped in another way: a key pasted into a prompt, a
//! token echoed by an upstream, a hand-edited file.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::error::CommandError;
use crate::store::fixtures;

// A credential header in a fixture is a leak whatever its value; the list
// is the one redaction uses, so what is never recorded and what lint
// reports cannot drift apart.
use crate::record::redact::is_credential;

/// Shortest run after `sk-` that counts as a key; real keys are far
/// longer, and test dummies like `sk-test-dummy` stay below it.
const MIN_KEY_TAIL: usize = 20;

/// Shortest bearer token that counts.
const MIN_BEARER_TOKEN: usize = 16;

/// One suspicious value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// JSON pointer to the value in the fixture.
    pub pointer: String,
    /// What it looks like.
    pub what: &'static str,
}

/// `lint DIR`: checks every fixture file under `dir` (readable, JSON, a
/// valid fixture, no credential-like value) and prints each problem on its
/// own line, then a count; any problem makes it
/// [`CommandError::Incomplete`] (exit 1).
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<(), CommandError> {
    let files = fixtures::fixture_files(dir)?;
    let mut problems = 0usize;
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                problems += 1;
                writeln!(out, "{}: cannot read: {error}", path.display())?;
                continue;
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Err(error) => {
                problems += 1;
                writeln!(out, "{}: not JSON: {error}", path.display())?;
                continue;
            }
            Ok(value) => {
                for finding in scan(&value) {
                    problems += 1;
                    writeln!(
                        out,
                        "{}: {}: looks like {}",
                        path.display(),
                        finding.pointer,
                        finding.what
                    )?;
                }
            }
        }
        if let Err(error) = fixtures::parse(path, &text)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                fixtures::from_fixture(&file)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
        {
            problems += 1;
            writeln!(out, "{error}")?;
        }
    }
    writeln!(
        out,
        "{} fixture file(s) checked, {problems} problem(s)",
        files.len()
    )?;
    if problems == 0 {
        Ok(())
    } else {
        Err(CommandError::Incomplete(format!(
            "{problems} problem(s) in {}",
            dir.display()
        )))
    }
}

/// Every credential-like value in a fixture document.
pub fn scan(value: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}

fn walk(value: &Value, path: &mut String, out: &mut Vec<Finding>) {
    match value {
        Value::String(text) => {
            if let Some(what) = credential_in(text) {
                out.push(Finding {
                    pointer: path.clone(),
                    what,
                });
            }
        }
        Value::Array(items) => {
            if let [Value::String(name), Value::String(_)] = items.as_slice() {
                if is_credential(name) {
                    out.push(Finding {
                        pointer: path.clone(),
                        what: "a credential header",
                    });
                }
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                walk(item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if is_credential(key) && item.is_string() {
                    out.push(Finding {
                        pointer: path.clone(),
                        what: "a credential header",
                    });
                }
                walk(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// What kind of credential `text` contains, if any.
pub fn credential_in(text: &str) -> Option<&'static str> {
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    for (i, _) in text.match_indices("sk-") {
        let tail = text[i + 3..].chars().take_while(|c| token_char(*c)).count();
        let starts_word = text[..i].chars().next_back().is_none_or(|c| !token_char(c));
        if tail >= MIN_KEY_TAIL && starts_word {
            return Some("an API key (sk-...)");
        }
    }
    let lower = text.to_ascii_lowercase();
    for (i, _) in lower.match_indices("bearer ") {
        let token = text[i + 7..]
            .chars()
            .take_while(|c| token_char(*c) || matches!(c, '.' | '~' | '+' | '/' | '='))
            .count();
        if token >= MIN_BEARER_TOKEN {
            return Some("a bearer token");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_keys_tokens_and_credential_headers() {
        let doc = json!({
            "request": {"body": {"messages": [{"content": concat!("my key is sk-", "proj-abcdefghijklmnopqrstuvwxyz012345")}]}},
            "response": {"headers": [["content-type", "application/json"], ["Authorization", "x"]]},
            "note": "Bearer abcdefghijklmnopqrstuvwxyz",
        });
        let found = scan(&doc);
        let pointers: Vec<&str> = found.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec![
                "/request/body/messages/0/content",
                "/response/headers/1",
                "/note"
            ]
        );
    }

    #[test]
    fn dummies_and_prose_pass() {
        for text in [
            "sk-test-dummy",
            concat!("ask", "-questions-about-everything-here"),
            "a bearer of news",
            "Bearer sk-test-dummy",
        ] {
            assert_eq!(credential_in(text), None, "{text}");
        }
    }

    #[test]
    fn lint_reports_each_problem_on_its_own_line_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let entry = crate::record::recording::test_entry(
            &"ab".repeat(32),
            "{}",
            "fp",
            Some("m"),
            "2026-01-01T00:00:00.000Z",
        );
        let good = fixtures::render(&fixtures::to_fixture(&entry, &[]));
        std::fs::write(dir.path().join("a.json"), &good).unwrap();
        let mut out = Vec::new();
        run(dir.path(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1 fixture file(s) checked, 0 problem(s)\n"
        );

        std::fs::write(dir.path().join("b.json"), "{").unwrap();
        let leaky = good.replace(
            r#""model": "m""#,
            r#""model": "Bearer abcdefghijklmnopqrstuvwxyz""#,
        );
        assert_ne!(leaky, good);
        std::fs::write(dir.path().join("c.json"), leaky).unwrap();
        let mut out = Vec::new();
        let error = run(dir.path(), &mut out).unwrap_err();
        let text = String::from_utf8(out).unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        assert_eq!(
            text,
            format!(
                "{b}: not JSON: EOF while parsing an object at line 1 column 1\n\
                 {c}: /request/body/value/model: looks like a bearer token\n\
                 {c}: /model: looks like a bearer token\n\
                 3 fixture file(s) checked, 3 problem(s)\n",
                b = at("b.json"),
                c = at("c.json"),
            )
        );
        assert_eq!(
            error.to_string(),
            format!("3 problem(s) in {}", dir.path().display())
        );
    }
}
