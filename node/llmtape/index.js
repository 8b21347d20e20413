// startLlmtape(options) -> { url, baseUrl, mode, fixtures, takeMisses(),
// expectNoMisses(), stop() }: runs `llmtape serve` on 127.0.0.1:0 serving a
// fixtures folder, waits (bounded) for its ready line, and sets
// OPENAI_BASE_URL / ANTHROPIC_BASE_URL (and dummy keys in replay) for the
// tests. The binary is $LLMTAPE_BIN, else `llmtape` on PATH. Same modes and
// defaults as the pytest plugin.
//
// How a swallowed miss is found: serve writes one line per request to its
// stderr, which the helper reads; a replay miss is a line with
// outcome=miss and status=404 (and nearest=KEY when a recording is near).
// serve writes its log in batches, so takeMisses() first asks
// /_llmtape/metrics how many misses serve has counted and waits (at most
// MISS_LOG_WAIT_MS) until that many miss lines have arrived.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const readline = require("node:readline");

const MODES = ["replay", "record", "auto", "off"];
const DEFAULT_FIXTURES = "tests/fixtures/llmtape";
const DUMMY_KEYS = { OPENAI_API_KEY: "sk-test-dummy", ANTHROPIC_API_KEY: "sk-ant-test-dummy" };
// A debug build loading a large folder on a loaded CI machine starts well within this.
const READY_TIMEOUT_MS = 30000;
// SIGTERM drains in-flight requests; after this, SIGKILL.
const STOP_TIMEOUT_MS = 10000;
// The longest wait for serve's log to show a miss its counter shows.
const MISS_LOG_WAIT_MS = 2000;
const MISS_LOG_POLL_MS = 20;
// `name=value` or `name="quoted value"` in a log line.
const FIELD = /(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g;
const REQUEST_LINE = " llmtape::serve::proxy: request ";

/** The fields of one of serve's request lines, or null for any other line. */
function requestFields(line) {
  if (!line.includes(REQUEST_LINE)) return null;
  const fields = {};
  for (const [, name, value] of line.matchAll(FIELD)) {
    fields[name] = value.startsWith('"') ? value.slice(1, -1) : value;
  }
  return fields;
}

/** The failure message for replay misses, as the pytest plugin words it. */
function missMessage(misses, fixtures) {
  const lines = [`llmtape: ${misses.length} replay miss(es) in this test ` +
    `(mode=replay, fixtures=${fixtures}); no recording for:`];
  for (const m of misses) {
    let line = `  ${m.method ?? "?"} ${m.path ?? "?"} (key ${m.key ?? "?"})`;
    if (m.nearest) line += `; the nearest recording is ${m.nearest}`;
    lines.push(line);
  }
  lines.push("  the 404 the client got names the nearest recording and what differs " +
    "(also in the x-llmtape-miss-nearest header); record it with LLMTAPE_TEST_MODE=auto");
  return lines.join("\n");
}

async function missesCounted(url) {
  const text = await (await fetch(url + "/_llmtape/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith('llmtape_requests_total{outcome="miss"} '));
  return line ? Number(line.split(" ")[1]) : 0;
}

function defaultMode(env) {
  const m = env.LLMTAPE_TEST_MODE;
  if (m) return m;
  return env.CI ? "replay" : "auto";
}

async function startLlmtape(options = {}) {
  const env = options.env ?? process.env;
  const mode = options.mode ?? defaultMode(env);
  if (!MODES.includes(mode)) {
    throw new Error(`llmtape: unknown mode ${JSON.stringify(mode)}: expected ${MODES.join(", ")}`);
  }
  const fixtures = path.resolve(options.cwd ?? process.cwd(), options.fixtures ?? DEFAULT_FIXTURES);
  const setEnv = options.setEnv ?? true;
  if (mode === "off") {
    return {
      url: null, baseUrl: null, mode, fixtures,
      takeMisses: async () => [], expectNoMisses: async () => {}, stop: async () => {},
    };
  }
  fs.mkdirSync(fixtures, { recursive: true });
  const bin = options.bin ?? env.LLMTAPE_BIN ?? "llmtape";
  const args = ["serve", "--listen", "127.0.0.1:0", "--mode", mode, "--fixtures", fixtures];
  if (options.upstream) args.push("--upstream", options.upstream);
  const child = spawn(bin, args.concat(options.args ?? []), {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  const log = [];
  // Request lines seen: every miss (to match serve's counter) and the
  // replay misses not yet taken.
  const seen = { misses: 0, replayMisses: [] };
  let partial = "";
  // Decoded as a stream, so a character split between chunks stays whole.
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (text) => {
    log.push(text);
    if (log.length > 50) log.shift();
    if (options.onLog) options.onLog(text);
    const lines = (partial + text).split("\n");
    partial = lines.pop();
    for (const line of lines) {
      const fields = requestFields(line);
      if (!fields || fields.outcome !== "miss") continue;
      seen.misses += 1;
      if (fields.status === "404") seen.replayMisses.push(fields);
    }
  });
  const url = await new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      const tail = log.join("").trim().split("\n").slice(-5).join(" | ");
      reject(new Error(`llmtape: \`${bin} ${args.join(" ")}\` ${why}: ${tail || "no output"}`));
    };
    const timer = setTimeout(() => fail(`printed no ready line within ${READY_TIMEOUT_MS / 1000}s`), READY_TIMEOUT_MS);
    child.once("error", (e) =>
      fail(e.code === "ENOENT" ? "not found (set LLMTAPE_BIN or put llmtape on PATH)" : e.message));
    child.once("exit", (code) => fail(`exited before it was ready (exit ${code})`));
    lines.on("line", (line) => {
      if (line.startsWith("llmtape listening on ")) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve(line.split(" ")[3]);
      }
    });
  });
  const baseUrl = url + "/v1";
  const saved = {};
  if (setEnv) {
    const vars = { OPENAI_BASE_URL: baseUrl, ANTHROPIC_BASE_URL: url };
    if (mode === "replay") {
      for (const [k, v] of Object.entries(DUMMY_KEYS)) if (!process.env[k]) vars[k] = v;
    }
    for (const [k, v] of Object.entries(vars)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  }
  let stopped;
  const stop = () => {
    stopped ??= new Promise((resolve) => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      child.once("exit", (code) => {
        clearTimeout(timer);
        resolve(code);
      });
      child.kill("SIGTERM");
    });
    return stopped;
  };
  // The replay misses since the last call, once serve's log shows every
  // miss its counter shows (or MISS_LOG_WAIT_MS passed).
  const takeMisses = async () => {
    if (stopped) return [];
    const counted = await missesCounted(url);
    const deadline = Date.now() + MISS_LOG_WAIT_MS;
    while (seen.misses < counted && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, MISS_LOG_POLL_MS));
    }
    return seen.replayMisses.splice(0);
  };
  // Throws, naming each request, when a request missed in replay since the
  // last call: an afterEach hook, so a test whose client swallowed the 404
  // still fails.
  const expectNoMisses = async () => {
    const misses = await takeMisses();
    if (mode === "replay" && misses.length > 0) throw new Error(missMessage(misses, fixtures));
  };
  return { url, baseUrl, mode, fixtures, takeMisses, expectNoMisses, stop };
}

module.exports = { startLlmtape, MODES, DEFAULT_FIXTURES };
