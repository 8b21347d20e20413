//! Criterion benchmark of the request key: canonicalise a chat request and
//! hash it, for a ~1 KB and a ~100 KB body (issue 7: under 1 ms at 100 KB).
//!
//! `cargo bench --bench key`; `cargo test --all-targets` runs each case once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llmtape::key::{Canonical, KeyRules, RequestParts};
use serde_json::json;

/// A chat completion request of at least `target` bytes: a system prompt and
/// alternating user/assistant turns of about 400 bytes each, plus the usual
/// sampling parameters and a tool, as an agent with a long history sends.
fn chat_request(target: usize) -> Vec<u8> {
    let sentence =
        "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ";
    let mut messages = vec![json!({
        "role": "system",
        "content": "You are a careful assistant. Answer briefly and cite the line you rely on.",
    })];
    let mut turn = 0usize;
    loop {
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        let content = format!("turn {turn}: {}", sentence.repeat(4));
        messages.push(json!({ "role": role, "content": content }));
        turn += 1;
        let request = json!({
            "model": "gpt-4o-mini",
            "messages": messages,
            "temperature": 0.2,
            "top_p": 1.0,
            "seed": 42,
            "n": 1,
            "max_tokens": 256,
            "user": "bench-user",
            "tools": [{
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look a term up",
                    "parameters": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]},
                },
            }],
        });
        let body = serde_json::to_vec(&request).expect("a json! value serialises");
        if body.len() >= target {
            return body;
        }
    }
}

fn parts(body: &[u8]) -> RequestParts<'_> {
    RequestParts {
        method: "POST",
        path: "/v1/chat/completions",
        query: None,
        content_type: Some("application/json"),
        body,
        namespace: None,
        credential: None,
        anthropic_version: None,
        anthropic_beta: Vec::new(),
    }
}

fn bench_key(c: &mut Criterion) {
    // The default rules, as `key.ignore_fields` ships them.
    let rules = KeyRules {
        presets: llmtape::key::DEFAULT_PRESETS.to_vec(),
        ignore_fields: vec!["/user".to_string()],
        per_credential: false,
    };
    let mut group = c.benchmark_group("key");
    for (label, target) in [("1KB", 1024), ("100KB", 100 * 1024)] {
        let body = chat_request(target);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("canonicalise+hash/{label}"), |b| {
            b.iter(|| Canonical::new(&parts(black_box(&body)), &rules).key())
        });
        group.bench_function(format!("canonicalise/{label}"), |b| {
            b.iter(|| Canonical::new(&parts(black_box(&body)), &rules))
        });
        let canonical = Canonical::new(&parts(&body), &rules);
        group.bench_function(format!("hash/{label}"), |b| {
            b.iter(|| black_box(&canonical).key())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short enough that the whole file runs in well under a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_key
}
criterion_main!(benches);
