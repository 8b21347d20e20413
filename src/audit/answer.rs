//! What an answer says once the transport is stripped: per choice the
//! text, tool calls, finish reason and token logprobs, read from one JSON
//! body or from a stream of chunks (chat, completions, Responses API or
//! Anthropic Messages, whose one answer is choice 0; its thinking is not
//! compared, its text, tool calls and stop reason are).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::record::recording::Recording;
use crate::record::sse;

/// One choice of an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Choice {
    /// The choice's index.
    pub index: u64,
    /// Message content / completion text / output text.
    pub text: String,
    /// Tool calls as canonical JSON text ("" when none).
    pub tool_calls: String,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Token logprobs, in order.
    pub logprobs: Vec<TokenLogprob>,
}

/// One token and its log probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    /// The token text.
    pub token: String,
    /// Its natural-log probability.
    pub logprob: f64,
}

/// What a recording says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Answer {
    /// Choices by index.
    pub choices: Vec<Choice>,
    /// For answers without choices (embeddings, models, ...): the body's
    /// canonical JSON without volatile fields, so content can still be
    /// compared.
    pub other: Option<String>,
}

/// Reads what a recording says.
pub fn answer_of(entry: &Recording) -> Answer {
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    let mut tools: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    match &entry.meta.stream {
        Some(_) => {
            for (_, event) in entry.events() {
                let (_, data) = sse::fields(&event);
                if let Ok(chunk) = serde_json::from_str::<Value>(&data) {
                    absorb_chunk(&chunk, &mut choices, &mut tools);
                }
            }
            // Anthropic tool inputs arrive as JSON text in pieces.
            for call in tools.values_mut().flatten() {
                if let Some(text) = call["input"].as_str() {
                    if let Ok(input) = serde_json::from_str::<Value>(text) {
                        call["input"] = input;
                    }
                }
            }
        }
        None => {
            let Ok(body) = serde_json::from_slice::<Value>(&entry.body) else {
                return Answer {
                    choices: Vec::new(),
                    other: Some(String::from_utf8_lossy(&entry.body).into_owned()),
                };
            };
            if body.get("choices").is_some() {
                absorb_chunk(&body, &mut choices, &mut tools);
            } else if body.get("output").is_some() {
                absorb_response(&body, &mut choices);
            } else if body["type"] == "message" && body["content"].is_array() {
                absorb_message(&body, &mut choices, &mut tools);
            } else {
                return Answer {
                    choices: Vec::new(),
                    other: Some(stable_content(&body)),
                };
            }
        }
    }
    for (index, calls) in tools {
        choices.entry(index).or_default().tool_calls =
            String::from_utf8_lossy(&crate::key::canonical_json(&Value::Array(calls))).into_owned();
    }
    Answer {
        choices: choices
            .into_iter()
            .map(|(index, mut c)| {
                c.index = index;
                c
            })
            .collect(),
        other: None,
    }
}

/// Folds a chat/completions body or stream chunk, or a Responses API
/// event, into the choices.
fn absorb_chunk(
    chunk: &Value,
    choices: &mut BTreeMap<u64, Choice>,
    tools: &mut BTreeMap<u64, Vec<Value>>,
) {
    if let Some(kind) = chunk.get("type").and_then(Value::as_str) {
        match kind {
            "response.output_text.delta" => {
                let c = choices
                    .entry(chunk["output_index"].as_u64().unwrap_or(0))
                    .or_default();
                c.text.push_str(chunk["delta"].as_str().unwrap_or(""));
                for lp in chunk["logprobs"].as_array().into_iter().flatten() {
                    push_logprob(c, lp);
                }
            }
            // Anthropic Messages stream events.
            "content_block_start" if chunk["content_block"]["type"] == "tool_use" => {
                let block = &chunk["content_block"];
                tools
                    .entry(0)
                    .or_default()
                    .push(serde_json::json!({"name": block["name"], "input": ""}));
            }
            "content_block_delta" => {
                let delta = &chunk["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => choices
                        .entry(0)
                        .or_default()
                        .text
                        .push_str(delta["text"].as_str().unwrap_or("")),
                    Some("input_json_delta") => {
                        if let Some(call) = tools.entry(0).or_default().last_mut() {
                            let merged = format!(
                                "{}{}",
                                call["input"].as_str().unwrap_or(""),
                                delta["partial_json"].as_str().unwrap_or("")
                            );
                            call["input"] = Value::String(merged);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = chunk["delta"]["stop_reason"].as_str() {
                    choices.entry(0).or_default().finish_reason = Some(reason.to_string());
                }
            }
            "response.completed" | "response.incomplete" => {
                let status = chunk["response"]["status"].as_str().map(String::from);
                for c in choices.values_mut() {
                    c.finish_reason.clone_from(&status);
                }
            }
            _ => {}
        }
        return;
    }
    for item in chunk["choices"].as_array().into_iter().flatten() {
        let index = item["index"].as_u64().unwrap_or(0);
        let c = choices.entry(index).or_default();
        let message = item.get("message").or_else(|| item.get("delta"));
        if let Some(message) = message {
            c.text.push_str(message["content"].as_str().unwrap_or(""));
            for call in message["tool_calls"].as_array().into_iter().flatten() {
                merge_tool_call(tools.entry(index).or_default(), call);
            }
        }
        c.text.push_str(item["text"].as_str().unwrap_or(""));
        if let Some(reason) = item["finish_reason"].as_str() {
            c.finish_reason = Some(reason.to_string());
        }
        // chat: logprobs.content[]; completions: logprobs.tokens + token_logprobs
        for lp in item["logprobs"]["content"].as_array().into_iter().flatten() {
            push_logprob(c, lp);
        }
        if let (Some(tokens), Some(values)) = (
            item["logprobs"]["tokens"].as_array(),
            item["logprobs"]["token_logprobs"].as_array(),
        ) {
            for (token, value) in tokens.iter().zip(values) {
                if let (Some(token), Some(logprob)) = (token.as_str(), value.as_f64()) {
                    c.logprobs.push(TokenLogprob {
                        token: token.to_string(),
                        logprob,
                    });
                }
            }
        }
    }
}

fn push_logprob(choice: &mut Choice, lp: &Value) {
    if let (Some(token), Some(logprob)) = (lp["token"].as_str(), lp["logprob"].as_f64()) {
        choice.logprobs.push(TokenLogprob {
            token: token.to_string(),
            logprob,
        });
    }
}

/// Streamed tool calls arrive as fragments keyed by `index`; whole ones as
/// complete objects. Either way the result is one object per call.
fn merge_tool_call(calls: &mut Vec<Value>, fragment: &Value) {
    let index = fragment["index"].as_u64().map(|i| i as usize);
    match index {
        Some(i) if i < calls.len() => {
            let call = &mut calls[i];
            if let Some(args) = fragment["function"]["arguments"].as_str() {
                let merged = format!(
                    "{}{args}",
                    call["function"]["arguments"].as_str().unwrap_or("")
                );
                call["function"]["arguments"] = Value::String(merged);
            }
        }
        _ => {
            let mut call = fragment.clone();
            if let Some(map) = call.as_object_mut() {
                map.remove("index");
            }
            calls.push(call);
        }
    }
}

/// A whole Anthropic message: its text blocks, tool calls and stop reason
/// as choice 0.
fn absorb_message(
    body: &Value,
    choices: &mut BTreeMap<u64, Choice>,
    tools: &mut BTreeMap<u64, Vec<Value>>,
) {
    let c = choices.entry(0).or_default();
    for block in body["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => c.text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => tools
                .entry(0)
                .or_default()
                .push(serde_json::json!({"name": block["name"], "input": block["input"]})),
            _ => {}
        }
    }
    c.finish_reason = body["stop_reason"].as_str().map(String::from);
}

/// A whole Responses API object: message output text per output item.
fn absorb_response(body: &Value, choices: &mut BTreeMap<u64, Choice>) {
    let mut index = 0u64;
    for item in body["output"].as_array().into_iter().flatten() {
        if item["type"] != "message" {
            continue;
        }
        let c = choices.entry(index).or_default();
        for part in item["content"].as_array().into_iter().flatten() {
            c.text.push_str(part["text"].as_str().unwrap_or(""));
            for lp in part["logprobs"].as_array().into_iter().flatten() {
                push_logprob(c, lp);
            }
        }
        c.finish_reason = body["status"].as_str().map(String::from);
        index += 1;
    }
}

/// Canonical JSON of a body without the fields that differ on every call.
fn stable_content(body: &Value) -> String {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        for volatile in ["id", "created", "created_at", "system_fingerprint", "usage"] {
            map.remove(volatile);
        }
    }
    String::from_utf8_lossy(&crate::key::canonical_json(&body)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RequestKey;
    use crate::record::recording::{
        RecordedRequest, RecordedResponse, RecordingMeta, RequestBody, StreamEvent,
    };

    fn recording(body: &str, events: Option<&[&str]>) -> Recording {
        let body = match events {
            Some(events) => events.concat(),
            None => body.to_string(),
        };
        Recording {
            meta: RecordingMeta {
                call: None,
                key: RequestKey::from_bytes([1; 32]),
                request: RecordedRequest {
                    method: "POST".into(),
                    path: "/v1/messages".into(),
                    query: String::new(),
                    namespace: String::new(),
                    headers: Vec::new(),
                    body: RequestBody::Empty,
                },
                response: RecordedResponse {
                    status: 200,
                    headers: Vec::new(),
                },
                system_fingerprint: None,
                model: Some("claude".into()),
                recorded_at: "2026-12-01T00:00:00.000Z".into(),
                latency_ms: 1,
                stream: events.map(|events| {
                    events
                        .iter()
                        .map(|e| StreamEvent {
                            offset_ms: 0,
                            len: e.len(),
                        })
                        .collect()
                }),
            },
            body: bytes::Bytes::from(body),
        }
    }

    #[test]
    fn anthropic_messages_plain_and_streamed_read_as_one_choice() {
        let plain = recording(
            r#"{"id":"msg_1","type":"message","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}],"stop_reason":"tool_use","usage":{}}"#,
            None,
        );
        let streamed = recording(
            "",
            Some(&[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"other\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"H\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"i\"}}\n\n",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"f\",\"input\":{}}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\": \"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ]),
        );
        let (a, b) = (answer_of(&plain), answer_of(&streamed));
        assert_eq!(a.choices.len(), 1);
        assert_eq!(a.choices[0].text, "Hi");
        assert_eq!(a.choices[0].finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(a.choices[0].tool_calls, r#"[{"input":{"a":1},"name":"f"}]"#);
        assert_eq!(a, b, "the same answer, whatever its ids and thinking");
    }
}
