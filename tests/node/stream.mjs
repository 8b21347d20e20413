// End-to-end check of llmtape with the official `openai` Node SDK.
//
// Run by tests/sdk.rs against an in-process llmtape in front of a mock
// upstream. Usage: node stream.mjs SCENARIO, with OPENAI_BASE_URL pointing
// at the proxy's /v1. Prints exactly one JSON object on stdout.

import OpenAI from "openai";

const CHAT = {
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hi" }],
  seed: 42,
  temperature: 0,
};

function client() {
  return new OpenAI({
    baseURL: process.env.OPENAI_BASE_URL,
    apiKey: "sk-test-dummy",
    maxRetries: 0,
    timeout: 15_000,
  });
}

async function chatTwice(c) {
  const first = await c.chat.completions.create(CHAT);
  const second = await c.chat.completions.create(CHAT);
  return { first, second };
}

async function chatStreamTwice(c) {
  const once = async () => {
    const stream = await c.chat.completions.create({
      ...CHAT,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
    }
    return chunks;
  };
  const first = await once();
  const second = await once();
  return { first, second };
}

async function replayMiss(c) {
  try {
    await c.chat.completions.create(CHAT);
  } catch (e) {
    if (e instanceof OpenAI.APIError) {
      return {
        raised: e.constructor.name,
        notFound: e instanceof OpenAI.NotFoundError,
        status: e.status ?? null,
        message: e.message,
      };
    }
    throw e;
  }
  return { raised: null };
}

const SCENARIOS = {
  chat_twice: chatTwice,
  chat_stream_twice: chatStreamTwice,
  replay_miss: replayMiss,
};

const scenario = process.argv[2];
if (process.argv.length !== 3 || !(scenario in SCENARIOS)) {
  console.error(`usage: node stream.mjs ${Object.keys(SCENARIOS).join("|")}`);
  process.exit(2);
}
const result = await SCENARIOS[scenario](client());
process.stdout.write(JSON.stringify(result) + "\n");
