import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    globalSetup: ["./tests/llmtape.setup.js"],
    testTimeout: 30000,
  },
});
