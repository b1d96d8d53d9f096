import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { estimateInputTokens, utf8ByteTokens } from '../../src/estimate/input.js';
import { costOfTokens, formatUsd, parseUsd, resolvePricing } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createMockLLM, type MockLLM, mockCompletion } from '../../src/testing/index.js';
import { type BillingApp, PRICING, startBillingApp, startDodo } from '../support/billing-app.js';

const GPT4O = resolvePricing(PRICING).get('gpt-4o')!;
const PROMPT = 'alpha beta gamma delta epsilon zeta eta theta iota kappa';
const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: PROMPT }], max_tokens: 40 };
/** The default estimator: the input bound the admission reserves. */
const BOUND = { estimateTokens: utf8ByteTokens, imageTokens: 1445 };

/** A proxy handler, as an app writes it: the `openai` SDK upstream, SSE passed through as it comes. */
function proxyTo(upstream: OpenAI): RequestHandler {
  return async (req, res) => {
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    if (!req.body.stream) {
      res.json(await upstream.chat.completions.create(req.body, { signal: abort.signal }));
      return;
    }
    res.setHeader('content-type', 'text/event-stream');
    try {
      const stream = await upstream.chat.completions.create(
        {
          ...(req.body as ChatCompletionCreateParamsStreaming),
          stream: true,
          stream_options: { include_usage: true },
        },
        { signal: abort.signal },
      );
      for await (const chunk of stream) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      res.end('data: [DONE]\n\n');
    } catch {
      res.end(); // the upstream broke off: the client sees the stream end early
    }
  };
}

describe('meterUsage on streams', () => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let llm: MockLLM;
  let app: BillingApp;
  let store: MemoryStore;
  let customer: string;
  let client: OpenAI;

  beforeAll(async () => {
    dodo = await startDodo();
    llm = await createMockLLM({ tokensPerSecond: 2000 });
    store = new MemoryStore();
    const upstream = new OpenAI({ apiKey: 'upstream', baseURL: llm.baseURL, maxRetries: 0 });
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      handler: proxyTo(upstream),
    });
  });
  afterAll(async () => {
    await app.close();
    await llm.close();
    await dodo.emulator.close();
  });
  afterEach(() => llm.setFaults(undefined));

  async function freshCustomer() {
    customer = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '100');
    client = new OpenAI({
      apiKey: 'client',
      baseURL: `${app.url}/v1`,
      maxRetries: 0,
      defaultHeaders: { 'x-customer': customer },
    });
  }

  const spent = async () => parseUsd('1', 'test') - ((await store.getBalance(customer))?.balance ?? 0n);

  async function eventsOf() {
    await app.billing.flush();
    return dodo.emulator.ingestedEvents({ customerId: customer });
  }

  it('bills a complete stream from its usage chunk, which arrives after the finish chunk', async () => {
    await freshCustomer();
    const expected = mockCompletion('chat', REQUEST);
    const stream = await client.chat.completions.create({
      ...REQUEST,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const finishIndex = chunks.findIndex((chunk) => chunk.choices[0]?.finish_reason);
    expect(chunks.findIndex((chunk) => chunk.usage)).toBeGreaterThan(finishIndex);
    // The client asked for usage: its chunk carries the cost, exact.
    const cost = costOfTokens(GPT4O, expected.promptTokens, expected.completionTokens).total;
    expect((chunks.find((chunk) => chunk.usage)?.usage as { cost?: string } | undefined)?.cost).toBe(
      formatUsd(cost),
    );

    await expect.poll(spent).toBe(cost);
    const events = await eventsOf();
    expect(events.map((event) => event.metadata?.tokens)).toEqual([
      expected.promptTokens,
      expected.completionTokens,
    ]);
    expect(events.every((event) => event.metadata?.estimated === undefined)).toBe(true);
  });

  it('bills a stream whose client did not ask for usage from the usage chunk it asked the upstream for, and hides it', async () => {
    await freshCustomer();
    const expected = mockCompletion('chat', REQUEST);
    const stream = await client.chat.completions.create({ ...REQUEST, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.some((chunk) => chunk.usage)).toBe(false);
    expect(llm.requests().at(-1)?.body).toMatchObject({ stream_options: { include_usage: true } });
    await expect
      .poll(spent)
      .toBe(costOfTokens(GPT4O, expected.promptTokens, expected.completionTokens).total);
    const events = await eventsOf();
    expect(events.every((event) => event.metadata?.estimated === undefined)).toBe(true);
  });

  it('bills a JSON completion from its usage', async () => {
    await freshCustomer();
    const expected = mockCompletion('chat', REQUEST);
    await client.chat.completions.create(REQUEST);
    await expect
      .poll(spent)
      .toBe(costOfTokens(GPT4O, expected.promptTokens, expected.completionTokens).total);
  });

  it('bills a stream cut midway from an estimate of what was generated, flagged estimated', async () => {
    await freshCustomer();
    llm.setFaults({ cutAfterChunks: 5 });
    const stream = await client.chat.completions.create({ ...REQUEST, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text.length).toBeGreaterThan(0);

    const events = await eventsOf();
    expect(events).toHaveLength(2);
    expect(events.every((event) => event.metadata?.estimated === true)).toBe(true);
    const [input, output] = events.map((event) => Number(event.metadata?.tokens));
    // The admission's bound of the input, and one token per byte of the text generated.
    expect(input).toBe(estimateInputTokens({ ...REQUEST, stream: true }, BOUND));
    expect(output).toBe(Buffer.byteLength(text));
    expect(await spent()).toBe(costOfTokens(GPT4O, input!, output!).total);
  });

  it('bills a stream that ends without a usage chunk from an estimate', async () => {
    await freshCustomer();
    llm.setFaults({ omitUsage: true });
    const stream = await client.chat.completions.create({ ...REQUEST, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    const events = await eventsOf();
    expect(events.map((event) => [event.metadata?.tokens, event.metadata?.estimated])).toEqual([
      [estimateInputTokens({ ...REQUEST, stream: true }, BOUND), true],
      // One token per byte of the text, at most the request's 40-token limit.
      [Math.min(Buffer.byteLength(text), REQUEST.max_tokens), true],
    ]);
  });

  it('bills what was generated when the client disconnects mid-stream, and stops the upstream', async () => {
    await freshCustomer();
    const slow = new AbortController();
    const stream = await client.chat.completions.create(
      {
        ...REQUEST,
        max_tokens: 400,
        messages: [{ role: 'user', content: `${PROMPT} `.repeat(30) }],
        stream: true,
      },
      { signal: slow.signal },
    );
    let received = '';
    try {
      for await (const chunk of stream) {
        received += chunk.choices[0]?.delta.content ?? '';
        if (received.length > 40) slow.abort();
      }
    } catch {
      // aborted by us
    }
    await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(0n);
    const events = await eventsOf();
    expect(events.map((event) => event.metadata?.estimated)).toEqual([true, true]);
    // Never less than what reached the client (one token per byte bounds it), never more than
    // the request's limit (the upstream cannot pass it either).
    const billed = Number(events[1]!.metadata?.tokens);
    expect(billed).toBeGreaterThanOrEqual(Buffer.byteLength(received));
    expect(billed).toBeLessThanOrEqual(400);
    await expect.poll(() => llm.requests().at(-1)?.aborted).toBe(true);
  });
});
