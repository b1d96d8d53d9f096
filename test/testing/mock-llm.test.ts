import OpenAI, { APIConnectionError, APIError, AuthenticationError } from 'openai';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  countTokens,
  createMockLLM,
  type MockLLM,
  type MockLLMOptions,
  mockCompletion,
} from '../../src/testing/index.js';

const API_KEY = 'sk-test-mock-llm-key';
const messages = [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: 'Say hello to the mock' },
];

let llm: MockLLM | undefined;

afterEach(async () => {
  await llm?.close();
  llm = undefined;
});

async function start(options: MockLLMOptions = {}) {
  llm = await createMockLLM({ apiKey: API_KEY, ...options });
  const client = new OpenAI({ apiKey: API_KEY, baseURL: llm.baseURL, maxRetries: 0 });
  return { llm, client };
}

describe('token rule', () => {
  it('counts runs of non-whitespace and derives the reply from the prompt', () => {
    expect(countTokens('  Hello,  world!\n\tbye ')).toBe(3);
    expect(countTokens('')).toBe(0);

    const completion = mockCompletion('chat', { model: 'gpt-4o', messages });
    expect(completion).toMatchObject({
      text: 'Mock reply: You are terse. Say hello to the mock',
      promptTokens: 8,
      completionTokens: 10,
      totalTokens: 18,
      finishReason: 'stop',
    });
  });

  it('caps the completion, counts reasoning inside it and clamps cached tokens', () => {
    const completion = mockCompletion(
      'chat',
      { model: 'o1', messages, max_completion_tokens: 5 },
      { reasoningTokens: 3, cachedTokens: 100 },
    );
    expect(completion).toMatchObject({
      text: 'Mock reply:',
      promptTokens: 8,
      cachedTokens: 8,
      reasoningTokens: 3,
      completionTokens: 5,
      finishReason: 'length',
    });
    const responses = mockCompletion('responses', {
      model: 'gpt-4o',
      instructions: 'Be brief.',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'one two' }] }],
    });
    expect(responses.promptTokens).toBe(4);
  });
});

describe('createMockLLM with the openai SDK', () => {
  it('answers chat completions as JSON with deterministic usage and records the request', async () => {
    const { llm, client } = await start({ cachedTokens: 2, reasoningTokens: 1 });
    expect(llm.baseURL).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);

    const answer = await client.chat.completions.create({ model: 'gpt-4o', messages });
    const expected = mockCompletion(
      'chat',
      { model: 'gpt-4o', messages },
      { cachedTokens: 2, reasoningTokens: 1 },
    );

    expect(answer.object).toBe('chat.completion');
    expect(answer.choices[0]?.message.content).toBe(expected.text);
    expect(answer.choices[0]?.finish_reason).toBe('stop');
    expect(answer.usage).toMatchObject({
      prompt_tokens: 8,
      completion_tokens: 11,
      total_tokens: 19,
      prompt_tokens_details: { cached_tokens: 2 },
      completion_tokens_details: { reasoning_tokens: 1 },
    });
    const [request] = llm.requests();
    expect(request).toMatchObject({
      method: 'POST',
      path: '/v1/chat/completions',
      model: 'gpt-4o',
      stream: false,
      status: 200,
      completed: true,
      aborted: false,
      completion: expected,
    });
    expect(request?.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(request?.body).toMatchObject({ messages });
  });

  it('streams with include_usage: the usage chunk comes after the finish chunk, then [DONE]', async () => {
    const { llm, client } = await start();
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const finishAt = chunks.findIndex((chunk) => chunk.choices[0]?.finish_reason);
    const usageChunk = chunks.at(-1);
    expect(chunks[finishAt]?.choices[0]?.finish_reason).toBe('length');
    expect(finishAt).toBe(chunks.length - 2);
    expect(usageChunk?.choices).toEqual([]);
    expect(usageChunk?.usage).toMatchObject({ prompt_tokens: 8, completion_tokens: 4, total_tokens: 12 });
    expect(chunks.slice(0, -1).every((chunk) => chunk.usage === null)).toBe(true);
    const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe('Mock reply: You are');
    expect(llm.requests()[0]).toMatchObject({ stream: true, completed: true, sentTokens: 4, chunks: 8 });
  });

  it('sends the raw SSE bytes in OpenAI order: finish, usage, data: [DONE]', async () => {
    const { llm } = await start();
    const response = await fetch(`${llm.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = (await response.text()).split('\n\n').filter(Boolean);
    expect(events.every((event) => event.startsWith('data: '))).toBe(true);
    expect(events.at(-1)).toBe('data: [DONE]');
    const usage = JSON.parse(events.at(-2)!.slice('data: '.length));
    const finish = JSON.parse(events.at(-3)!.slice('data: '.length));
    expect(usage).toMatchObject({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 3 } });
    expect(finish).toMatchObject({ choices: [{ delta: {}, finish_reason: 'stop' }], usage: null });
  });

  it('streams without usage when include_usage is not set', async () => {
    const { client } = await start();
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.every((chunk) => !('usage' in chunk))).toBe(true);
  });

  it('omits usage on demand, in JSON and in streams', async () => {
    const { client } = await start({ faults: { omitUsage: true } });
    const answer = await client.chat.completions.create({ model: 'gpt-4o', messages });
    expect(answer.usage).toBeUndefined();
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.some((chunk) => chunk.usage)).toBe(false);
  });

  it('cuts the stream midway: the SDK iteration throws after the chunks sent', async () => {
    const { llm, client } = await start({ faults: { cutAfterChunks: 3 } });
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const received: unknown[] = [];
    await expect(async () => {
      for await (const chunk of stream) received.push(chunk);
    }).rejects.toThrow();
    expect(received).toHaveLength(3);
    expect(llm.requests()[0]).toMatchObject({
      cut: true,
      aborted: false,
      completed: false,
      chunks: 3,
      sentTokens: 2,
    });

    // Without a stream, the same fault drops the connection before any answer.
    await expect(client.chat.completions.create({ model: 'gpt-4o', messages })).rejects.toBeInstanceOf(
      APIConnectionError,
    );
    expect(llm.requests()[1]).toMatchObject({ cut: true, aborted: false, status: undefined });
  });

  it('answers a 5xx with an OpenAI-shaped body, as the SDK APIError', async () => {
    const { llm, client } = await start({
      faults: ({ index }) => (index === 0 ? { status: 503 } : undefined),
    });
    const failure = await client.chat.completions
      .create({ model: 'gpt-4o', messages })
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(APIError);
    expect(failure).toMatchObject({ status: 503, type: 'server_error', code: 'service_unavailable' });
    expect((failure as APIError).requestID).toBe(llm.requests()[0]?.id);

    await expect(client.chat.completions.create({ model: 'gpt-4o', messages })).resolves.toMatchObject({
      object: 'chat.completion',
    });
    llm.setFaults({ status: 500, error: { message: 'boom' } });
    await expect(client.chat.completions.create({ model: 'gpt-4o', messages })).rejects.toMatchObject({
      status: 500,
      error: { message: 'boom', type: 'server_error' },
    });
  });

  it('checks the bearer token when apiKey is set', async () => {
    const { llm } = await start();
    const wrong = new OpenAI({ apiKey: 'sk-wrong-key-123456', baseURL: llm.baseURL, maxRetries: 0 });
    const failure = await wrong.models.list().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(AuthenticationError);
    expect(failure).toMatchObject({ status: 401, code: 'invalid_api_key', type: 'invalid_request_error' });
    expect((failure as APIError).message).not.toContain('sk-wrong-key-123456');
  });

  it('lists models', async () => {
    const { client } = await start({ models: ['gpt-4o', 'o1'] });
    const models = [];
    for await (const model of client.models.list()) models.push(model.id);
    expect(models).toEqual(['gpt-4o', 'o1']);
  });

  it('answers the Responses API as JSON', async () => {
    const { llm, client } = await start({ cachedTokens: 1 });
    const response = await client.responses.create({
      model: 'gpt-4o',
      instructions: 'Be brief.',
      input: 'What is two plus two?',
    });
    expect(response.status).toBe('completed');
    expect(response.output_text).toBe('Mock reply: Be brief. What is two plus two?');
    expect(response.usage).toMatchObject({
      input_tokens: 7,
      output_tokens: 9,
      total_tokens: 16,
      input_tokens_details: { cached_tokens: 1 },
      output_tokens_details: { reasoning_tokens: 0 },
    });
    expect(llm.requests()[0]?.path).toBe('/v1/responses');
  });

  it('streams the Responses API, with usage on response.completed', async () => {
    const { client } = await start();
    const stream = await client.responses.create({ model: 'gpt-4o', input: 'one two three', stream: true });
    const events = [];
    for await (const event of stream) events.push(event);

    expect(events.map((event) => event.type)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array(5).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index));
    const completed = events.at(-1);
    if (completed?.type !== 'response.completed') throw new Error('expected response.completed last');
    expect(completed.response.usage).toMatchObject({ input_tokens: 3, output_tokens: 5, total_tokens: 8 });
    expect(completed.response.output_text ?? completed.response.output).toBeTruthy();
  });

  it('reports a Responses answer cut by max_output_tokens as incomplete', async () => {
    const { client } = await start();
    const stream = await client.responses.create({
      model: 'gpt-4o',
      input: 'one two three',
      max_output_tokens: 2,
      stream: true,
    });
    const events = [];
    for await (const event of stream) events.push(event);
    const last = events.at(-1);
    expect(last?.type).toBe('response.incomplete');
    if (last?.type !== 'response.incomplete') return;
    expect(last.response.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(last.response.usage?.output_tokens).toBe(2);
  });

  it('stops generating when the client aborts mid-stream, and records it', async () => {
    const { llm, client } = await start({ tokensPerSecond: 200 });
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'word '.repeat(200) }], stream: true },
      { signal: controller.signal },
    );
    let received = 0;
    for await (const _chunk of stream) {
      received += 1;
      if (received === 3) controller.abort();
    }
    await vi.waitFor(() => expect(llm.requests()[0]?.aborted).toBe(true));
    const { chunks } = llm.requests()[0]!;
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = llm.requests()[0]!;
    expect(after.chunks).toBe(chunks);
    expect(after.chunks).toBeLessThan(20);
    expect(after).toMatchObject({ completed: false, cut: false });
  });

  it('paces generation at tokensPerSecond after latencyMs', async () => {
    const { client } = await start({ latencyMs: 30, tokensPerSecond: 200 });
    const started = performance.now();
    // 2 prompt tokens → a 4-token reply: 30 ms + 4 × 5 ms.
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'a b' }] });
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
  });

  it('answers OpenAI-shaped 400 and 404 errors', async () => {
    const { client } = await start();
    await expect(client.chat.completions.create({ model: 'gpt-4o', messages: [] })).rejects.toMatchObject({
      status: 400,
      code: 'empty_array',
      param: 'messages',
    });
    await expect(client.post('/nowhere', { body: {} })).rejects.toMatchObject({ status: 404 });
  });

  it('refuses bad options when it starts', async () => {
    await expect(createMockLLM({ latencyMs: -1 })).rejects.toBeInstanceOf(ConfigError);
    await expect(createMockLLM({ faults: { status: 200 } })).rejects.toThrow(/faults\.status/);
  });
});
