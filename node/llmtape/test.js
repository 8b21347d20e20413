// node --test node/llmtape: the helper on its own (scripts/test runs it
// with LLMTAPE_BIN set to the wheel's binary).
"use strict";

const assert = require("node:assert");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { test } = require("node:test");
const { startLlmtape } = require("./index.js");

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "llmtape-node-"));

test("an unknown mode is refused before anything starts", async () => {
  await assert.rejects(startLlmtape({ mode: "sometimes" }), /unknown mode "sometimes"/);
});

test("a missing binary names LLMTAPE_BIN", async () => {
  await assert.rejects(startLlmtape({ mode: "replay", bin: "/nonexistent/llmtape", fixtures: tmp() }),
    /not found \(set LLMTAPE_BIN/);
});

test("off starts nothing", async () => {
  const llmtape = await startLlmtape({ mode: "off" });
  assert.strictEqual(llmtape.url, null);
  await llmtape.stop();
});

test("replay serves the folder on 127.0.0.1, sets the env, and stop restores it", async (t) => {
  if (!process.env.LLMTAPE_BIN) {
    if (process.env.CI) assert.fail("LLMTAPE_BIN is not set");
    return t.skip("LLMTAPE_BIN is not set");
  }
  const before = process.env.OPENAI_BASE_URL;
  delete process.env.OPENAI_API_KEY;
  const llmtape = await startLlmtape({ mode: "replay", fixtures: tmp() });
  assert.match(llmtape.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.strictEqual(process.env.OPENAI_BASE_URL, llmtape.url + "/v1");
  assert.strictEqual(process.env.OPENAI_API_KEY, "sk-test-dummy");
  const health = await (await fetch(llmtape.url + "/_llmtape/health")).json();
  assert.strictEqual(health.mode, "replay");
  assert.strictEqual(await llmtape.stop(), 0);
  assert.strictEqual(process.env.OPENAI_BASE_URL, before);
  assert.strictEqual(process.env.OPENAI_API_KEY, undefined);
});
