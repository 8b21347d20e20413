// One llmtape for the run: replay when CI is set, else auto (LLMTAPE_TEST_MODE
// overrides), serving tests/fixtures/llmtape. globalSetup runs outside the
// test workers, so the URL travels to them through provide/inject.
import { startLlmtape } from "llmtape";

export default async function setup({ provide }) {
  const llmtape = await startLlmtape({ fixtures: "tests/fixtures/llmtape" });
  provide("llmtapeBaseUrl", llmtape.baseUrl);
  provide("llmtapeMode", llmtape.mode);
  return () => llmtape.stop();
}
