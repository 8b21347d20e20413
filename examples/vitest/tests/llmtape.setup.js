// vitest setupFiles: runs in the test worker before each test file, so the
// proxy it starts (one per test file, on 127.0.0.1:0) has set
// OPENAI_BASE_URL before the file builds its clients, and the misses in its
// log are this file's alone. replay when CI is set, else auto
// (LLMTAPE_TEST_MODE overrides), serving tests/fixtures/llmtape.
import { afterAll, afterEach, beforeEach } from "vitest";
import { startLlmtape } from "llmtape";

export const llmtape = await startLlmtape({ fixtures: "tests/fixtures/llmtape" });

// A replay miss fails the test that caused it, even when its client
// swallowed the 404 (as streamText does without onError).
beforeEach(async () => {
  await llmtape.takeMisses();
});
afterEach(() => llmtape.expectNoMisses());
afterAll(() => llmtape.stop());
