//! Key presets: named sets of request fields the key ignores because they
//! change on every request (or between clients) without changing the
//! answer. Applied to the canonical form only; the forwarded request is
//! never touched.
//!
//! A preset removes nothing from a request that does not have its fields,
//! so turning one on changes no existing key but those of the requests it
//! was made for. Each removal is reported ([`Removed`]) for `key explain`.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// The text a Claude Code billing block starts with; its `cch=` changes on
/// every request.
pub const BILLING_HEADER_PREFIX: &str = "x-anthropic-billing-header:";

/// A named set of fields the key ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Claude Code's volatile fields on Anthropic Messages requests: a
    /// leading `system` text block starting with
    /// `x-anthropic-billing-header:`, and `/metadata/user_id`.
    ClaudeCode,
    /// OpenAI's caller identity fields: `/user`, `/safety_identifier`,
    /// `/prompt_cache_key`, `/metadata`.
    OpenaiIdentity,
    /// Top-level fields sent at their documented default value.
    OpenaiDefaults,
}

/// Presets on when `key.presets` is not set.
pub const DEFAULT_PRESETS: [Preset; 1] = [Preset::ClaudeCode];

/// The identity fields `openai-identity` removes.
const OPENAI_IDENTITY: [&str; 4] = ["user", "safety_identifier", "prompt_cache_key", "metadata"];

/// Top-level fields whose value, when sent, is the documented default of
/// the OpenAI APIs (Chat Completions, Responses, Completions): sending it
/// and leaving it out ask for the same answer. A field sent as `null` is
/// at its default too.
fn is_openai_default(field: &str, value: &Value) -> bool {
    let number = |n: f64| value.as_f64() == Some(n);
    let empty_array = value.as_array().is_some_and(Vec::is_empty);
    match field {
        _ if value.is_null() => true,
        "stream" | "logprobs" | "echo" => value == &Value::Bool(false),
        "parallel_tool_calls" => value == &Value::Bool(true),
        "n" | "best_of" | "temperature" | "top_p" => number(1.0),
        "presence_penalty" | "frequency_penalty" => number(0.0),
        "tools" | "include" => empty_array,
        "service_tier" => value.as_str() == Some("auto"),
        _ => false,
    }
}

impl Preset {
    /// Every preset, in the order the docs list them.
    pub const ALL: [Preset; 3] = [
        Preset::ClaudeCode,
        Preset::OpenaiIdentity,
        Preset::OpenaiDefaults,
    ];

    /// The preset's name in config and `key explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::ClaudeCode => "claude-code",
            Preset::OpenaiIdentity => "openai-identity",
            Preset::OpenaiDefaults => "openai-defaults",
        }
    }

    /// Removes this preset's fields from a request's JSON body, pushing a
    /// [`Removed`] for each; `path` is the request path.
    pub fn apply(self, path: &str, body: &mut Value, removed: &mut Vec<Removed>) {
        let Value::Object(map) = body else {
            return;
        };
        let mut note = |pointer: String| {
            removed.push(Removed {
                by: By::Preset(self),
                pointer,
            })
        };
        match self {
            Preset::ClaudeCode => {
                if !is_anthropic_messages(path) {
                    return;
                }
                if let Some(Value::Array(blocks)) = map.get_mut("system") {
                    let billing = blocks.first().is_some_and(|block| {
                        block.get("type").and_then(Value::as_str) == Some("text")
                            && block
                                .get("text")
                                .and_then(Value::as_str)
                                .is_some_and(|t| t.starts_with(BILLING_HEADER_PREFIX))
                    });
                    if billing {
                        blocks.remove(0);
                        note("/system/0".into());
                    }
                }
                if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
                    if metadata.remove("user_id").is_some() {
                        note("/metadata/user_id".into());
                    }
                }
            }
            Preset::OpenaiIdentity => {
                for field in OPENAI_IDENTITY {
                    if map.remove(field).is_some() {
                        note(format!("/{field}"));
                    }
                }
            }
            Preset::OpenaiDefaults => {
                let defaults: Vec<String> = map
                    .iter()
                    .filter(|(field, value)| is_openai_default(field, value))
                    .map(|(field, _)| field.clone())
                    .collect();
                for field in defaults {
                    map.remove(&field);
                    note(format!("/{}", field.replace('~', "~0").replace('/', "~1")));
                }
            }
        }
    }
}

/// Anthropic Messages requests (`/v1/messages`, `/v1/messages/count_tokens`,
/// behind any path prefix): the only ones `claude-code` looks at, so an
/// OpenAI request's `metadata.user_id` stays in its key.
fn is_anthropic_messages(path: &str) -> bool {
    path.ends_with("/v1/messages") || path.ends_with("/v1/messages/count_tokens")
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown preset {s:?}: expected claude-code, openai-identity or openai-defaults")
            })
    }
}

/// What removed a field from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// A preset.
    Preset(Preset),
    /// A pointer in `key.ignore_fields`.
    IgnoreFields,
}

impl fmt::Display for By {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            By::Preset(preset) => write!(f, "preset {preset}"),
            By::IgnoreFields => f.write_str("key.ignore_fields"),
        }
    }
}

/// One field removed from a request's canonical form, and by what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The preset or setting that removed it.
    pub by: By,
    /// The JSON pointer of the field, as it was in the request.
    pub pointer: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(preset: Preset, path: &str, mut body: Value) -> (Value, Vec<String>) {
        let mut removed = Vec::new();
        preset.apply(path, &mut body, &mut removed);
        (body, removed.into_iter().map(|r| r.pointer).collect())
    }

    #[test]
    fn claude_code_removes_the_billing_block_and_the_session_id_on_messages_only() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "system": [
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.177.01c; cc_entrypoint=cli; cch=36ee5;"},
                {"type": "text", "text": "You are Claude Code."}
            ],
            "metadata": {"user_id": "user_abc_session_1"},
            "messages": [{"role": "user", "content": "hi"}]
        });
        let (out, removed) = apply(Preset::ClaudeCode, "/v1/messages", body.clone());
        assert_eq!(removed, ["/system/0", "/metadata/user_id"]);
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "You are Claude Code."}])
        );
        assert_eq!(out["metadata"], json!({}));
        // An OpenAI request keeps its metadata.user_id.
        let (out, removed) = apply(Preset::ClaudeCode, "/v1/chat/completions", body.clone());
        assert!(removed.is_empty());
        assert_eq!(out, body);
        // A system prompt that merely mentions the header is kept.
        let other =
            json!({"system": [{"type": "text", "text": "hello x-anthropic-billing-header:"}]});
        assert!(apply(Preset::ClaudeCode, "/v1/messages", other)
            .1
            .is_empty());
    }

    #[test]
    fn openai_identity_and_defaults() {
        let (_, removed) = apply(
            Preset::OpenaiIdentity,
            "/v1/responses",
            json!({"user": "u", "metadata": {"a": "b"}, "prompt_cache_key": "k", "model": "m"}),
        );
        assert_eq!(removed, ["/user", "/prompt_cache_key", "/metadata"]);
        let (out, removed) = apply(
            Preset::OpenaiDefaults,
            "/v1/chat/completions",
            json!({"model": "m", "stream": false, "n": 1.0, "tools": [], "include": [],
                   "logprobs": false, "temperature": 0, "stop": null, "stream_options": {"a": 1}}),
        );
        assert_eq!(
            out,
            json!({"model": "m", "temperature": 0, "stream_options": {"a": 1}})
        );
        assert_eq!(removed.len(), 6, "{removed:?}");
        let (_, removed) = apply(
            Preset::OpenaiDefaults,
            "/v1/chat/completions",
            json!({"stream": true, "n": 2, "tools": [{}]}),
        );
        assert!(removed.is_empty());
    }

    #[test]
    fn names_parse_and_print_the_same() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>().unwrap(), preset);
        }
        assert!("claude"
            .parse::<Preset>()
            .unwrap_err()
            .contains("claude-code"));
    }
}
