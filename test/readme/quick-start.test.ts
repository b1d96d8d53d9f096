import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { costOfTokens, parseCredits, resolvePricing, unitsPerCredit } from '../../src/money.js';
import { applySetup } from '../../src/setup/apply.js';
import { planSetup } from '../../src/setup/plan.js';
import {
  createDodoEmulator,
  createMockLLM,
  type DodoEmulator,
  type MockLLM,
} from '../../src/testing/index.js';

/**
 * The README's quick start (`quick-start.ts`, the README block verbatim), run as written against
 * the Dodo emulator set up by `setup` from the same prices, with a real `openai` client as the
 * caller: what Dodo's meters deduct for two differently priced models equals what the app billed.
 */
const PRICING = {
  'gpt-4o': { input: '2.50', output: '10.00' },
  'gpt-4o-mini': { input: '0.15', output: '0.60' },
};
const CENTS = unitsPerCredit(100);

let dodo: DodoEmulator;
let llm: MockLLM;
let server: import('node:http').Server;
let quickStart: typeof import('./quick-start.js');
let usagePlanProductId: string;
let creditEntitlementId: string;

beforeAll(async () => {
  dodo = await createDodoEmulator();
  llm = await createMockLLM();
  const { ids } = await applySetup(
    planSetup({ pricing: PRICING, creditsPerDollar: 100, meters: { strategy: 'weighted' } }),
    dodo.client(),
  );
  creditEntitlementId = ids.creditEntitlementId!;
  usagePlanProductId = ids.usagePlanProductId!;
  Object.assign(process.env, {
    DODO_PAYMENTS_API_KEY: dodo.apiKey,
    DODO_PAYMENTS_BASE_URL: dodo.baseURL,
    DODO_PAYMENTS_WEBHOOK_KEY: dodo.webhookKey,
    DODO_CREDIT_ENTITLEMENT_ID: creditEntitlementId,
    UPSTREAM_BASE_URL: llm.baseURL,
  });
  quickStart = await import('./quick-start.js');
  server = quickStart.app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  dodo.setWebhookUrl(`http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/dodo`);
});

afterAll(async () => {
  await quickStart?.billing.close();
  await new Promise((resolve) => server?.close(resolve));
  await llm?.close();
  await dodo?.close();
  for (const name of ['DODO_PAYMENTS_API_KEY', 'DODO_PAYMENTS_BASE_URL', 'DODO_PAYMENTS_WEBHOOK_KEY']) {
    delete process.env[name];
  }
});

it('bills two differently priced models on Dodo exactly as the app does, JSON and streamed', async () => {
  const customer = dodo.createCustomer({ email: 'quick@example.com' });
  const customerId = customer.customer_id;
  dodo.subscribe(customerId, usagePlanProductId, { onDemand: 'mandate' }); // the API account
  dodo.addCredits(customerId, creditEntitlementId, '500'); // $5.00
  const { apiKeys } = await import('./your-app.js');
  apiKeys.set('sk-quick-start', customerId);
  const client = new OpenAI({
    apiKey: 'sk-quick-start',
    baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    maxRetries: 0,
  });

  // Tier 1 of the guide allows 3 requests a minute: gpt-4o and gpt-4o-mini as JSON, then a stream.
  const costs: string[] = [];
  for (const model of ['gpt-4o', 'gpt-4o-mini'] as const) {
    const { data, response } = await client.chat.completions
      .create({ model, messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 200 })
      .withResponse();
    expect(data.usage?.completion_tokens).toBeGreaterThan(0);
    costs.push(response.headers.get('x-billing-cost')!);
  }
  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'And now in six.' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamedUsage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) streamedUsage = chunk.usage ?? streamedUsage;
  expect(streamedUsage?.completion_tokens).toBeGreaterThan(0);
  await expect(
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'A fourth?' }] }),
  ).rejects.toMatchObject({ status: 429, code: 'rate_limit_exceeded' });
  expect(costs.every((cost) => /^0\.\d+$/.test(cost))).toBe(true);

  // What the upstream billed, priced per model: the truth both sides must agree with.
  const prices = resolvePricing(PRICING);
  let billed = 0n;
  for (const request of llm.requests()) {
    const price = prices.get(request.model!)!;
    billed += costOfTokens(
      price,
      request.completion!.promptTokens,
      request.completion!.completionTokens,
    ).total;
  }
  await quickStart.billing.flush();
  await dodo.settle();
  const dodoBalance = parseCredits(dodo.balance(customerId, creditEntitlementId)!, CENTS);
  const start = parseCredits('500', CENTS);
  // Dodo keeps credits to its entitlement's precision; weighted meters deduct each model exactly.
  expect(start - dodoBalance).toBe(billed);
});
