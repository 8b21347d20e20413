import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.js"],
    setupFiles: ["./tests/llmtape.setup.js"],
    testTimeout: 30000,
  },
});
