// End-to-end check of llmtape with the official `openai` Node SDK.
//
// Run by tests/it/sdk.rs against an in-process llmtape in front of a mock
// upstream, or (scenario `fixtures`) serving the committed fixtures/ folder
// in replay mode with no upstream at all. Usage: node stream.mjs SCENARIO, with OPENAI_BASE_URL pointing
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

// The question scripts/make-example-fixtures.py asks in `exchange()`; the
// requests in `fixtures` must stay equal in meaning to those, or their keys
// no longer match the committed recordings.
const QUESTION = [
  { role: "system", content: "You are a terse assistant." },
  { role: "user", content: "What is the capital of France? Answer in one word." },
];

// The 4 requests of `exchange()` in scripts/make-example-fixtures.py,
// replayed from fixtures/, plus one request the fixtures do not hold. Prints
// the same shape as the Python scenario of the same name.
async function fixtures(c) {
  const chat = await c.chat.completions.create({
    model: "gpt-4o-mini",
    messages: QUESTION,
    seed: 42,
    temperature: 0,
  });

  let streamText = "";
  let streamChunks = 0;
  let streamTotalTokens = null;
  const stream = await c.chat.completions.create({
    model: "gpt-4o-mini",
    messages: QUESTION,
    seed: 42,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    streamChunks += 1;
    for (const choice of chunk.choices) {
      streamText += choice.delta?.content ?? "";
    }
    if (chunk.usage) {
      streamTotalTokens = chunk.usage.total_tokens;
    }
  }

  const embedding = await c.embeddings.create({
    model: "text-embedding-3-small",
    input: "llmtape records and replays",
    dimensions: 8,
  });

  let responseText = "";
  let lastEvent = null;
  const events = await c.responses.create({
    model: "gpt-4.1-mini",
    input: "Write a haiku about tape recorders.",
    stream: true,
  });
  for await (const event of events) {
    if (event.type === "response.output_text.delta") {
      responseText += event.delta;
    }
    lastEvent = event.type;
  }

  let miss = { raised: null };
  try {
    await c.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [
        QUESTION[0],
        { role: "user", content: "What is the capital of Italy? Answer in one word." },
      ],
      seed: 42,
      temperature: 0,
    });
  } catch (e) {
    if (!(e instanceof OpenAI.APIError)) {
      throw e;
    }
    miss = {
      raised: e.constructor.name,
      notFound: e instanceof OpenAI.NotFoundError,
      status: e.status ?? null,
      message: e.message,
    };
  }

  return {
    chat: {
      content: chat.choices[0].message.content,
      model: chat.model,
      system_fingerprint: chat.system_fingerprint,
    },
    stream: {
      content: streamText,
      chunks: streamChunks,
      total_tokens: streamTotalTokens,
    },
    embedding: Array.from(embedding.data[0].embedding),
    responses: { text: responseText, last_event: lastEvent },
    miss,
  };
}

const SCENARIOS = {
  chat_twice: chatTwice,
  chat_stream_twice: chatStreamTwice,
  replay_miss: replayMiss,
  fixtures,
};

const scenario = process.argv[2];
if (process.argv.length !== 3 || !(scenario in SCENARIOS)) {
  console.error(`usage: node stream.mjs ${Object.keys(SCENARIOS).join("|")}`);
  process.exit(2);
}
const result = await SCENARIOS[scenario](client());
process.stdout.write(JSON.stringify(result) + "\n");
