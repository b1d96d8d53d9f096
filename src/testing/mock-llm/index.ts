import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chatCompletionBody, chatCompletionEvents } from './chat.js';
import {
  BodyError,
  defaultErrorFor,
  type OpenAIErrorBody,
  openAIError,
  readJsonBody,
  sendJson,
} from './http.js';
import {
  type MockLLM,
  type MockLLMFaultSetting,
  type MockLLMFaults,
  type MockLLMOptions,
  type MockLLMRequest,
  type ResolvedMockLLMOptions,
  resolveMockLLMOptions,
  validateFaults,
} from './options.js';
import { responseBody, responsesEvents } from './responses.js';
import { pause, type SseEvent, writeSse } from './stream.js';
import { type MockEndpoint, mockCompletion } from './tokens.js';

export type {
  MockLLM,
  MockLLMFaultSetting,
  MockLLMFaults,
  MockLLMOptions,
  MockLLMRequest,
} from './options.js';
export {
  chatPromptTexts,
  countTokens,
  DEFAULT_MAX_TOKENS,
  type MockCompletion,
  type MockCompletionRequest,
  type MockCompletionSettings,
  type MockEndpoint,
  mockCompletion,
  responsesPromptTexts,
  type TokenSetting,
  type TokenSettingContext,
} from './tokens.js';

const MODEL_CREATED = 1_700_000_000;

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Everything one request's handling reads and updates. */
interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  record: MockLLMRequest;
  /** Aborted when the client disconnects or the mock closes. */
  signal: AbortSignal;
  headers: Record<string, string>;
}

/**
 * Starts an OpenAI-compatible upstream on loopback, for tests: `POST /v1/chat/completions`
 * (JSON, and SSE with `stream_options.include_usage`), `POST /v1/responses` (JSON and SSE) and
 * `GET /v1/models`, with deterministic replies and token counts (see {@link mockCompletion} for
 * the rule), configurable latency and speed, and injectable faults.
 *
 * @example
 * const llm = await createMockLLM({ apiKey: 'sk-test' });
 * const openai = new OpenAI({ apiKey: 'sk-test', baseURL: llm.baseURL });
 * const answer = await openai.chat.completions.create({
 *   model: 'gpt-4o',
 *   messages: [{ role: 'user', content: 'Hello there' }],
 * });
 * // answer.choices[0].message.content === 'Mock reply: Hello there'
 * // answer.usage: prompt_tokens 2, completion_tokens 4
 * await llm.close();
 */
export async function createMockLLM(options: Readonly<MockLLMOptions> = {}): Promise<MockLLM> {
  const config = resolveMockLLMOptions(options);
  validateFaults(options.faults);
  let faults: MockLLMFaultSetting | undefined = options.faults;
  let records: MockLLMRequest[] = [];
  const inFlight = new Set<AbortController>();
  let closing = false;

  const server = createServer(function mockLLMHandler(req, res) {
    const url = new URL(req.url ?? '/', 'http://mock-llm');
    const record: MockLLMRequest = {
      index: records.length,
      id: `req_${hex(12)}`,
      method: req.method ?? 'GET',
      path: url.pathname,
      headers: { ...req.headers },
      body: undefined,
      model: undefined,
      stream: false,
      status: undefined,
      completion: undefined,
      chunks: 0,
      sentTokens: 0,
      completed: false,
      aborted: false,
      cut: false,
    };
    records.push(record);

    const controller = new AbortController();
    inFlight.add(controller);
    res.on('finish', () => {
      record.completed = true;
    });
    res.on('close', () => {
      inFlight.delete(controller);
      if (!res.writableFinished && !record.cut && !closing) record.aborted = true;
      // Stops every timer of this generation: nothing keeps running for a client that left.
      controller.abort();
    });
    res.on('error', () => controller.abort());

    const exchange = { req, res, record, signal: controller.signal, headers: { 'x-request-id': record.id } };
    handle(exchange, config, () => faults).catch((error: unknown) => {
      if (!res.headersSent) {
        sendJson(res, 500, openAIError(`Mock LLM bug: ${String(error)}`, 'server_error'), exchange.headers);
        record.status = 500;
      } else {
        res.destroy();
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const origin = `http://${host}:${port}`;

  return {
    baseURL: `${origin}/v1`,
    url: origin,
    port,
    requests: () => structuredClone(records),
    reset() {
      records = [];
    },
    setFaults(next) {
      validateFaults(next);
      faults = next;
    },
    async close() {
      closing = true;
      for (const controller of inFlight) controller.abort();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

async function handle(
  exchange: Exchange,
  config: ResolvedMockLLMOptions,
  currentFaults: () => MockLLMFaultSetting | undefined,
): Promise<void> {
  const { req, record } = exchange;
  const auth = checkAuth(req, config.apiKey);
  if (auth) return answerJson(exchange, 401, auth);

  const route = `${record.method} ${record.path}`;
  if (route === 'GET /v1/models') {
    const data = config.models.map((id) => ({
      id,
      object: 'model',
      created: MODEL_CREATED,
      owned_by: 'mock-llm',
    }));
    return answerJson(exchange, 200, { object: 'list', data });
  }
  if (record.method === 'GET' && record.path.startsWith('/v1/models/')) {
    const id = decodeURIComponent(record.path.slice('/v1/models/'.length));
    if (!config.models.includes(id)) {
      const message = `The model '${id}' does not exist`;
      return answerJson(
        exchange,
        404,
        openAIError(message, 'invalid_request_error', 'model_not_found', 'model'),
      );
    }
    return answerJson(exchange, 200, { id, object: 'model', created: MODEL_CREATED, owned_by: 'mock-llm' });
  }
  const endpoint: MockEndpoint | undefined =
    route === 'POST /v1/chat/completions' ? 'chat' : route === 'POST /v1/responses' ? 'responses' : undefined;
  if (!endpoint) {
    return answerJson(exchange, 404, openAIError(`Invalid URL (${route})`, 'invalid_request_error'));
  }

  try {
    record.body = await readJsonBody(req, config.bodyLimitBytes);
  } catch (error) {
    if (error instanceof BodyError) return answerJson(exchange, error.status, error.body);
    throw error;
  }
  const body = record.body;
  if (isRecord(body)) {
    record.model = typeof body.model === 'string' ? body.model : undefined;
    record.stream = body.stream === true;
  }
  const invalid = validateBody(endpoint, body);
  if (invalid) return answerJson(exchange, 400, invalid);
  const request = body as Record<string, unknown>;

  const setting = currentFaults();
  const fault: MockLLMFaults =
    (typeof setting === 'function' ? setting(structuredClone(record)) : setting) ?? {};
  if (!(await pause(config.latencyMs, exchange.signal))) return;
  if (fault.status !== undefined) {
    const base = defaultErrorFor(fault.status);
    return answerJson(exchange, fault.status, { error: { ...base.error, ...fault.error } }, fault.headers);
  }

  const completion = mockCompletion(endpoint, request, config.completion);
  record.completion = completion;
  const model = record.model ?? '';
  const created = Math.floor(Date.now() / 1000);
  const withUsage = fault.omitUsage !== true;

  if (!record.stream) {
    if (fault.cutAfterChunks !== undefined) {
      record.cut = true;
      exchange.res.socket?.destroy();
      return;
    }
    const generation = Number.isFinite(config.tokensPerSecond)
      ? (completion.completionTokens * 1000) / config.tokensPerSecond
      : 0;
    if (!(await pause(generation, exchange.signal))) return;
    const answer =
      endpoint === 'chat'
        ? chatCompletionBody({ id: `chatcmpl-${hex(12)}`, created, model, completion, withUsage })
        : responseBody(responsesAnswer(request, model, created, completion, withUsage));
    record.sentTokens = completion.tokens.length;
    return answerJson(exchange, 200, answer);
  }

  const events =
    endpoint === 'chat'
      ? chatCompletionEvents(
          { id: `chatcmpl-${hex(12)}`, created, model, completion, withUsage },
          isRecord(request.stream_options) && request.stream_options.include_usage === true,
        )
      : responsesEvents(responsesAnswer(request, model, created, completion, withUsage));
  record.status = 200;
  await writeSse(exchange.res, events, {
    signal: exchange.signal,
    tokensPerSecond: config.tokensPerSecond,
    cutAfterEvents: fault.cutAfterChunks,
    headers: exchange.headers,
    onEvent(event: SseEvent) {
      record.chunks += 1;
      if (event.visible) record.sentTokens += 1;
    },
    onCut() {
      record.cut = true;
    },
  });
}

function responsesAnswer(
  request: Record<string, unknown>,
  model: string,
  createdAt: number,
  completion: ReturnType<typeof mockCompletion>,
  withUsage: boolean,
) {
  return {
    id: `resp_${hex(24)}`,
    messageId: `msg_${hex(24)}`,
    createdAt,
    model,
    completion,
    request,
    withUsage,
  };
}

function answerJson(
  exchange: Exchange,
  status: number,
  body: unknown,
  extraHeaders: Readonly<Record<string, string>> = {},
): void {
  exchange.record.status = status;
  sendJson(exchange.res, status, body, { ...extraHeaders, ...exchange.headers });
}

/** OpenAI's 401 bodies: no key at all, or a wrong one (shown redacted, as OpenAI does). */
function checkAuth(req: IncomingMessage, apiKey: string | undefined): OpenAIErrorBody | undefined {
  if (apiKey === undefined) return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  const given = match?.[1]?.trim();
  if (!given) {
    return openAIError(
      "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      'invalid_request_error',
    );
  }
  if (given === apiKey) return undefined;
  const redacted =
    given.length > 8 ? `${given.slice(0, 3)}${'*'.repeat(given.length - 7)}${given.slice(-4)}` : '***';
  return openAIError(
    `Incorrect API key provided: ${redacted}. You can find your API key at https://platform.openai.com/account/api-keys.`,
    'invalid_request_error',
    'invalid_api_key',
  );
}

/** The few 400s OpenAI answers that a client of the mock can plausibly trigger. */
function validateBody(endpoint: MockEndpoint, body: unknown): OpenAIErrorBody | undefined {
  if (!isRecord(body)) {
    return openAIError('The request body must be a JSON object.', 'invalid_request_error');
  }
  if (typeof body.model !== 'string' || body.model === '') {
    return openAIError('you must provide a model parameter', 'invalid_request_error');
  }
  if (endpoint === 'chat') {
    if (!Array.isArray(body.messages)) {
      return openAIError(
        "Missing required parameter: 'messages'.",
        'invalid_request_error',
        'missing_required_parameter',
        'messages',
      );
    }
    if (body.messages.length === 0) {
      return openAIError(
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        'invalid_request_error',
        'empty_array',
        'messages',
      );
    }
  }
  const caps = endpoint === 'chat' ? ['max_tokens', 'max_completion_tokens'] : ['max_output_tokens'];
  for (const name of caps) {
    const value = body[name];
    if (value === undefined || value === null) continue;
    if (!Number.isInteger(value) || (value as number) < 1) {
      return openAIError(
        `Invalid '${name}': expected an integer of at least 1, but got ${JSON.stringify(value)} instead.`,
        'invalid_request_error',
        'invalid_value',
        name,
      );
    }
  }
  return undefined;
}
