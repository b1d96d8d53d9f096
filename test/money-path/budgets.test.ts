import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { BillingAlert } from '../../src/alerts/index.js';
import { parseUsd } from '../../src/money.js';
import type { BillingStore } from '../../src/store/types.js';
import { storesUnderTest } from '../support/stores.js';
import { type OpenAILikeApp, startOpenAILikeApp, upstreamBilled } from './openai-like.js';

const stores = await storesUnderTest('budgets');

/** Each request may cost at most about $0.02 (2,000 output tokens of gpt-4o) and is billed that. */
const ask = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }], max_tokens: 2_000 };

describe.each(stores)('budgets per API key (%s)', (_name, createStore) => {
  let app: OpenAILikeApp | undefined;
  let store: BillingStore;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  async function start(shared: Record<string, unknown> = {}) {
    store = await createStore();
    app = await startOpenAILikeApp(
      store,
      {},
      {
        shared: {
          budgetKey: (req: { get(name: string): string | undefined }) => req.get('x-api-key'),
          ...shared,
        },
      },
    );
    return app;
  }

  it('a key never spends more than its hard budget plus one request, concurrently; other keys are not held by it', async () => {
    const { customerWith, chat, billing, llm } = await start();
    const customer = customerWith('10');
    await billing.setBudget(customer, 'sk-limited', { hard: '0.10', soft: '0.05' });
    const limited = { 'x-api-key': 'sk-limited' };
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () => chat(customer, ask, limited).then((r) => r.status)),
    );
    expect(statuses.filter((status) => status === 402).length).toBeGreaterThan(10);
    const admitted = statuses.filter((status) => status === 200).length;
    const spent = upstreamBilled(llm);
    const oneRequest = spent / BigInt(admitted);
    expect(spent).toBeLessThanOrEqual(10n ** 11n + oneRequest); // $0.10 plus one request's cost
    await expect.poll(async () => (await billing.budget(customer, 'sk-limited'))?.held).toBe('0');
    const budget = await billing.budget(customer, 'sk-limited');
    expect(budget).toMatchObject({
      key: 'sk-limited',
      period: 'month',
      hard: '0.1',
      soft: '0.05',
      remaining: '0',
    });
    expect(parseUsd(budget!.spent, 'spent')).toBe(spent);
    // The key's own 402 says it is the key's budget, not the account's.
    const refused = await chat(customer, ask, limited);
    expect(refused.status).toBe(402);
    expect(await refused.json()).toMatchObject({
      error: { type: 'insufficient_quota', code: 'budget_exceeded' },
    });
    // Another key of the same customer, and no key at all, still spend the account's credits.
    expect((await chat(customer, ask, { 'x-api-key': 'sk-other' })).status).toBe(200);
    expect((await chat(customer, ask)).status).toBe(200);
  });

  it('says when a key passes its soft limit, and what its hard limit leaves', async () => {
    const { customerWith, chat, billing } = await start();
    const customer = customerWith('10');
    await billing.setBudget(customer, 'sk-soft', { hard: '1.00', soft: '0.03' });
    const headers = { 'x-api-key': 'sk-soft' };
    const first = await chat(customer, ask, headers);
    // What the budget leaves after this request's settled cost.
    const spent = parseUsd((await billing.budget(customer, 'sk-soft'))!.spent, 'spent');
    expect(spent).toBeGreaterThan(0n);
    expect(parseUsd(first.headers.get('x-billing-budget-remaining')!, 'remaining')).toBe(
      parseUsd('1', 'hard') - spent,
    );
    expect(first.headers.get('x-billing-budget-soft-limit')).toBeNull();
    for (let i = 0; i < 3; i++) await chat(customer, ask, headers);
    const past = await chat(customer, ask, headers);
    expect(past.status).toBe(200);
    expect(past.headers.get('x-billing-budget-soft-limit')).toBe('reached');
  });

  it('fires the soft limit and each share of the hard limit once, however many requests settle at once', async () => {
    const alerts: BillingAlert[] = [];
    const { customerWith, chat, billing } = await start({
      alerts: { on: (alert: BillingAlert) => void alerts.push(alert) }, // 50, 80 and 100 % by default
    });
    const customer = customerWith('10');
    await billing.setBudget(customer, 'sk-alerted', { hard: '0.10', soft: '0.03' });
    const headers = { 'x-api-key': 'sk-alerted' };
    await Promise.all(Array.from({ length: 12 }, () => chat(customer, ask, headers)));
    await expect.poll(async () => (await billing.budget(customer, 'sk-alerted'))?.held).toBe('0');
    const spent = parseUsd((await billing.budget(customer, 'sk-alerted'))!.spent, 'spent');
    const expected: (string | number)[] = ['soft', 50, 80];
    if (spent >= parseUsd('0.10', 'hard')) expected.push(100);
    await expect.poll(() => alerts.filter((alert) => alert.kind === 'budget').length).toBe(expected.length);
    const budgetAlerts = alerts.filter((alert) => alert.kind === 'budget');
    expect(budgetAlerts.map((alert) => alert.crossed).sort()).toEqual(expected.sort());
    for (const alert of budgetAlerts) {
      expect(alert).toMatchObject({ customerId: customer, key: 'sk-alerted', hard: '0.1' });
      expect(parseUsd(alert.spent, 'spent')).toBeGreaterThanOrEqual(parseUsd(alert.threshold, 'threshold'));
    }
    // Another key's spend never fires this key's alerts.
    await chat(customer, ask, { 'x-api-key': 'sk-other' });
    expect(alerts.filter((alert) => alert.kind === 'budget')).toHaveLength(expected.length);
  });

  it('refuses a budget key no event could carry, before anything is held', async () => {
    const { customerWith, chat } = await start();
    const customer = customerWith('1');
    const response = await chat(customer, ask, { 'x-api-key': `sk ${randomUUID()}` });
    expect(response.status).toBe(400);
  });
});
