import type OpenAI from 'openai';
import { APIError, RateLimitError } from 'openai';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Billing, createBilling } from '../../src/create-billing.js';
import { softCapRouter } from '../../src/soft-cap-router/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import {
  createDodoEmulator,
  createMockLLM,
  type DodoEmulator,
  type MockLLM,
  mockCompletion,
} from '../../src/testing/index.js';
import {
  customerFromApiKey,
  proxyTo,
  type RunningApp,
  recordingLogger,
  startApp,
} from '../tier-rate-limit/harness.js';

const HEADER = 'x-llm-billing-downgraded-from';
/** 5 prompt tokens + 7 completion tokens ("Mock reply: one two three four five"). */
const request = {
  model: 'gpt-4o',
  messages: [{ role: 'user' as const, content: 'one two three four five' }],
  max_tokens: 20,
};
const TOKENS = mockCompletion('chat', request).totalTokens;

describe('softCapRouter through Dodo subscription webhooks', () => {
  let dodo: DodoEmulator;
  let llm: MockLLM;
  let store: MemoryStore;
  let billing: Billing;
  let app: RunningApp;
  let creditsId: string;
  let customerId: string;
  let plusId: string;
  let teamId: string;
  let client: OpenAI;
  const logger = recordingLogger();

  const start = async (options: { chargeSubscribers?: boolean; hardCap?: number; meter?: boolean } = {}) => {
    billing = createBilling({
      store,
      dodo: dodo.client({ maxRetries: 0 }),
      creditEntitlementId: creditsId,
      customerId: customerFromApiKey,
      pricing: {
        'gpt-4o': { input: '2.50', output: '10.00' },
        'gpt-4o-mini': { input: '0.15', output: '0.60' },
      },
      logger,
    });
    const downgrade = { 'gpt-4o': 'gpt-4o-mini' };
    const plans = {
      [plusId]: {
        softCap: { tokens: 20 },
        downgrade,
        ...(options.hardCap ? { hardCap: { tokens: options.hardCap } } : {}),
      },
      [teamId]: { softCap: { tokens: 20 }, perSeat: true, downgrade },
    };
    const chain =
      options.meter === false
        ? [softCapRouter({ store, customerId: customerFromApiKey, plans, logger })]
        : [
            billing.tierRateLimit({ tiers: [{ name: 'all', minSpend: '0', rpm: 1_000 }] }),
            billing.softCapRouter({ plans, chargeSubscribers: options.chargeSubscribers }),
            billing.requireCredits(),
            billing.meterUsage(),
          ];
    app = await startApp({ store, dodo, chain, handler: proxyTo(llm), logger });
    client = app.client(customerId);
  };

  /** Subscribes through a checkout; resolves once `subscription.active` was applied. */
  const subscribe = async (productId: string, quantity = 1) => {
    const session = await dodo.client({ maxRetries: 0 }).checkoutSessions.create({
      product_cart: [{ product_id: productId, quantity }],
      customer: { customer_id: customerId },
    });
    const subscription = dodo.completeCheckout(session.session_id).subscription!;
    await dodo.waitForWebhooks({ type: 'subscription.active' });
    return subscription.subscription_id;
  };

  /** Tokens counted in the subscription's current period (as the store has them). */
  const usedTokens = async (subscriptionId: string) => {
    const subscription = (await store.getSubscriptions(customerId)).find(
      (candidate) => candidate.subscriptionId === subscriptionId,
    )!;
    const counters = await store.getUsage(
      customerId,
      `subscription:${subscriptionId}:${subscription.periodStart}`,
    );
    return counters.tokens ?? 0n;
  };

  /** One request; resolves once its usage is counted. Returns the model served and the header. */
  const send = async (subscriptionId?: string) => {
    const before = subscriptionId ? await usedTokens(subscriptionId) : 0n;
    const { data, response } = await client.chat.completions.create(request).withResponse();
    expect(llm.requests().at(-1)?.model).toBe(data.model);
    if (subscriptionId)
      await vi.waitFor(async () => expect(await usedTokens(subscriptionId)).toBe(before + BigInt(TOKENS)));
    return { model: data.model, downgradedFrom: response.headers.get(HEADER) };
  };
  const untouched = { model: 'gpt-4o', downgradedFrom: null };
  const downgraded = { model: 'gpt-4o-mini', downgradedFrom: 'gpt-4o' };

  beforeEach(async () => {
    dodo = await createDodoEmulator();
    llm = await createMockLLM();
    store = new MemoryStore();
    creditsId = dodo.createCreditEntitlement().id;
    customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    plusId = dodo.createSubscriptionProduct({ name: 'Plus', price: 2000 }).product_id;
    teamId = dodo.createSubscriptionProduct({ name: 'Team', price: 2500 }).product_id;
    logger.lines.length = 0;
  });
  afterEach(async () => {
    await app?.close();
    await billing?.close();
    await llm.close();
    await dodo.close();
  });

  it('a Plus subscriber past the soft cap gets the small model and the header, without spending credits', async () => {
    expect(TOKENS).toBe(12);
    await start();
    const subscriptionId = await subscribe(plusId);
    expect(dodo.balance(customerId, creditsId) ?? '0').toBe('0');
    expect(await send(subscriptionId)).toEqual(untouched);
    expect(await send(subscriptionId)).toEqual(untouched);
    // 24 tokens ≥ the cap of 20: routed.
    expect(await send(subscriptionId)).toEqual(downgraded);
    expect(await send(subscriptionId)).toEqual(downgraded);
    await billing.flush();
    expect(dodo.ingestedEvents()).toEqual([]);
    expect(unexpectedLines(logger.lines)).toEqual([]);
  });

  it('charges subscribers credits when the app says so (chargeSubscribers: true)', async () => {
    await start({ chargeSubscribers: true });
    await subscribe(plusId);
    const error = await client.chat.completions.create(request).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(APIError);
    expect(error).toMatchObject({ status: 402, code: 'insufficient_quota' });
  });

  it('a Team cap scales with seats, and with a seat change', async () => {
    await start();
    const subscriptionId = await subscribe(teamId, 2);
    // 2 seats × 20 = 40 tokens: 0, 12, 24, 36 used before each request.
    for (let index = 0; index < 4; index++) expect(await send(subscriptionId)).toEqual(untouched);
    expect(await send(subscriptionId)).toEqual(downgraded);

    await dodo.client({ maxRetries: 0 }).subscriptions.changePlan(subscriptionId, {
      product_id: teamId,
      quantity: 5,
      proration_billing_mode: 'do_not_bill',
    });
    await dodo.waitForWebhooks({ type: 'subscription.plan_changed' });
    // 60 used of 5 × 20 = 100.
    expect(await send(subscriptionId)).toEqual(untouched);
  });

  it('a renewal starts a new period with a new count', async () => {
    await start();
    const subscriptionId = await subscribe(plusId);
    await send(subscriptionId);
    await send(subscriptionId);
    expect(await send(subscriptionId)).toEqual(downgraded);
    dodo.renewSubscription(subscriptionId);
    await dodo.waitForWebhooks({ type: 'subscription.renewed' });
    expect(await usedTokens(subscriptionId)).toBe(0n);
    expect(await send(subscriptionId)).toEqual(untouched);
  });

  it('a cancelled subscription no longer routes: the request is billed to credits, untouched', async () => {
    await start();
    const subscriptionId = await subscribe(plusId);
    await send(subscriptionId);
    await send(subscriptionId);
    expect(await send(subscriptionId)).toEqual(downgraded);
    dodo.cancelSubscription(subscriptionId);
    await dodo.waitForWebhooks({ type: 'subscription.cancelled' });
    // Without a plan, requireCredits applies: no credits, 402.
    await expect(client.chat.completions.create(request)).rejects.toMatchObject({ status: 402 });
    dodo.addCredits(customerId, creditsId, '100');
    await dodo.waitForWebhooks({ type: 'credit.added' });
    expect(await send()).toEqual(untouched);
    await billing.flush();
    expect(dodo.ingestedEvents().map((event) => [event.event_name, event.metadata])).toEqual([
      ['llm.input_tokens', expect.objectContaining({ model: 'gpt-4o', tokens: 5 })],
      ['llm.output_tokens', expect.objectContaining({ model: 'gpt-4o', tokens: 7 })],
    ]);
  });

  it('past the hard cap: 429 usage_cap_exceeded, which the openai client does not retry', async () => {
    await start({ hardCap: 30 });
    const subscriptionId = await subscribe(plusId);
    for (let index = 0; index < 3; index++) await send(subscriptionId);
    const retrying = app.client(customerId, 2);
    const arrived = app.arrivals.length;
    const error = await retrying.chat.completions.create(request).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RateLimitError);
    expect(error).toMatchObject({ status: 429, code: 'usage_cap_exceeded', type: 'usage_cap_exceeded' });
    expect((error as RateLimitError).message).toMatch(
      /^429 You have reached your plan's usage cap for this billing period \(36 tokens of 30 tokens\)\. It resets on \d{4}-\d\d-\d\d\.$/,
    );
    expect(app.arrivals.length - arrived).toBe(1);
  });

  it('counts usage itself when meterUsage is not mounted', async () => {
    await start({ meter: false });
    const subscriptionId = await subscribe(plusId);
    expect(await send(subscriptionId)).toEqual(untouched);
    expect(await send(subscriptionId)).toEqual(untouched);
    expect(await send(subscriptionId)).toEqual(downgraded);
  });

  it('a USD cap counts the cost meterUsage settles; without meterUsage it says it cannot', async () => {
    // 5 × $2.50/1M + 7 × $10/1M = $0.0000825 a request.
    const usdPlans = { [plusId]: { softCap: { usd: '0.0001' }, downgrade: { 'gpt-4o': 'gpt-4o-mini' } } };
    billing = createBilling({
      store,
      dodo: dodo.client({ maxRetries: 0 }),
      creditEntitlementId: creditsId,
      customerId: customerFromApiKey,
      pricing: {
        'gpt-4o': { input: '2.50', output: '10.00' },
        'gpt-4o-mini': { input: '0.15', output: '0.60' },
      },
      logger,
    });
    app = await startApp({
      store,
      dodo,
      chain: [billing.softCapRouter({ plans: usdPlans }), billing.requireCredits(), billing.meterUsage()],
      handler: proxyTo(llm),
      logger,
    });
    client = app.client(customerId);
    const subscriptionId = await subscribe(plusId);
    expect(await send(subscriptionId)).toEqual(untouched);
    expect(await send(subscriptionId)).toEqual(untouched);
    expect(await send(subscriptionId)).toEqual(downgraded);
    expect(unexpectedLines(logger.lines)).toEqual([]);

    const alone = await startApp({
      store,
      chain: [softCapRouter({ store, customerId: customerFromApiKey, plans: usdPlans, logger })],
      handler: proxyTo(llm),
    });
    await alone.client(customerId).chat.completions.create(request);
    await alone.client(customerId).chat.completions.create(request);
    await alone.close();
    await vi.waitFor(() =>
      expect(logger.lines).toEqual([
        {
          level: 'warn',
          message: 'softCapRouter: a USD cap is counted by meterUsage, which this route does not mount',
        },
      ]),
    );
  });

  it('a customer without a subscription is untouched', async () => {
    await start({ meter: false });
    for (let index = 0; index < 4; index++) expect(await send()).toEqual(untouched);
  });
});

/** What the test's app logged besides the startup note that its two prices share default meters. */
function unexpectedLines(lines: readonly { message: string }[]) {
  return lines.filter((line) => !/`meters` is not set/.test(line.message));
}
