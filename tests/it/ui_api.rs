//! The web view's JSON endpoints (`/_llmtape/api/...`) against a real
//! serve with recordings made through the mock upstream: the live
//! counters and the cost saved, the list with its filters and pages, one
//! recording whole (a plain answer, a stream, history), the fingerprints
//! and the audit of a planted flip, the admin access rules, and a list of
//! 100,000 recordings.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use llmtape::config::Config;
use llmtape::record::recording::{RecordedRequest, RecordedResponse, RecordingMeta};
use llmtape::serve::proxy::Proxy;
use serde_json::{json, Value};

use crate::support::*;

const PRICES: &str = "[prices]\n\"gpt-4o-mini\" = { input = 0.15, output = 0.60 }\n";

/// A stream that ends with a usage chunk.
const STREAM_WITH_USAGE: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count"}],"seed":8,"stream":true,"stream_options":{"include_usage":true}}"#;

async fn get(url: &str) -> Reply {
    let reply = send(Method::GET, url, &[], "").await;
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{url}"
    );
    reply
}

async fn get_ok(url: &str) -> Value {
    let reply = get(url).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{url}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// The error code of an admin error answer with `status`.
async fn error_code(method: Method, url: &str, status: StatusCode) -> String {
    let reply = send(method, url, &[], "").await;
    assert_eq!(reply.status, status, "{url}");
    let doc = reply.json();
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(!message.is_empty() && !message.contains('\n'), "{doc}");
    doc["error"]["code"].as_str().unwrap().to_string()
}

fn keys_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_describe_what_was_recorded_and_served() {
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start(&mock.url(), PRICES).await;
    let chat = proxy.url("/v1/chat/completions");
    let api = |path: &str| proxy.url(&format!("/_llmtape/api/{path}"));

    // Before any request: nothing counted, nothing listed.
    let stats = get_ok(&api("stats")).await;
    assert_eq!(stats["hits"], 0);
    assert_eq!(stats["models"], json!([]));
    assert_eq!(stats["saved"]["cost_usd"], Value::Null, "no model counted");
    let empty = get_ok(&api("recordings")).await;
    assert_eq!(
        (empty["total"].as_u64(), empty["limit"].as_u64()),
        (Some(0), Some(50))
    );

    // gpt-4o-mini: a plain answer (9 + 3 tokens) hit twice, a stream with
    // a usage chunk hit once; gpt-4o (no price): a namespaced recording
    // and a key whose fingerprint flips.
    let first = post(&chat, CHAT).await;
    assert_eq!(first.cache(), "miss");
    let chat_key = first.header("x-llmtape-key").unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(post(&chat, CHAT).await.cache(), "hit");
    }
    let streamed = post(&chat, STREAM_WITH_USAGE).await;
    let stream_key = streamed.header("x-llmtape-key").unwrap().to_string();
    let hit = post(&chat, STREAM_WITH_USAGE).await;
    assert_eq!(hit.cache(), "hit");
    let usage_line = String::from_utf8_lossy(&hit.body)
        .lines()
        .find(|l| l.contains("\"usage\""))
        .map(String::from)
        .expect("the stream ends with usage");
    let usage: Value = serde_json::from_str(usage_line.trim_start_matches("data: ")).unwrap();
    let stream_output = usage["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    post_with(&chat, &question(1), &[("x-llmtape-namespace", "suite")]).await;
    mock.script(script("Paris is nice", "fp_a", -0.1));
    let old = post(&chat, &question(2)).await;
    let flip_key = old.header("x-llmtape-key").unwrap().to_string();
    mock.script(script("Paris is lovely", "fp_b", -0.1));
    let new = post_with(&chat, &question(2), &[("x-llmtape-mode", "record")]).await;
    assert_eq!(
        new.header("x-llmtape-fingerprint-changed"),
        Some("fp_a -> fp_b")
    );

    // 1. stats
    let stats = get_ok(&api("stats")).await;
    assert_eq!(stats["mode"], "auto");
    assert_eq!(stats["recordings"], 4);
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(stats["recorded"], 5, "the re-recording too");
    assert_eq!(stats["bypasses"], 0);
    let (input, output) = (9 * 2 + 5, 3 * 2 + stream_output);
    let cost = (input as f64 * 0.15 + output as f64 * 0.60) / 1e6;
    let models = stats["models"].as_array().unwrap();
    let mini = models.iter().find(|m| m["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(
        (mini["hits"].as_u64(), mini["misses"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (
            mini["input_tokens"].as_u64(),
            mini["output_tokens"].as_u64()
        ),
        (Some(input), Some(output))
    );
    assert!(
        (mini["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{mini}"
    );
    let gpt4o = models.iter().find(|m| m["model"] == "gpt-4o").unwrap();
    assert_eq!(
        (gpt4o["hits"].as_u64(), gpt4o["misses"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(gpt4o["cost_usd"], Value::Null, "gpt-4o has no price");
    assert_eq!(stats["saved"]["input_tokens"], input);
    assert_eq!(stats["saved"]["output_tokens"], output);
    assert!((stats["saved"]["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);

    // ... and the same in the metrics.
    let metrics = send(Method::GET, &proxy.url("/_llmtape/metrics"), &[], "").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for line in [
        "llmtape_model_hits_total{model=\"gpt-4o-mini\"} 3".to_string(),
        "llmtape_model_misses_total{model=\"gpt-4o\"} 3".to_string(),
        format!("llmtape_tokens_saved_total{{model=\"gpt-4o-mini\",kind=\"input\"}} {input}"),
        format!("llmtape_tokens_saved_total{{model=\"gpt-4o-mini\",kind=\"output\"}} {output}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    let cost_line = text
        .lines()
        .find(|l| l.starts_with("llmtape_cost_saved_usd_total{model=\"gpt-4o-mini\"} "))
        .expect("a cost line for the priced model");
    let metric: f64 = cost_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((metric - cost).abs() < 1e-12);
    assert!(!text.contains("llmtape_cost_saved_usd_total{model=\"gpt-4o\"}"));

    // 2. the list: everything, newest first, with the facets.
    let all = get_ok(&api("recordings")).await;
    assert_eq!(all["total"], 4);
    assert_eq!(keys_of(&all)[0], flip_key, "the re-recording is the newest");
    let times: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["recorded_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(all["facets"]["routes"], json!(["chat.completions"]));
    assert_eq!(all["facets"]["models"], json!(["gpt-4o", "gpt-4o-mini"]));
    assert_eq!(all["facets"]["namespaces"], json!(["", "suite"]));
    let flipped = &all["items"][0];
    assert_eq!(flipped["fingerprint"], "fp_b");
    assert_eq!(flipped["history"], 1);
    assert_eq!(flipped["preview"], "Paris is lovely");
    assert_eq!(flipped["method"], "POST");
    assert_eq!(flipped["path"], "/v1/chat/completions");
    assert_eq!(flipped["route"], "chat.completions");
    assert_eq!(
        (flipped["status"].as_u64(), flipped["stream"].as_bool()),
        (Some(200), Some(false))
    );
    assert_eq!(flipped["call"], Value::Null);
    assert!(flipped["size"].as_u64().unwrap() > 0);
    let item = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == chat_key.as_str())
        .unwrap();
    assert_eq!(item["preview"], "reply #1");

    // Filters: exact fields, and text in the request or the answer.
    let count = |page: &Value| page["total"].as_u64().unwrap();
    assert_eq!(count(&get_ok(&api("recordings?model=gpt-4o")).await), 2);
    assert_eq!(count(&get_ok(&api("recordings?namespace=suite")).await), 1);
    assert_eq!(count(&get_ok(&api("recordings?fingerprint=fp_b")).await), 1);
    assert_eq!(
        count(&get_ok(&api("recordings?route=chat.completions")).await),
        4
    );
    assert_eq!(count(&get_ok(&api("recordings?route=embeddings")).await), 0);
    let said = get_ok(&api("recordings?q=SAY%20HI")).await;
    assert_eq!(keys_of(&said), [chat_key.as_str()], "the request's text");
    let answered = get_ok(&api("recordings?q=paris+is+LOVELY&model=gpt-4o")).await;
    assert_eq!(keys_of(&answered), [flip_key.as_str()], "the answer's text");
    assert_eq!(
        count(&get_ok(&api("recordings?q=paris&fingerprint=fp_a")).await),
        0
    );

    // Pages.
    let first_page = get_ok(&api("recordings?limit=3")).await;
    let second_page = get_ok(&api("recordings?offset=3&limit=3")).await;
    assert_eq!((count(&first_page), count(&second_page)), (4, 4));
    let (a, b) = (keys_of(&first_page), keys_of(&second_page));
    assert_eq!((a.len(), b.len()), (3, 1));
    assert_eq!(
        [a, b].concat(),
        keys_of(&all),
        "pages follow the same order"
    );
    assert!(keys_of(&get_ok(&api("recordings?offset=9")).await).is_empty());
    for bad in ["limit=501", "limit=0", "offset=x", "colour=red", "q=%E2%28"] {
        let url = api(&format!("recordings?{bad}"));
        assert_eq!(
            error_code(Method::GET, &url, StatusCode::BAD_REQUEST).await,
            "invalid_query"
        );
    }

    // 3. one recording whole: by a prefix, with its history.
    let one = get_ok(&api(&format!("recordings/{}", &flip_key[..10]))).await;
    assert_eq!(one["item"]["key"], flip_key.as_str());
    assert_eq!(one["item"]["history"], 1);
    assert_eq!(one["request"]["method"], "POST");
    assert_eq!(
        one["request"]["body"]["messages"][0]["content"],
        "question 2"
    );
    assert_eq!(one["response"]["status"], 200);
    assert_eq!(
        one["response"]["body"]["choices"][0]["message"]["content"],
        "Paris is lovely"
    );
    assert!(one["response"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "content-type"));
    assert_eq!(one["events"], Value::Null, "a plain answer");
    let history = one["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["fingerprint"], "fp_a");
    assert_eq!(history[0]["preview"], "Paris is nice");
    let stream = get_ok(&api(&format!("recordings/{}", stream_key.to_uppercase()))).await;
    assert_eq!(stream["item"]["stream"], true);
    assert_eq!(stream["response"]["body"], Value::Null);
    let events = stream["events"].as_array().unwrap();
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events.last().unwrap()["data"], "[DONE]");
    assert!(events
        .iter()
        .all(|e| e["offset_ms"].is_u64() && e["event"].is_null()));
    assert!(events
        .iter()
        .any(|e| e["data"].as_str().unwrap().contains("\"usage\"")));
    let not_recorded = api(&format!("recordings/{}", "0".repeat(64)));
    let code = error_code(Method::GET, &not_recorded, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "unknown_key");
    let not_hex = api("recordings/xyz");
    assert_eq!(
        error_code(Method::GET, &not_hex, StatusCode::NOT_FOUND).await,
        "unknown_key"
    );

    // 4. fingerprints, per model.
    let fps = get_ok(&api("fingerprints")).await;
    let gpt4o = fps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .unwrap();
    let seen: Vec<(&str, u64)> = gpt4o["fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["fingerprint"].as_str().unwrap(),
                f["recordings"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("fp_mock_1", 1), ("fp_a", 1), ("fp_b", 1)],
        "first seen first"
    );
    let fp_a = &gpt4o["fingerprints"][1];
    assert!(fp_a["first_seen"].as_str().unwrap() <= fp_a["last_seen"].as_str().unwrap());

    // 5. the audit, with the diff as data.
    let audit = get_ok(&api("audit")).await;
    assert_eq!(audit["llmtape_audit"], 1);
    let flips = audit["flips"].as_array().unwrap();
    assert_eq!(flips.len(), 1, "{audit}");
    let flip = &flips[0];
    assert_eq!(flip["key"], flip_key.as_str());
    assert_eq!(flip["change"], "text");
    assert_eq!(
        (
            flip["old"]["fingerprint"].as_str(),
            flip["new"]["fingerprint"].as_str()
        ),
        (Some("fp_a"), Some("fp_b"))
    );
    assert_eq!(flip["old_text"], json!(["Paris is nice"]));
    assert_eq!(flip["new_text"], json!(["Paris is lovely"]));
    assert_eq!(
        flip["choices"][0]["text_diff"],
        "Paris is [-nice-]{+lovely+}"
    );
    assert_eq!(
        flip["choices"][0]["segments"],
        json!([
            {"op": "equal", "text": "Paris is "},
            {"op": "delete", "text": "nice"},
            {"op": "insert", "text": "lovely"},
        ])
    );
    assert!(audit["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model"] == "gpt-4o"));

    // GET only; unknown endpoints are named.
    assert_eq!(
        error_code(Method::POST, &api("stats"), StatusCode::METHOD_NOT_ALLOWED).await,
        "method_not_allowed"
    );
    assert_eq!(
        error_code(Method::GET, &api("nothing"), StatusCode::NOT_FOUND).await,
        "unknown_admin_endpoint"
    );

    // A new recording joins the list at once, newest first.
    mock.state.script.lock().unwrap().take();
    let later = post(&chat, &question(3)).await;
    let now = get_ok(&api("recordings?limit=1")).await;
    assert_eq!(now["total"], 5);
    assert_eq!(
        keys_of(&now),
        [later.header("x-llmtape-key").unwrap().to_string()]
    );
    let fps = get_ok(&api("fingerprints")).await;
    let gpt4o = fps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .unwrap();
    assert_eq!(gpt4o["fingerprints"][0]["recordings"], 2, "{fps}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_through_serve_is_seen_by_the_next_request() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    let chat = serve.url("/v1/chat/completions");
    let gone = post(&chat, CHAT).await;
    let gone = gone.header("x-llmtape-key").unwrap().to_string();
    post(&chat, &question(1)).await;
    let api = |path: &str| serve.url(&format!("/_llmtape/api/{path}"));
    assert_eq!(get_ok(&api("recordings")).await["total"], 2);
    let models = |doc: &Value| doc["models"].as_array().unwrap().len();
    assert_eq!(models(&get_ok(&api("fingerprints")).await), 2);

    let mut rm = llmtape(dir.path());
    rm.args(["rm", &gone[..16], "--store"]).arg(&store);
    let (code, _, stderr) = run(rm).await;
    assert_eq!(code, 0, "{stderr}");
    let after = get_ok(&api("recordings")).await;
    assert_eq!(after["total"], 1);
    assert_ne!(keys_of(&after)[0], gone);
    assert_eq!(
        models(&get_ok(&api("fingerprints")).await),
        1,
        "gpt-4o-mini is gone"
    );
    let url = api(&format!("recordings/{gone}"));
    assert_eq!(
        error_code(Method::GET, &url, StatusCode::NOT_FOUND).await,
        "unknown_key"
    );
    assert!(serve.terminate().await.success());
}

/// A request for `path` from `peer`, as the server tags it.
async fn admin_get(proxy: &Proxy, path: &str, peer: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(Full::new(Bytes::new())).unwrap();
    llmtape::serve::admin::tag_peer(&mut request, peer.parse().unwrap());
    let response = proxy.handle(request).await;
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_loopback_or_the_admin_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml("").unwrap();
    config.store.path = dir.path().join("store");
    config.server.admin_token = Some("admin-test-dummy-token".into());
    let tier = std::sync::Arc::new(SledStore::open(&config.store.path).unwrap());
    let proxy = Proxy::new(&config, tier).unwrap();
    for path in [
        "/_llmtape/api/stats",
        "/_llmtape/api/recordings",
        "/_llmtape/api/recordings/abc",
        "/_llmtape/api/fingerprints",
        "/_llmtape/api/audit",
        "/_llmtape/ui",
    ] {
        assert_eq!(
            admin_get(&proxy, path, "192.0.2.7:5000", None).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            admin_get(&proxy, path, "192.0.2.7:5000", Some("wrong")).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let elsewhere = Some("admin-test-dummy-token");
    for path in [
        "/_llmtape/api/stats",
        "/_llmtape/api/recordings",
        "/_llmtape/api/fingerprints",
        "/_llmtape/api/audit",
    ] {
        assert_eq!(
            admin_get(&proxy, path, "192.0.2.7:5000", elsewhere).await,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            admin_get(&proxy, path, "127.0.0.1:5000", None).await,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        admin_get(&proxy, "/_llmtape/api/recordings/abc", "[::1]:5000", None).await,
        StatusCode::NOT_FOUND,
        "admitted, and no such key"
    );
}

/// Recording `i` of the large store: a chat answer of model `m{i % 7}`,
/// one second apart.
fn large_recording(i: u64) -> Recording {
    let key = RequestKey::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes());
    let model = format!("m{}", i % 7);
    let body = json!({"id": format!("chatcmpl-{i}"), "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer number {i}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4}, "system_fingerprint": "fp_large"});
    let at = 1_700_000_000 + i;
    Recording {
        meta: RecordingMeta {
            key,
            request: RecordedRequest {
                method: "POST".into(),
                path: "/v1/chat/completions".into(),
                query: String::new(),
                namespace: String::new(),
                headers: Vec::new(),
                body: RequestBody::Json(
                    json!({"model": model, "messages": [{"role": "user", "content": format!("question number {i}")}]}),
                ),
            },
            response: RecordedResponse {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
            },
            system_fingerprint: Some("fp_large".into()),
            model: Some(model),
            recorded_at: llmtape::record::recording::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
            ),
            latency_ms: 5,
            stream: None,
            call: None,
        },
        body: Bytes::from(body.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_100_000_recordings_is_paged_on_the_server() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let started = Instant::now();
    let built = tokio::task::spawn_blocking({
        let store_dir = store_dir.clone();
        move || {
            let store = SledStore::open(&store_dir).unwrap();
            for i in 0..N {
                let r = large_recording(i);
                store.put(&r.meta.key, &r, 0).unwrap();
            }
            store.flush().unwrap();
        }
    });
    built.await.unwrap();
    eprintln!("ui_api: wrote {N} recordings in {:?}", started.elapsed());
    let mock = MockUpstream::start().await;
    let mut proxy = TestProxy::start_with_store(&mock.url(), "", &store_dir).await;
    let api = |path: &str| proxy.url(&format!("/_llmtape/api/{path}"));

    let started = Instant::now();
    let first = get_ok(&api("recordings")).await;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(first["total"], N);
    let expected: Vec<String> = (0..50)
        .map(|k| large_recording(N - 1 - k).meta.key.to_hex())
        .collect();
    assert_eq!(keys_of(&first), expected, "newest first");
    assert_eq!(first["facets"]["models"].as_array().unwrap().len(), 7);

    let mut later_ms = Vec::new();
    for (query, total) in [
        ("recordings?offset=50000&limit=500", N),
        (
            "recordings?model=m3&limit=10",
            (0..N).filter(|i| i % 7 == 3).count() as u64,
        ),
        ("recordings?q=answer%20number%2012345", 1),
        ("recordings?q=QUESTION%20NUMBER%209999", 11),
    ] {
        let started = Instant::now();
        let page = get_ok(&api(query)).await;
        later_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(page["total"], total, "{query}");
    }
    let middle = get_ok(&api("recordings?offset=50000&limit=500")).await;
    let keys = keys_of(&middle);
    assert_eq!(keys.len(), 500);
    assert_eq!(keys[0], large_recording(N - 1 - 50_000).meta.key.to_hex());
    assert_eq!(keys[499], large_recording(N - 1 - 50_499).meta.key.to_hex());
    let found = get_ok(&api("recordings?q=answer%20number%2012345")).await;
    assert_eq!(keys_of(&found), [large_recording(12_345).meta.key.to_hex()]);

    // Any one hex digit starts thousands of keys; the full key is one.
    let url = api("recordings/a");
    assert_eq!(
        error_code(Method::GET, &url, StatusCode::CONFLICT).await,
        "ambiguous_key"
    );
    let key = large_recording(777).meta.key.to_hex();
    let one = get_ok(&api(&format!("recordings/{}", &key[..16]))).await;
    assert_eq!(one["item"]["preview"], "answer number 777");
    eprintln!(
        "ui_api: list of {N}: first request (builds the rows) {first_ms:.0} ms; later pages and filters {:?} ms",
        later_ms.iter().map(|ms| ms.round()).collect::<Vec<_>>()
    );
    proxy.stop().await;
}

/// Copies the folder `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixtures_folder_is_listed_and_read_the_same_way() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("fixtures");
    copy_dir(&std::path::Path::new(REPO).join("fixtures"), &folder);
    let files = all_files(&folder)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .count();
    let proxy = TestProxy::start_fixtures(&mock.url(), "mode = \"auto\"\n", &folder).await;
    let api = |path: &str| proxy.url(&format!("/_llmtape/api/{path}"));
    let all = get_ok(&api("recordings")).await;
    assert_eq!(all["total"], files as u64);
    let models = all["facets"]["models"].as_array().unwrap();
    assert!(
        models.iter().any(|m| m == "text-embedding-3-small"),
        "{all}"
    );
    let routes = all["facets"]["routes"].as_array().unwrap();
    assert!(routes.iter().any(|r| r == "embeddings"), "{all}");
    let embedding = get_ok(&api("recordings?route=embeddings")).await;
    assert_eq!(embedding["total"], 1);
    let key = keys_of(&embedding)[0].clone();
    let one = get_ok(&api(&format!("recordings/{}", &key[..12]))).await;
    assert_eq!(one["item"]["route"], "embeddings");
    assert!(one["response"]["body"]["data"].is_array(), "{one}");

    // A miss in auto mode writes a new fixture: it is listed at once.
    let new = post(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(new.cache(), "miss");
    let now = get_ok(&api("recordings?limit=1")).await;
    assert_eq!(now["total"], files as u64 + 1);
    assert_eq!(keys_of(&now), [new.header("x-llmtape-key").unwrap()]);
}
