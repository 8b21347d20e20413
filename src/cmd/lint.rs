//! What must never be in a fixture: credentials. Used by `llmtape lint`
//! and by `export`, which refuses to write a fixture that fails it.
//!
//! Recordings never hold request credentials (see [`crate::record::redact`]); this
//! catches what slipped in another way: a key pasted into a prompt, a
//! token echoed by an upstream, a hand-edited file.

use serde_json::Value;

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
}
