import { ConfigError } from '../../errors.js';
import type { OpenAIErrorBody } from './http.js';
import type { MockCompletion, MockCompletionSettings } from './tokens.js';

/** Failures to inject, for one request or all of them. */
export interface MockLLMFaults {
  /**
   * Answer this HTTP status (after `latencyMs`) with an OpenAI-shaped error body instead of a
   * completion, e.g. `500`, `503`, `429`.
   * @default undefined (no error)
   */
  status?: number;
  /** Replaces the error body's fields (with `status`). @default OpenAI's body for that status */
  error?: Partial<OpenAIErrorBody['error']>;
  /** Extra headers on the error answer, e.g. `{ 'retry-after': '1' }`. @default {} */
  headers?: Readonly<Record<string, string>>;
  /**
   * Destroy the socket after this many server-sent events (a connection lost mid-stream; the
   * client's stream errors). `0` cuts right after the headers. A non-streaming request is
   * dropped without an answer. A stream with no more events than this is cut after its last
   * event, before the response is properly ended.
   * @default undefined (never cut)
   */
  cutAfterChunks?: number;
  /**
   * Leave usage out: no `usage` in a JSON body, no usage chunk in a Chat stream even with
   * `include_usage`, `usage: null` in a Responses answer.
   * @default false
   */
  omitUsage?: boolean;
}

/** Faults for every request, or a function choosing them per request (by `index`, `body`…). */
export type MockLLMFaultSetting = MockLLMFaults | ((request: MockLLMRequest) => MockLLMFaults | undefined);

/** Options of {@link createMockLLM}. Every field is optional. */
export interface MockLLMOptions extends MockCompletionSettings {
  /** Port to listen on. @default 0 (a free port) */
  port?: number;
  /** Interface to listen on. @default '127.0.0.1' */
  host?: string;
  /**
   * When set, every request must carry `Authorization: Bearer <apiKey>`; otherwise `401` with
   * OpenAI's body (`code: "invalid_api_key"` for a wrong key, `code: null` for none).
   * @default undefined (any key, or none, is accepted)
   */
  apiKey?: string;
  /** Models listed by `GET /v1/models`. Requests for other models are still answered. @default ['gpt-4o', 'gpt-4o-mini', 'o1'] */
  models?: readonly string[];
  /** Delay before the answer's headers (time to first byte), in ms. @default 0 */
  latencyMs?: number;
  /**
   * Generation speed: streamed tokens are paced at this rate, and a JSON answer waits for its
   * whole completion (reasoning included) at this rate. @default Infinity (no pacing)
   */
  tokensPerSecond?: number;
  /** Faults to inject; can be changed later with `setFaults`. @default undefined (none) */
  faults?: MockLLMFaultSetting;
  /** Largest accepted request body, in bytes (`413` above). @default 16 MiB */
  bodyLimitBytes?: number;
}

/** One request the mock received, as `requests()` returns it (a snapshot). */
export interface MockLLMRequest {
  /** 0-based arrival order (reset by `reset()`). */
  index: number;
  /** The `x-request-id` the mock answered with. */
  id: string;
  method: string;
  /** Path without the query string, e.g. `/v1/chat/completions`. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The parsed JSON body, or `undefined` when there was none (or it was not JSON). */
  body: unknown;
  /** `body.model` when it is a string. */
  model: string | undefined;
  /** `body.stream === true`. */
  stream: boolean;
  /** HTTP status answered, once the headers were sent. */
  status: number | undefined;
  /** What the mock computed for a completion request (sent in full unless cut or aborted). */
  completion: MockCompletion | undefined;
  /** Server-sent events written (streams only). */
  chunks: number;
  /** Visible completion tokens written so far (streams: as sent; JSON: all or nothing). */
  sentTokens: number;
  /** The answer was written to its end. */
  completed: boolean;
  /** The client went away before the answer ended; the generation was stopped. */
  aborted: boolean;
  /** The mock cut the connection on purpose (`cutAfterChunks`). */
  cut: boolean;
}

/** A running mock LLM, from {@link createMockLLM}. */
export interface MockLLM {
  /** Pass to `new OpenAI({ baseURL })`; ends with `/v1`, e.g. `http://127.0.0.1:49152/v1`. */
  readonly baseURL: string;
  /** The server's origin, e.g. `http://127.0.0.1:49152`. */
  readonly url: string;
  readonly port: number;
  /** Snapshots of the requests received so far, oldest first. */
  requests(): MockLLMRequest[];
  /** Forgets the recorded requests (and restarts `index` at 0). */
  reset(): void;
  /** Replaces the faults for the requests that arrive from now on; `undefined` clears them. */
  setFaults(faults: MockLLMFaultSetting | undefined): void;
  /** Stops generations in progress, drops open connections and stops listening. */
  close(): Promise<void>;
}

export interface ResolvedMockLLMOptions {
  port: number;
  host: string;
  apiKey: string | undefined;
  models: readonly string[];
  latencyMs: number;
  tokensPerSecond: number;
  bodyLimitBytes: number;
  completion: MockCompletionSettings;
}

function check(condition: boolean, option: string, expected: string, value: unknown): void {
  if (!condition) {
    throw new ConfigError(
      'ERR_ELB_MOCK_LLM_OPTION',
      `createMockLLM: \`${option}\` must be ${expected} (got ${String(value)}).`,
    );
  }
}

const isCount = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0;

export function resolveMockLLMOptions(options: Readonly<MockLLMOptions>): ResolvedMockLLMOptions {
  const {
    port = 0,
    host = '127.0.0.1',
    apiKey,
    models = ['gpt-4o', 'gpt-4o-mini', 'o1'],
    latencyMs = 0,
    tokensPerSecond = Number.POSITIVE_INFINITY,
    bodyLimitBytes = 16 * 1024 * 1024,
    defaultMaxTokens,
    cachedTokens,
    reasoningTokens,
    reply,
    wholeRequestPrompt,
    maxOutputTokens,
    fillToCap,
  } = options;
  check(isCount(port) && port <= 65_535, 'port', 'an integer from 0 to 65535', port);
  check(
    apiKey === undefined || (typeof apiKey === 'string' && apiKey !== ''),
    'apiKey',
    'a non-empty string',
    apiKey,
  );
  check(Number.isFinite(latencyMs) && latencyMs >= 0, 'latencyMs', 'a number of ms ≥ 0', latencyMs);
  check(tokensPerSecond > 0, 'tokensPerSecond', 'a number > 0 (Infinity for no pacing)', tokensPerSecond);
  check(
    defaultMaxTokens === undefined || isCount(defaultMaxTokens),
    'defaultMaxTokens',
    'an integer ≥ 0',
    defaultMaxTokens,
  );
  check(
    cachedTokens === undefined || typeof cachedTokens === 'function' || isCount(cachedTokens),
    'cachedTokens',
    'an integer ≥ 0 or a function',
    cachedTokens,
  );
  check(
    reasoningTokens === undefined || typeof reasoningTokens === 'function' || isCount(reasoningTokens),
    'reasoningTokens',
    'an integer ≥ 0 or a function',
    reasoningTokens,
  );
  check(isCount(bodyLimitBytes) && bodyLimitBytes > 0, 'bodyLimitBytes', 'an integer > 0', bodyLimitBytes);
  return {
    port,
    host,
    apiKey,
    models: [...models],
    latencyMs,
    tokensPerSecond,
    bodyLimitBytes,
    completion: {
      defaultMaxTokens,
      cachedTokens,
      reasoningTokens,
      reply,
      wholeRequestPrompt,
      maxOutputTokens,
      fillToCap,
    },
  };
}

export function validateFaults(faults: MockLLMFaultSetting | undefined): void {
  if (faults === undefined || typeof faults === 'function') return;
  const { status, cutAfterChunks } = faults;
  check(
    status === undefined || (Number.isInteger(status) && status >= 400 && status <= 599),
    'faults.status',
    'an HTTP error status from 400 to 599',
    status,
  );
  check(
    cutAfterChunks === undefined || isCount(cutAfterChunks),
    'faults.cutAfterChunks',
    'an integer ≥ 0',
    cutAfterChunks,
  );
}
