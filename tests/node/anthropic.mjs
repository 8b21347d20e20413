// End-to-end check of llmtape with the official `@anthropic-ai/sdk` Node SDK.
//
// Run by tests/it/anthropic.rs against an in-process llmtape in front of the
// Anthropic-like mock in tests/it/support. ANTHROPIC_BASE_URL points at the
// proxy (the SDK reads it, and ANTHROPIC_API_KEY, from the environment).
// Usage: node anthropic.mjs. Prints exactly one JSON object on stdout: each
// call made twice (plain, streamed, tools, thinking), and a replay miss.

import Anthropic from "@anthropic-ai/sdk";

const MODEL = "claude-sonnet-4-5";
const TOOLS = [
  {
    name: "get_weather",
    description: "The weather in a city",
    input_schema: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
];

async function twice(f) {
  return { first: await f(), second: await f() };
}

async function main() {
  const c = new Anthropic({ maxRetries: 0, timeout: 15_000 });
  const plain = await twice(() =>
    c.messages.create({
      model: MODEL,
      max_tokens: 256,
      messages: [{ role: "user", content: "Say hi" }],
    }),
  );
  const { response } = await c.messages
    .create({
      model: MODEL,
      max_tokens: 256,
      messages: [{ role: "user", content: "Say hi" }],
    })
    .withResponse();
  plain.third_cache = response.headers.get("x-llmtape-cache");
  const stream = await twice(async () => {
    const events = [];
    const s = await c.messages.create({
      model: MODEL,
      max_tokens: 256,
      messages: [{ role: "user", content: "Count" }],
      stream: true,
    });
    for await (const event of s) events.push(event);
    return events;
  });
  const tools = await twice(() =>
    c.messages.create({
      model: MODEL,
      max_tokens: 256,
      tools: TOOLS,
      messages: [{ role: "user", content: "Weather in Paris?" }],
    }),
  );
  const thinking = await twice(async () => {
    const s = c.messages.stream({
      model: MODEL,
      max_tokens: 2048,
      thinking: { type: "enabled", budget_tokens: 1024 },
      tools: TOOLS,
      messages: [{ role: "user", content: "Think, then check the weather." }],
    });
    return await s.finalMessage();
  });
  let replay_miss = { raised: null };
  try {
    await c.messages.create(
      {
        model: MODEL,
        max_tokens: 256,
        messages: [{ role: "user", content: "never recorded" }],
      },
      { headers: { "x-llmtape-mode": "replay" } },
    );
  } catch (e) {
    replay_miss = {
      raised: e instanceof Anthropic.NotFoundError ? "NotFoundError" : e.constructor.name,
      status: e.status,
      message: e.message,
      body: e.error,
    };
  }
  process.stdout.write(JSON.stringify({ plain, stream, tools, thinking, replay_miss }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
