import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createMockLLM, type MockLLM } from '../../src/testing/index.js';
import { startDodo } from '../support/billing-app.js';

const PRICING = {
  'gpt-4o': { input: '2.50', output: '10.00', maxOutputTokens: 16_384 },
  o1: { input: '15.00', output: '60.00', maxOutputTokens: 100_000 },
};

/** A proxy that answers after the upstream, and passes a stream on as it comes. */
function proxy(upstream: OpenAI): RequestHandler {
  return async (req, res) => {
    if (!req.body.stream) {
      res.json(await upstream.chat.completions.create(req.body));
      return;
    }
    res.setHeader('content-type', 'text/event-stream');
    try {
      const stream = await upstream.chat.completions.create(req.body as ChatCompletionCreateParamsStreaming);
      for await (const chunk of stream) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      res.end('data: [DONE]\n\n');
    } catch {
      res.end();
    }
  };
}

describe('a response the client or the upstream cuts is billed what the upstream bills', () => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let llm: MockLLM;
  let url: string;
  let store: MemoryStore;
  let close: () => Promise<void>;
  let flush: () => Promise<void>;

  beforeAll(async () => {
    dodo = await startDodo();
    // o1 reasons 5,000 tokens before it writes: they never show in the text.
    llm = await createMockLLM({
      tokensPerSecond: 2_000,
      reasoningTokens: ({ model }) => (model === 'o1' ? 5_000 : 0),
    });
    store = new MemoryStore();
    const billing = createBilling({
      store,
      dodo: dodo.emulator.client({ maxRetries: 0 }),
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      requestId: (req) => req.get('x-request-id') ?? randomUUID(),
      pricing: PRICING,
    });
    const app = express().use(express.json());
    app.post(
      '/v1/chat/completions',
      billing.chain({ meterUsage: { flushIntervalMs: 20 } }),
      proxy(new OpenAI({ apiKey: 'x', baseURL: llm.baseURL, maxRetries: 0 })),
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
    close = async () => {
      server.closeAllConnections();
      server.close();
      await billing.close();
      await llm.close();
      await dodo.emulator.close();
    };
    flush = () => billing.flush();
  });
  afterAll(() => close());

  const customerWith = (credits: string) => {
    const customer = dodo.emulator.createCustomer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, credits);
    return customer;
  };

  it('a client that leaves a JSON request early is billed the handler’s real usage, not an estimate', async () => {
    const customer = customerWith('100');
    const requestId = randomUUID();
    const leave = new AbortController();
    // o1 reasons for 2.5 s before it answers; the client is gone as soon as the upstream started.
    const body = {
      model: 'o1',
      messages: [{ role: 'user', content: 'one two three four five' }],
      max_completion_tokens: 6_000,
    };
    const before = llm.requests().length;
    const sent = fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-customer': customer, 'x-request-id': requestId },
      body: JSON.stringify(body),
      signal: leave.signal,
    }).catch(() => undefined);
    await expect.poll(() => llm.requests().length).toBe(before + 1);
    leave.abort();
    await sent;
    await expect.poll(() => llm.requests().at(-1)?.completed, { timeout: 5_000 }).toBe(true);
    await expect.poll(async () => (await store.getBalance(customer))?.reserved, { timeout: 5_000 }).toBe(0n);
    await flush();
    const upstream = llm.requests().at(-1)!.completion!;
    const events = dodo.emulator.ingestedEvents({ customerId: customer });
    expect(
      events.map((event) => [event.event_id, event.metadata?.tokens, event.metadata?.estimated]),
    ).toEqual([
      [`${requestId}:input`, upstream.promptTokens, undefined],
      [`${requestId}:output`, upstream.completionTokens, undefined],
    ]);
  });

  it('a reasoning stream cut before its usage is billed its whole output limit: never less than it can have cost', async () => {
    const customer = customerWith('10000');
    const requestId = randomUUID();
    llm.setFaults({ cutAfterChunks: 3 });
    try {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-customer': customer, 'x-request-id': requestId },
        body: JSON.stringify({
          model: 'o1',
          messages: [{ role: 'user', content: 'think hard' }],
          max_completion_tokens: 6_000,
          stream: true,
        }),
      });
      await response.text();
    } finally {
      llm.setFaults(undefined);
    }
    await expect.poll(async () => (await store.getBalance(customer))?.reserved, { timeout: 3_000 }).toBe(0n);
    await flush();
    const events = dodo.emulator.ingestedEvents({ customerId: customer });
    expect(events.every((event) => event.metadata?.estimated === true)).toBe(true);
    // It had reasoned 5,000 tokens and written a few when it was cut: billed the 6,000 it may have.
    expect(events.find((event) => event.event_id === `${requestId}:output`)?.metadata?.tokens).toBe(6_000);
  });
});
