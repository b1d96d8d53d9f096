import { randomUUID } from 'node:crypto';
import OpenAI from 'openai';
import { Stream } from 'openai/streaming';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { MemoryStore } from '../../src/store/memory.js';
import { type MockCompletionSettings, mockCompletion } from '../../src/testing/index.js';
import { currentRequestBilling, trackOpenAI, usageRecordOf } from '../../src/track-openai/index.js';
import { PRICING } from '../support/billing-app.js';
import { costOf, startTrackedApp, type TrackedApp } from './support.js';

/** Every completion of this mock has cached prompt tokens and reasoning tokens. */
const SETTINGS: MockCompletionSettings = { cachedTokens: 2, reasoningTokens: 3 };
const CHAT = {
  model: 'gpt-4o-mini',
  messages: [{ role: 'user' as const, content: 'red orange yellow green blue indigo violet' }],
  max_tokens: 20,
};
const RESPONSE = {
  model: 'gpt-4o-mini',
  instructions: 'Answer briefly.',
  input: 'one two three four five',
  max_output_tokens: 20,
};
const month = () => new Date().toISOString().slice(0, 7);

describe('trackOpenAI: API shapes, usage details, and calls outside a request', () => {
  let t: TrackedApp;

  beforeAll(async () => {
    t = await startTrackedApp(SETTINGS);
  });
  afterAll(() => t.close());
  afterEach(() => t.llm.setFaults(undefined));

  it('bills Responses API calls, JSON and streamed, with cached and reasoning tokens in the events', async () => {
    let streamedText = '';
    t.setHandler(async (_req, res) => {
      const answer = await t.openai.responses.create(RESPONSE);
      const stream = await t.openai.responses.create({ ...RESPONSE, stream: true });
      for await (const event of stream) {
        if (event.type === 'response.output_text.delta') streamedText += event.delta;
      }
      res.json({ text: answer.output_text });
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    const response = await t.post(customer, requestId);
    const expected = mockCompletion('responses', RESPONSE, SETTINGS);
    expect(await response.json()).toEqual({ text: expected.text });
    expect(streamedText).toBe(expected.text);
    expect(expected).toMatchObject({ cachedTokens: 2, reasoningTokens: 3 });

    const one = costOf('gpt-4o-mini', expected.promptTokens, expected.completionTokens);
    await expect.poll(() => t.spent(customer)).toBe(2n * one);
    const events = await t.eventsOf(customer);
    const input = { model: 'gpt-4o-mini', tokens: expected.promptTokens, cached_tokens: 2 };
    const output = { model: 'gpt-4o-mini', tokens: expected.completionTokens, reasoning_tokens: 3 };
    expect(events.map((event) => [event.event_id, event.metadata])).toEqual([
      [`${requestId}:input`, { ...input, request_id: requestId }],
      [`${requestId}:output`, { ...output, request_id: requestId }],
      [`${requestId}:1:input`, { ...input, request_id: requestId }],
      [`${requestId}:1:output`, { ...output, request_id: requestId }],
    ]);
  });

  it('keeps cached and reasoning tokens of Chat Completions, and leaves the SDK types alone', async () => {
    let shapes: unknown;
    t.setHandler(async (_req, res) => {
      const { data, request_id } = await t.openai.chat.completions.create(CHAT).withResponse();
      const stream = await t.openai.chat.completions.create({ ...CHAT, stream: true });
      shapes = { requestId: request_id, isStream: stream instanceof Stream, controller: stream.controller };
      const [left, right] = stream.tee();
      let text = '';
      for await (const chunk of left) text += chunk.choices[0]?.delta.content ?? '';
      for await (const _ of right);
      res.json({ json: data.choices[0]?.message.content, text });
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    const expected = mockCompletion('chat', CHAT, SETTINGS);
    expect(await (await t.post(customer, requestId)).json()).toEqual({
      json: expected.text,
      text: expected.text,
    });
    expect(shapes).toEqual({
      requestId: expect.stringMatching(/^req_/),
      isStream: true,
      controller: expect.any(AbortController),
    });

    await expect
      .poll(() => t.spent(customer))
      .toBe(2n * costOf('gpt-4o-mini', expected.promptTokens, expected.completionTokens));
    const events = await t.eventsOf(customer);
    expect(
      events.map((event) => [
        event.metadata?.tokens,
        event.metadata?.cached_tokens,
        event.metadata?.reasoning_tokens,
      ]),
    ).toEqual([
      [expected.promptTokens, 2, undefined],
      [expected.completionTokens, undefined, 3],
      [expected.promptTokens, 2, undefined],
      [expected.completionTokens, undefined, 3],
    ]);
  });

  it('passes the usage chunk on, and bills it once, when the caller asked for it', async () => {
    let last: OpenAI.ChatCompletionChunk | undefined;
    t.setHandler(async (_req, res) => {
      const stream = await t.openai.chat.completions.create({
        ...CHAT,
        stream: true,
        stream_options: { include_usage: true },
      });
      for await (const chunk of stream) last = chunk;
      res.json({ usage: last?.usage });
    });
    const customer = t.customerWithOneDollar();
    const expected = mockCompletion('chat', CHAT, SETTINGS);
    await t.post(customer, randomUUID());
    expect(last).toMatchObject({ choices: [], usage: { prompt_tokens: expected.promptTokens } });
    await expect
      .poll(() => t.spent(customer))
      .toBe(costOf('gpt-4o-mini', expected.promptTokens, expected.completionTokens));
    expect(await t.eventsOf(customer)).toHaveLength(2);
  });

  it("bills the SDK's helpers built on create: chat.completions.stream()", async () => {
    t.setHandler(async (_req, res) => {
      const runner = t.openai.chat.completions.stream(CHAT);
      const final = await runner.finalChatCompletion();
      res.json({ text: final.choices[0]?.message.content });
    });
    const customer = t.customerWithOneDollar();
    const expected = mockCompletion('chat', CHAT, SETTINGS);
    expect(await (await t.post(customer, randomUUID())).json()).toEqual({ text: expected.text });
    await expect
      .poll(() => t.spent(customer))
      .toBe(costOf('gpt-4o-mini', expected.promptTokens, expected.completionTokens));
  });

  it('passes calls outside a request through, untouched and unbilled', async () => {
    const settle = vi.spyOn(t.store, 'settle');
    t.llm.reset();
    const answer = await t.openai.chat.completions.create(CHAT);
    const stream = await t.openai.chat.completions.create({ ...CHAT, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const expected = mockCompletion('chat', CHAT, SETTINGS);
    expect(answer.usage?.prompt_tokens).toBe(expected.promptTokens);
    expect(t.llm.requests().map((request) => request.body)).toEqual([CHAT, { ...CHAT, stream: true }]);
    expect(chunks).toHaveLength(expected.tokens.length + 2);
    expect(chunks.every((chunk) => !('usage' in chunk))).toBe(true);
    expect(currentRequestBilling()).toBeUndefined();
    expect(settle).not.toHaveBeenCalled();
    settle.mockRestore();
  });

  it('bills calls outside a request to an explicitly given customer, each on its own settlement', async () => {
    const customer = t.customerWithOneDollar();
    const batch = trackOpenAI(new OpenAI({ apiKey: 'upstream', baseURL: t.llm.baseURL, maxRetries: 0 }), {
      customerId: customer,
      store: t.store,
      pricing: PRICING,
    });
    await batch.chat.completions.create(CHAT);
    for await (const _ of await batch.responses.create({ ...RESPONSE, stream: true }));

    const chat = mockCompletion('chat', CHAT, SETTINGS);
    const response = mockCompletion('responses', RESPONSE, SETTINGS);
    const cost =
      costOf('gpt-4o-mini', chat.promptTokens, chat.completionTokens) +
      costOf('gpt-4o-mini', response.promptTokens, response.completionTokens);
    await expect.poll(async () => (await t.store.getUsage(customer, month())).cost).toBe(cost);
    const events = await t.eventsOf(customer);
    expect(events.map((event) => event.metadata?.tokens)).toEqual([
      chat.promptTokens,
      chat.completionTokens,
      response.promptTokens,
      response.completionTokens,
    ]);
    const [first, , third] = events.map((event) => event.event_id);
    expect(first).toMatch(/^openai-call:[0-9a-f-]{36}:input$/);
    expect(third).toMatch(/^openai-call:[0-9a-f-]{36}:input$/);
    expect(third).not.toBe(first);
  });

  it("records Anthropic's usage shape through record(), cache reads and writes billed as input", async () => {
    const anthropicUsage = {
      input_tokens: 50,
      cache_creation_input_tokens: 10,
      cache_read_input_tokens: 30,
      output_tokens: 20,
    };
    // A service function far from `res`: it finds the request through currentRequestBilling().
    const askClaude = async () => {
      currentRequestBilling()?.record(usageRecordOf('gpt-4o', anthropicUsage));
      return 'a reply';
    };
    t.setHandler(async (_req, res) => {
      res.json({ reply: await askClaude() });
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    await t.post(customer, requestId);
    await expect.poll(() => t.spent(customer)).toBe(costOf('gpt-4o', 90, 20));
    const events = await t.eventsOf(customer);
    expect(
      events.map((event) => [event.event_id, event.metadata?.tokens, event.metadata?.cached_tokens]),
    ).toEqual([
      [`${requestId}:input`, 90, 30],
      [`${requestId}:output`, 20, undefined],
    ]);
    expect(() => usageRecordOf('claude-sonnet-4-5', { text: 'no counts' })).toThrow(TypeError);
  });

  it('refuses a customer without a store, a non-client, and tracking a client twice', () => {
    const client = () => new OpenAI({ apiKey: 'x', baseURL: t.llm.baseURL });
    expect(() => trackOpenAI(client(), { customerId: 'cus_1' })).toThrow(/`store` must be a BillingStore/);
    expect(() => trackOpenAI(client(), { store: new MemoryStore() })).toThrow(/`pricing` is required/);
    expect(() =>
      trackOpenAI(client(), {
        customerId: (() => 'cus_1') as unknown as string,
        store: t.store,
        pricing: PRICING,
      }),
    ).toThrow(ConfigError);
    expect(() => trackOpenAI({} as OpenAI)).toThrow(/must be an OpenAI client/);
    const once = trackOpenAI(client());
    expect(() => trackOpenAI(once)).toThrow(/already tracked/);
  });
});
