// The official openai SDK: tests/llmtape.setup.js has set OPENAI_BASE_URL
// (and, in replay, a dummy OPENAI_API_KEY) before this file is imported.
import OpenAI from "openai";
import { expect, test } from "vitest";

const client = new OpenAI();

test("a chat completion", async () => {
  const answer = await client.chat.completions.create({
    model: "gpt-4o-mini", seed: 7, temperature: 0,
    messages: [{ role: "user", content: "Name a colour." }],
  });
  expect(answer.choices[0].message.content).toBeTruthy();
});

test("a streamed chat completion", async () => {
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini", seed: 7, temperature: 0, stream: true,
    messages: [{ role: "user", content: "Count to three." }],
  });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
  expect(text).toBeTruthy();
});

test("an embedding", async () => {
  const result = await client.embeddings.create({ model: "text-embedding-3-small", input: "llmtape" });
  expect(result.data[0].embedding.length).toBeGreaterThan(0);
});
