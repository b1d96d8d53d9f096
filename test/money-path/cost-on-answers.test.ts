import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { costOfTokens, parseUsd, resolvePricing } from '../../src/money.js';
import type { BillingStore } from '../../src/store/types.js';
import { storesUnderTest } from '../support/stores.js';
import { type OpenAILikeApp, PRICING, startOpenAILikeApp } from './openai-like.js';

/*
 * The cost on every answer, as the `openai` client sees it: a billed JSON answer carries its
 * settled cost and the balance left (`x-billing-cost`, `x-billing-balance`, exact decimal USD),
 * and a stream's usage chunk, when the client asked for usage, carries `usage.cost`.
 */
const stores = await storesUnderTest('cost on answers');
const PRICES = resolvePricing(PRICING);
const ask = {
  model: 'gpt-4o',
  messages: [{ role: 'user' as const, content: 'How much was that?' }],
  max_tokens: 300,
};

describe.each(stores)('the cost on every answer (%s)', (_name, createStore) => {
  let app: OpenAILikeApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  async function start(chain = {}) {
    const store: BillingStore = await createStore();
    app = await startOpenAILikeApp(store, chain);
    return app;
  }

  function clientOf(started: OpenAILikeApp, customer: string) {
    return new OpenAI({
      apiKey: 'unused',
      baseURL: `${started.url}/v1`,
      maxRetries: 0,
      defaultHeaders: { 'x-customer': customer },
    });
  }

  /** What the upstream billed for its last answer, priced exactly. */
  function lastUpstreamCost(started: OpenAILikeApp) {
    const request = started.llm.requests().at(-1)!;
    return costOfTokens(
      PRICES.get(request.model!)!,
      request.completion!.promptTokens,
      request.completion!.completionTokens,
    ).total;
  }

  it('a JSON answer carries its exact cost and the balance it left', async () => {
    const started = await start();
    const customer = started.customerWith('5');
    const client = clientOf(started, customer);
    const first = await client.chat.completions.create(ask).withResponse();
    const firstCost = lastUpstreamCost(started);
    expect(parseUsd(first.response.headers.get('x-billing-cost')!, 'cost')).toBe(firstCost);
    expect(parseUsd(first.response.headers.get('x-billing-balance')!, 'balance')).toBe(
      parseUsd('5', 'usd') - firstCost,
    );
    expect(first.response.headers.get('x-billing-estimated')).toBeNull();
    const second = await client.chat.completions.create(ask).withResponse();
    const secondCost = lastUpstreamCost(started);
    expect(parseUsd(second.response.headers.get('x-billing-balance')!, 'balance')).toBe(
      parseUsd('5', 'usd') - firstCost - secondCost,
    );
  });

  it('a stream’s usage chunk carries usage.cost when the client asked for usage, and is hidden when it did not', async () => {
    const started = await start();
    const customer = started.customerWith('5');
    const client = clientOf(started, customer);
    const asked = await client.chat.completions.create({
      ...ask,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: (OpenAI.CompletionUsage & { cost?: string }) | undefined;
    for await (const chunk of asked) usage = (chunk.usage as typeof usage) ?? usage;
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    expect(parseUsd(usage!.cost!, 'cost')).toBe(lastUpstreamCost(started));

    // Not asked: the upstream was still asked for usage (to bill it), the client sees none.
    const silent = await client.chat.completions.create({ ...ask, stream: true });
    let chunks = 0;
    for await (const chunk of silent) {
      chunks += 1;
      expect(chunk.usage ?? undefined).toBeUndefined();
    }
    expect(chunks).toBeGreaterThan(0);
    expect(started.llm.requests().at(-1)!.completion!.completionTokens).toBeGreaterThan(0);
  });

  it('costHeaders: false leaves the answers as the upstream made them', async () => {
    const started = await start({ meterUsage: { costHeaders: false, flushIntervalMs: 20 } });
    const client = clientOf(started, started.customerWith('5'));
    const answer = await client.chat.completions.create(ask).withResponse();
    expect(answer.response.headers.get('x-billing-cost')).toBeNull();
    expect(answer.response.headers.get('x-billing-balance')).toBeNull();
    const stream = await client.chat.completions.create({
      ...ask,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: Record<string, unknown> | undefined;
    for await (const chunk of stream) usage = (chunk.usage as Record<string, unknown> | null) ?? usage;
    expect(usage).toBeDefined();
    expect(usage).not.toHaveProperty('cost');
  });
});
