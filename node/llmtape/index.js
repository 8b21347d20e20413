// startLlmtape(options) -> { url, baseUrl, mode, fixtures, stop() }: runs
// `llmtape serve` on 127.0.0.1:0 serving a fixtures folder, waits (bounded)
// for its ready line, and sets OPENAI_BASE_URL / ANTHROPIC_BASE_URL (and
// dummy keys in replay) for the tests. The binary is $LLMTAPE_BIN, else
// `llmtape` on PATH. Same modes and defaults as the pytest plugin.
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
    return { url: null, baseUrl: null, mode, fixtures, stop: async () => {} };
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
  child.stderr.on("data", (chunk) => {
    log.push(chunk.toString());
    if (log.length > 50) log.shift();
    if (options.onLog) options.onLog(chunk.toString());
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
  return { url, baseUrl, mode, fixtures, stop };
}

module.exports = { startLlmtape, MODES, DEFAULT_FIXTURES };
