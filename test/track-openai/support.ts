import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import OpenAI from 'openai';
import { costOfTokens, parseUsd, resolvePricing } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createMockLLM, type MockLLMOptions } from '../../src/testing/index.js';
import { trackOpenAI } from '../../src/track-openai/index.js';
import { PRICING, startBillingApp, startDodo } from '../support/billing-app.js';

const PRICES = resolvePricing(PRICING);

/** Exact cost of a call's tokens at `model`'s price. */
export function costOf(model: 'gpt-4o' | 'gpt-4o-mini', input: number, output: number): bigint {
  return costOfTokens(PRICES.get(model)!, input, output).total;
}

/**
 * The Dodo emulator, the mock LLM, and an app whose one route (`POST /v1/chat/completions`,
 * requireCredits + meterUsage, priced as gpt-4o, request id from `x-request-id`) runs the
 * handler the test sets, with an `openai` client to the mock LLM tracked by `trackOpenAI`.
 */
export async function startTrackedApp(llmOptions: MockLLMOptions = {}) {
  const dodo = await startDodo();
  const llm = await createMockLLM(llmOptions);
  const store = new MemoryStore();
  const openai = trackOpenAI(new OpenAI({ apiKey: 'upstream', baseURL: llm.baseURL, maxRetries: 0 }), {
    store,
    pricing: PRICING,
  });
  let handler: RequestHandler = (_req, res) => {
    res.status(500).end();
  };
  const app = await startBillingApp({
    store,
    emulator: dodo.emulator,
    entitlementId: dodo.entitlementId,
    handler: (req, res, next) => handler(req, res, next),
    requireCredits: {
      model: () => 'gpt-4o',
      requestId: (req) => req.get('x-request-id') ?? randomUUID(),
    },
  });

  /** A new customer holding $1.00 (100 credits). */
  function customerWithOneDollar(): string {
    const customer = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '100');
    return customer;
  }

  return {
    dodo,
    llm,
    store,
    app,
    openai,
    setHandler(next: RequestHandler) {
      handler = next;
    },
    customerWithOneDollar,
    /** POSTs the app's own (non-OpenAI) request shape as `customer`, with request id `requestId`. */
    post(
      customer: string,
      requestId: string,
      body: unknown = { text: 'summarize me' },
      signal?: AbortSignal,
    ) {
      return fetch(`${app.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-customer': customer, 'x-request-id': requestId },
        body: JSON.stringify(body),
        signal,
      });
    },
    /** What the customer's local balance went down by since $1.00. */
    async spent(customer: string): Promise<bigint> {
      return parseUsd('1', 'test') - ((await store.getBalance(customer))?.balance ?? 0n);
    },
    /** Events Dodo ingested for the customer, once everything queued was delivered. */
    async eventsOf(customer: string) {
      await app.billing.flush();
      return dodo.emulator.ingestedEvents({ customerId: customer });
    },
    async close() {
      await app.close();
      await llm.close();
      await dodo.emulator.close();
    },
  };
}

export type TrackedApp = Awaited<ReturnType<typeof startTrackedApp>>;
