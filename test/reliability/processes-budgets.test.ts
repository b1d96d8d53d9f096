import { describe, expect, it } from 'vitest';
import { budgetPeriods } from '../../src/store/budget-period.js';
import { requireRedis } from '../support/redis.js';
import { appProcessSuite, COST, chat, customerWorth } from './support.js';

/*
 * A key's budget across real processes: two app processes on one Redis serve one key's burst.
 * Each request holds exactly what it settles (COST), so a budget of N × COST admits exactly N
 * whichever process serves them: only the store's atomic admission can keep them to it.
 */

const redisUrl = await requireRedis('reliability: key budgets across processes');

describe.runIf(redisUrl)('a key budget across two processes on one Redis', () => {
  const suite = appProcessSuite(redisUrl!);

  it('a burst of one key split over two processes is admitted up to its budget, not beyond', {
    timeout: 45_000,
  }, async () => {
    const { first, second, store } = await suite.twoApps();
    const { dodo } = suite;
    const customer = customerWorth(dodo, 100);
    await store.setBudget(customer, 'sk-team', { hard: 10n * COST, period: 'month' });
    // Both processes learn the balance first (no key), so the burst races on the store alone.
    for (const process of [first, second]) expect((await chat(process.url, customer)).status).toBe(200);

    const responses = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        chat((i % 2 ? first : second).url, customer, { apiKey: 'sk-team' }),
      ),
    );
    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(10);
    expect(statuses.filter((status) => status !== 200 && status !== 402)).toEqual([]);
    const refused = await responses.find((response) => response.status === 402)!.json();
    expect(refused).toMatchObject({ error: { type: 'insufficient_quota', code: 'budget_exceeded' } });
    const periods = budgetPeriods(Date.now());
    await expect.poll(async () => (await store.getBudget(customer, 'sk-team', periods))?.held).toBe(0n);
    expect(await store.getBudget(customer, 'sk-team', periods)).toMatchObject({ spent: 10n * COST });
    // Another key of the customer, and the account itself, still spend the account's credits.
    expect((await chat(first.url, customer, { apiKey: 'sk-other' })).status).toBe(200);
    expect((await store.getBalance(customer))?.balance).toBe(100n * COST - 13n * COST);
  });
});
