//! `llmtape stats`: the live counters of the `serve` that holds the store
//! (hits, misses, tokens and cost saved per model, at `[prices]` from its
//! proxy.toml), and, with no server, what the store alone holds.

use serde_json::Value;

use crate::support::*;

const PRICES: &str = "[prices]\n\"gpt-4o-mini\" = { input = 0.15, output = 0.60 }\n";

/// The mock's chat answer reports 9 prompt and 3 completion tokens.
const COST_OF_ONE: f64 = (9.0 * 0.15 + 3.0 * 0.60) / 1e6;

async fn stats_json(cwd: &std::path::Path, store: &std::path::Path) -> Value {
    let mut cmd = llmtape(cwd);
    cmd.args(["stats", "--json", "--store"]).arg(store);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_prints_the_live_counters_while_serving_and_the_store_without() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("proxy.toml"), PRICES).unwrap();
    let store = dir.path().join("store");
    let mut serve = Serve::start(serve_cmd(dir.path(), &mock.url(), &store)).await;
    let url = serve.url("/v1/chat/completions");
    assert_eq!(post(&url, CHAT).await.cache(), "miss");
    for _ in 0..3 {
        assert_eq!(post(&url, CHAT).await.cache(), "hit");
    }
    post(&url, &question(1)).await;

    let live = stats_json(dir.path(), &store).await;
    assert_eq!(live["llmtape_stats"], 1);
    assert_eq!(live["live"], true, "{live}");
    assert_eq!(live["source"], store.display().to_string());
    assert_eq!(
        (live["hits"].as_u64(), live["misses"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (live["recorded"].as_u64(), live["recordings"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(live["mode"], "auto");
    assert_eq!(live["saved"]["input_tokens"], 27);
    assert_eq!(live["saved"]["output_tokens"], 9);
    let cost = live["saved"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 3.0 * COST_OF_ONE).abs() < 1e-12, "{live}");
    let models = live["models"].as_array().unwrap();
    let mini = models.iter().find(|m| m["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(
        (mini["hits"].as_u64(), mini["misses"].as_u64()),
        (Some(3), Some(1))
    );
    let gpt4o = models.iter().find(|m| m["model"] == "gpt-4o").unwrap();
    assert_eq!(
        (gpt4o["hits"].as_u64(), gpt4o["misses"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(gpt4o["cost_usd"], Value::Null, "no price for gpt-4o");

    let mut text = llmtape(dir.path());
    text.args(["stats", "--store"]).arg(&store);
    let (code, stdout, stderr) = run(text).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("live counters of the llmtape serve on "),
        "{stdout}"
    );
    assert!(stdout.contains("3 hit(s), 2 miss(es)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "saved 27 input and 9 output token(s), ${:.6}",
            3.0 * COST_OF_ONE
        )),
        "{stdout}"
    );

    assert!(serve.terminate().await.success());

    // Offline: what the store holds, and no hits claimed.
    let stored = stats_json(dir.path(), &store).await;
    assert_eq!(stored["live"], false, "{stored}");
    assert!(
        stored.get("hits").is_none(),
        "hits are counted by a running proxy"
    );
    assert_eq!(stored["recordings"], 2);
    assert_eq!(stored["stored"]["input_tokens"], 18);
    let rows = stored["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(rows[1]["recordings"], 1);
    assert_eq!(
        (
            rows[1]["input_tokens"].as_u64(),
            rows[1]["output_tokens"].as_u64()
        ),
        (Some(9), Some(3))
    );
    let cost = rows[1]["cost_usd"].as_f64().unwrap();
    assert!((cost - COST_OF_ONE).abs() < 1e-12);
    assert_eq!(rows[0]["cost_usd"], Value::Null);
    assert_eq!(stored["stored"]["cost_usd"].as_f64(), Some(cost));

    let mut text = llmtape(dir.path());
    text.args(["stats", "--store"]).arg(&store);
    let (code, stdout, stderr) = run(text).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("no llmtape serve runs on it"), "{stdout}");
    assert!(
        stdout.contains("2 recording(s), 18 input and 6 output token(s)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_price_is_a_one_line_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("proxy.toml"),
        "[prices]\n\"gpt-4o\" = { input = -2.5, output = 10 }\n",
    )
    .unwrap();
    let ran = run_in(dir.path(), &["stats", "--store", "store"], None).await;
    let error = ran.one_line_error(2);
    assert!(
        error.contains("prices.\"gpt-4o\".input: -2.5 is not a price"),
        "{error}"
    );
}
