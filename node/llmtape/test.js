// node --test node/llmtape: the helper on its own (scripts/test runs it
// with LLMTAPE_BIN set to the wheel's binary).
"use strict";

const assert = require("node:assert");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");
const { test } = require("node:test");
const { startLlmtape } = require("./index.js");

// A binary is needed from here on: under CI its absence is a failure.
function needBinary(t) {
  if (process.env.LLMTAPE_BIN) return true;
  if (process.env.CI) assert.fail("LLMTAPE_BIN is not set");
  t.skip("LLMTAPE_BIN is not set");
  return false;
}

// An OpenAI-shaped upstream on 127.0.0.1:0 that numbers its answers.
async function mockUpstream() {
  let calls = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      calls += 1;
      const body = JSON.stringify({
        id: `chatcmpl-mock-${calls}`, object: "chat.completion", created: 1700000000, model: "gpt-4o-mini",
        choices: [{ index: 0, finish_reason: "stop", message: { role: "assistant", content: `answer ${calls}` } }],
      });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

// A chat request through the proxy that, like a client library hiding
// errors, only reports the status.
async function ask(baseUrl, question) {
  const res = await fetch(baseUrl + "/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer sk-test-dummy" },
    body: JSON.stringify({ model: "gpt-4o-mini", seed: 1, messages: [{ role: "user", content: question }] }),
  });
  await res.arrayBuffer();
  return res.status;
}

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
  if (!needBinary(t)) return;
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

test("expectNoMisses fails for a swallowed replay miss, naming it and the nearest recording", async (t) => {
  if (!needBinary(t)) return;
  const fixtures = tmp();
  const upstream = await mockUpstream();
  t.after(() => upstream.close());
  const recording = await startLlmtape({ mode: "auto", fixtures, upstream: upstream.url, setEnv: false });
  assert.strictEqual(await ask(recording.baseUrl, "known"), 200);
  // auto: a miss is recorded, not a failure.
  assert.strictEqual((await recording.takeMisses()).length, 0);
  await recording.expectNoMisses();
  assert.strictEqual(await recording.stop(), 0);
  const files = fs.readdirSync(fixtures, { recursive: true }).filter((f) => f.endsWith(".json"));
  assert.strictEqual(files.length, 1);
  const known = JSON.parse(fs.readFileSync(path.join(fixtures, files[0]), "utf8")).key;

  const llmtape = await startLlmtape({ mode: "replay", fixtures, setEnv: false });
  t.after(() => llmtape.stop());
  assert.strictEqual(await ask(llmtape.baseUrl, "known"), 200);
  await llmtape.expectNoMisses();
  assert.strictEqual(await ask(llmtape.baseUrl, "unknown"), 404);
  await assert.rejects(llmtape.expectNoMisses(), (error) => {
    assert.match(error.message, /^llmtape: 1 replay miss\(es\) in this test \(mode=replay/);
    assert.match(error.message, /POST \/v1\/chat\/completions \(key [0-9a-f]{64}\)/);
    assert.ok(error.message.includes(`; the nearest recording is ${known}`), error.message);
    return true;
  });
  // Taken: the next test starts clean.
  await llmtape.expectNoMisses();
  assert.strictEqual(await llmtape.stop(), 0);
  assert.deepStrictEqual(await llmtape.takeMisses(), []);
});
