/** The modes of the pytest plugin: `off` starts no proxy. */
export type LlmtapeMode = "replay" | "record" | "auto" | "off";

export interface LlmtapeOptions {
  /** Default: `$LLMTAPE_TEST_MODE`, else `replay` when `$CI` is set, else `auto`. */
  mode?: LlmtapeMode;
  /** Fixtures folder, from `cwd`. Default `tests/fixtures/llmtape`. */
  fixtures?: string;
  /** Default `process.cwd()`. */
  cwd?: string;
  /** The binary. Default `$LLMTAPE_BIN`, else `llmtape` on `PATH`. */
  bin?: string;
  /** Upstream base URL for record and auto (else `$LLMTAPE_UPSTREAM` or the binary's default). */
  upstream?: string;
  /** More `llmtape serve` arguments. */
  args?: string[];
  /** The server's environment. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Set `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL` (and dummy keys in replay) in `process.env`. Default true. */
  setEnv?: boolean;
  /** Each chunk of the server's log (stderr). */
  onLog?: (chunk: string) => void;
}

export interface Llmtape {
  /** `http://127.0.0.1:PORT`, or null when mode is `off`. */
  url: string | null;
  /** `url` + `/v1`, for OpenAI clients. */
  baseUrl: string | null;
  mode: LlmtapeMode;
  /** The absolute fixtures folder. */
  fixtures: string;
  /**
   * The requests that missed in replay (404) since the last call, read from
   * serve's log once it shows every miss `/_llmtape/metrics` counted (at
   * most 2 s). Call it in `beforeEach` so earlier misses are not this test's.
   */
  takeMisses(): Promise<LlmtapeMiss[]>;
  /**
   * In replay, rejects with an Error naming each missed request (method,
   * path, key, nearest recording) since the last call: use it as
   * `afterEach(() => llmtape.expectNoMisses())`, so a test whose client
   * swallowed the 404 still fails. Resolves in the other modes.
   */
  expectNoMisses(): Promise<void>;
  /** SIGTERM (SIGKILL after 10 s); restores the environment; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** One replay miss, as serve's request log line names it. */
export interface LlmtapeMiss {
  method?: string;
  path?: string;
  /** The request's key. */
  key?: string;
  /** The nearest recording's key, when one exists for the route. */
  nearest?: string;
  status?: string;
  [field: string]: string | undefined;
}

export function startLlmtape(options?: LlmtapeOptions): Promise<Llmtape>;
export const MODES: readonly LlmtapeMode[];
export const DEFAULT_FIXTURES: string;
