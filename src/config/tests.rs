//! Unit tests of the validated config (the raw TOML layer tests itself).
use super::*;

#[test]
fn the_example_proxy_toml_parses_to_the_defaults() {
    let text = include_str!("../../proxy.toml");
    let config = Config::from_toml(text).expect("proxy.toml must parse");
    let defaults = Config::defaults();
    assert_eq!(config.mode, defaults.mode);
    assert_eq!(config.server.listen, defaults.server.listen);
    assert_eq!(config.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(config.upstream.url, defaults.upstream.url);
    assert_eq!(config.upstream.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(
        config.upstream.first_byte_timeout,
        DEFAULT_FIRST_BYTE_TIMEOUT
    );
    assert_eq!(config.upstream.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(config.store.path, PathBuf::from(DEFAULT_STORE));
    assert_eq!(config.store.history, DEFAULT_HISTORY);
    assert!(!config.store.record_errors);
    assert_eq!(config.key.ignore_fields, vec!["/user".to_string()]);
    assert_eq!(config.key.scope, Scope::Global);
    assert_eq!(config.replay.timing, Timing::Instant);
    assert_eq!(config.server.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(config.server.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(config.store.max_recorded_bytes, DEFAULT_MAX_RECORDED_BYTES);
    assert_eq!(
        config.server.header_read_timeout,
        DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(config.server.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
    assert_eq!(config.server.idle_timeout, DEFAULT_CLIENT_IDLE_TIMEOUT);
    assert_eq!(config.server.max_connections, DEFAULT_MAX_CONNECTIONS);
}

#[test]
fn client_bounds_default_to_the_contract() {
    let server = Config::defaults().server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(server.max_connections, 4096);
}

#[test]
fn client_bounds_are_read_from_the_file() {
    let config = Config::from_toml(
        "[server]\nheader_read_timeout = \"300ms\"\nbody_read_timeout = \"2s\"\nidle_timeout = \"1m\"\nmax_connections = 7\n",
    )
    .unwrap();
    assert_eq!(
        config.server.header_read_timeout,
        Duration::from_millis(300)
    );
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(2));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_connections, 7);
}

#[test]
fn zero_or_malformed_client_bounds_are_errors_naming_the_key() {
    let text = "[server]\nheader_read_timeout = \"0s\"\nbody_read_timeout = \"soon\"\nidle_timeout = \"10\"\nmax_connections = 0\n";
    let err = Config::from_toml(text).unwrap_err().to_string();
    for needle in [
        "server.header_read_timeout: must be longer than 0",
        "server.body_read_timeout: \"soon\" is not a duration",
        "server.idle_timeout: \"10\" is not a duration",
        "server.max_connections: must be greater than 0",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    let err = Config::from_toml("[server]\nidle_timeout = 60\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle_timeout"), "{err}");
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.mode, Mode::Auto);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "mode = \"fast\"\n[server]\nlisten = \"nowhere\"\n[upstream]\nurl = \"ftp://x\"\nidle_timeout = \"soon\"\n";
    let err = Config::from_toml(text).unwrap_err().to_string();
    for needle in [
        "mode",
        "server.listen",
        "upstream.url",
        "upstream.idle_timeout",
    ] {
        assert!(err.contains(needle), "missing {needle} in {err}");
    }
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn overrides_beat_the_file() {
    let raw = parse_raw(
        "mode = \"replay\"\n[server]\nlisten = \"127.0.0.1:9\"\n",
        "t",
    )
    .unwrap();
    let overrides = Overrides {
        mode: Some(Mode::Record),
        listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let config = Config::from_raw(raw, &overrides, "t").unwrap();
    assert_eq!(config.mode, Mode::Record);
    assert_eq!(config.server.listen.port(), 0);
}

#[test]
fn key_presets_and_repeats_default_and_parse() {
    let key = Config::defaults().key;
    assert_eq!(key.presets, vec![Preset::ClaudeCode]);
    assert_eq!(key.repeats, Repeats::Same);
    let key = Config::from_toml(
        "[key]\npresets = [\"openai-identity\", \"openai-defaults\"]\nrepeats = \"sequence\"\n",
    )
    .unwrap()
    .key;
    assert_eq!(
        key.presets,
        vec![Preset::OpenaiIdentity, Preset::OpenaiDefaults]
    );
    assert_eq!(key.repeats, Repeats::Sequence);
    assert!(Config::from_toml("[key]\npresets = []\n")
        .unwrap()
        .key
        .presets
        .is_empty());
    let err = Config::from_toml(
        "[key]\npresets = [\"claude\", \"claude-code\", \"claude-code\"]\nrepeats = \"loop\"\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "key.presets: unknown preset \"claude\"",
        "key.presets: claude-code is named twice",
        "key.repeats: unknown repeats \"loop\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn the_anthropic_upstream_has_its_own_settings() {
    let defaults = Config::defaults().upstream;
    assert_eq!(
        defaults.anthropic_url.to_string(),
        "https://api.anthropic.com/"
    );
    assert_eq!(defaults.anthropic_api_key_env, None);
    let raw = parse_raw(
        "[upstream]\nanthropic_url = \"http://127.0.0.1:9/a\"\nanthropic_api_key_env = \"ANTHROPIC_API_KEY\"\n",
        "t",
    )
    .unwrap();
    let config = Config::from_raw(raw, &Overrides::default(), "t").unwrap();
    assert_eq!(
        config.upstream.anthropic_url.to_string(),
        "http://127.0.0.1:9/a"
    );
    assert_eq!(
        config.upstream.url, defaults.url,
        "the OpenAI upstream is unchanged"
    );
    assert_eq!(
        config.upstream.anthropic_api_key_env.as_deref(),
        Some("ANTHROPIC_API_KEY")
    );
    let raw = parse_raw("[upstream]\nanthropic_url = \"http://127.0.0.1:9\"\n", "t").unwrap();
    let overrides = Overrides {
        anthropic_upstream: Some("http://127.0.0.1:10".into()),
        ..Overrides::default()
    };
    let config = Config::from_raw(raw, &overrides, "t").unwrap();
    assert_eq!(
        config.upstream.anthropic_url.to_string(),
        "http://127.0.0.1:10/"
    );
    let err = Config::from_toml(
        "[upstream]\nanthropic_url = \"ftp://x\"\nanthropic_api_key_env = \"sk-ant-dummy\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("upstream.anthropic_url"), "{err}");
    assert!(err.contains("upstream.anthropic_api_key_env"), "{err}");
    assert!(!err.contains("sk-ant-dummy"), "{err}");
}

#[test]
fn a_key_in_api_key_env_is_refused_without_echoing_it() {
    let err = Config::from_toml("[upstream]\napi_key_env = \"sk-test-dummy-secret\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_key_env"), "{err}");
    assert!(!err.contains("dummy-secret"), "{err}");
}
