// The Vercel AI SDK recipe (README, Framework recipes): streamText hides a
// failed request (ai 5: awaiting the text rejects with "No output generated.
// Check the stream for errors."; the stream itself just ends) and hands the
// real error, llmtape's 404 with the nearest recording, only to onError: keep
// it and fail the test with it. (Without onError the miss still fails the
// test: tests/llmtape.setup.js checks serve's log after each test.)
import { createOpenAI } from "@ai-sdk/openai";
import { streamText } from "ai";
import { expect, test } from "vitest";
import { llmtape } from "./llmtape.setup.js";

const openai = createOpenAI({ baseURL: llmtape.baseUrl, apiKey: process.env.OPENAI_API_KEY });

async function streamedText(prompt) {
  let failure;
  const result = streamText({
    model: openai.chat("gpt-4o-mini"),
    prompt,
    temperature: 0,
    seed: 7,
    onError: ({ error }) => { failure = error; },
  });
  let text;
  try {
    text = await result.text;
  } catch (error) {
    throw failure ?? error;
  }
  if (failure) throw failure;
  return text;
}

test("streamText through llmtape", async () => {
  expect(await streamedText("Name a planet.")).toBeTruthy();
});

test("a replay miss in streamText fails the test through onError", async () => {
  if (llmtape.mode !== "replay") return;
  await expect(streamedText("A question nobody recorded.")).rejects.toThrow(/llmtape has no recording/);
  // This miss is expected: taken here, so the afterEach check passes.
  const [miss] = await llmtape.takeMisses();
  expect(miss).toMatchObject({ method: "POST", path: "/v1/chat/completions", status: "404" });
});
