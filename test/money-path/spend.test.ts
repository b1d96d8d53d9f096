import { afterEach, describe, expect, it } from 'vitest';
import { BillingError } from '../../src/errors.js';
import { consoleLogger } from '../../src/logger.js';
import { buildSettlement, type SettlementPricing } from '../../src/meter-usage/settlement.js';
import { costOfTokens, formatUsd, type Money, parseUsd, resolvePricing } from '../../src/money.js';
import { resolveMeters, resolveModelPricing } from '../../src/options.js';
import { utcDate } from '../../src/spend/day-period.js';
import { MAX_SPEND_DAYS, readSpend } from '../../src/spend/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { BillingStore } from '../../src/store/types.js';
import { storesUnderTest } from '../support/stores.js';
import { type OpenAILikeApp, PRICING, startOpenAILikeApp, upstreamBilled } from './openai-like.js';

const stores = await storesUnderTest('spend');
const DAY_MS = 86_400_000;
const PRICES = resolvePricing(PRICING);

function settlementConfig(extra: Partial<SettlementPricing> = {}): SettlementPricing {
  const pricing = resolveModelPricing(PRICING, undefined, 'test');
  return {
    pricing,
    meters: resolveMeters({}, pricing, 'test'),
    logger: consoleLogger,
    usageRetentionMs: 62 * DAY_MS,
    ...extra,
  };
}

describe.each(stores)('billing.spend (%s)', (_name, createStore) => {
  let app: OpenAILikeApp | undefined;
  let store: BillingStore;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('adds up, by day and by model, exactly what the balance lost, under concurrent requests and streams', async () => {
    store = await createStore();
    app = await startOpenAILikeApp(store);
    const { customerWith, chat, billing, llm } = app;
    const customer = customerWith('5');
    const other = customerWith('5');
    const ask = (model: string, stream: boolean, tokens: number) => ({
      model,
      messages: [{ role: 'user', content: `hello ${tokens}` }],
      max_tokens: tokens,
      ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
    });
    const bodies = Array.from({ length: 16 }, (_, i) =>
      ask(i % 3 === 0 ? 'gpt-4o-mini' : 'gpt-4o', i % 4 === 0, 50 + 37 * i),
    );
    const responses = await Promise.all(bodies.map((body) => chat(customer, body)));
    await Promise.all(responses.map((response) => response.text()));
    expect(responses.every((response) => response.status === 200)).toBe(true);
    // Someone else's requests are not this customer's spend.
    await (await chat(other, ask('o1', false, 500))).text();

    const billed = upstreamBilled(llm);
    const othersBill = llm
      .requests()
      .filter((request) => request.model === 'o1')
      .reduce(
        (sum, request) =>
          sum +
          costOfTokens(
            PRICES.get('o1')!,
            request.completion!.promptTokens,
            request.completion!.completionTokens,
          ).total,
        0n,
      );
    const customersBill = billed - othersBill;
    // Yesterday to tomorrow, so a run across midnight (UTC) still finds every request.
    const now = Date.now();
    const range = { from: new Date(now - DAY_MS), to: new Date(now + DAY_MS) };
    await expect
      .poll(async () => (await billing.spend(customer, range)).total.cost)
      .toBe(formatUsd(customersBill));
    const report = await billing.spend(customer, range);
    expect(report.days.map((day) => day.date)).toEqual([
      utcDate(now - DAY_MS),
      utcDate(now),
      utcDate(now + DAY_MS),
    ]);
    expect(report.from).toBe(utcDate(now - DAY_MS));
    expect(report.currency).toBe('USD');

    // The balance lost exactly the total.
    const view = await store.getBalance(customer);
    expect(parseUsd('5', 'start') - view!.balance).toBe(customersBill);

    // Days sum to the total; models sum to their day; tokens are the upstream's.
    let daysCost: Money = 0n;
    for (const day of report.days) {
      daysCost += parseUsd(day.cost, 'day');
      const models = Object.values(day.models);
      expect(models.reduce((sum, model) => sum + parseUsd(model.cost, 'model'), 0n)).toBe(
        parseUsd(day.cost, 'day'),
      );
      expect(models.reduce((sum, model) => sum + model.tokens, 0)).toBe(day.tokens);
      expect(day.inputTokens + day.outputTokens).toBe(day.tokens);
    }
    expect(daysCost).toBe(customersBill);
    const mine = llm.requests().filter((request) => request.model !== 'o1');
    const tokensOf = (model: string) =>
      mine
        .filter((request) => request.model === model)
        .reduce(
          (sum, request) => sum + request.completion!.promptTokens + request.completion!.completionTokens,
          0,
        );
    const models = report.days.reduce<Record<string, number>>((all, day) => {
      for (const [model, spend] of Object.entries(day.models)) all[model] = (all[model] ?? 0) + spend.tokens;
      return all;
    }, {});
    expect(models).toEqual({ 'gpt-4o': tokensOf('gpt-4o'), 'gpt-4o-mini': tokensOf('gpt-4o-mini') });
    expect(report.total.inputTokens).toBe(
      mine.reduce((sum, request) => sum + request.completion!.promptTokens, 0),
    );
    expect(report.total.outputTokens).toBe(
      mine.reduce((sum, request) => sum + request.completion!.completionTokens, 0),
    );
  });

  it('puts each settlement on its own UTC day, counts a repeated settlement once, and covered usage as tokens only', async () => {
    store = await createStore();
    const config = settlementConfig();
    await store.syncBalance('cus_days', parseUsd('10', 'start'), store.now());
    const today = Date.parse(`${utcDate(Date.now())}T12:00:00Z`);
    const settle = (id: string, at: number, model: string, input: number, output: number, charge = true) =>
      store.settle(
        buildSettlement(config, {
          customerId: 'cus_days',
          settlementId: id,
          records: [{ model, inputTokens: input, outputTokens: output }],
          chargeCredits: charge,
          now: at,
        }),
      );
    const cost = (model: string, input: number, output: number) =>
      costOfTokens(PRICES.get(model)!, input, output).total;
    await settle('a', today - 2 * DAY_MS, 'gpt-4o', 1_000, 100);
    await settle('b', today - 2 * DAY_MS + 60_000, 'gpt-4o-mini', 1, 1);
    await settle('b', today - 2 * DAY_MS + 60_000, 'gpt-4o-mini', 1, 1); // the same settlement again
    await settle('c', today - 12 * 3_600_000 + 1, 'o1', 7, 3); // 00:00:00.001 today
    await settle('d', today, 'gpt-4o', 5, 5, false); // a subscription covered it

    const report = await readSpend(store, 'cus_days', {
      from: utcDate(today - 3 * DAY_MS),
      to: utcDate(today),
    });
    expect(report.days.map((day) => [day.date, day.cost, day.tokens])).toEqual([
      [utcDate(today - 3 * DAY_MS), '0', 0],
      [utcDate(today - 2 * DAY_MS), formatUsd(cost('gpt-4o', 1_000, 100) + cost('gpt-4o-mini', 1, 1)), 1_102],
      [utcDate(today - DAY_MS), '0', 0],
      [utcDate(today), formatUsd(cost('o1', 7, 3)), 20],
    ]);
    expect(report.days[1]!.models).toEqual({
      'gpt-4o': { cost: formatUsd(cost('gpt-4o', 1_000, 100)), tokens: 1_100 },
      'gpt-4o-mini': { cost: formatUsd(cost('gpt-4o-mini', 1, 1)), tokens: 2 },
    });
    expect(report.days[3]!.models).toEqual({
      o1: { cost: formatUsd(cost('o1', 7, 3)), tokens: 10 },
      'gpt-4o': { cost: '0', tokens: 10 },
    });
    expect(report.total).toEqual({
      cost: formatUsd(cost('gpt-4o', 1_000, 100) + cost('gpt-4o-mini', 1, 1) + cost('o1', 7, 3)),
      inputTokens: 1_013,
      outputTokens: 109,
      tokens: 1_122,
    });
    // What the balance lost is what the days say.
    const view = await store.getBalance('cus_days');
    expect(parseUsd('10', 'start') - view!.balance).toBe(parseUsd(report.total.cost, 'total'));
  });

  it('refuses a range it cannot read, with a clear error, and reads nothing', async () => {
    store = await createStore();
    let reads = 0;
    const counting = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'getUsage') reads += 1;
        return Reflect.get(target, property, receiver);
      },
    });
    const refused = async (range: unknown, pattern: RegExp) => {
      const error = await readSpend(counting, 'cus_x', range as never).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(BillingError);
      expect((error as BillingError).code).toBe('ERR_ELB_INVALID_SPEND_RANGE');
      expect((error as BillingError).status).toBe(400);
      expect((error as Error).message).toMatch(pattern);
    };
    await refused({ from: '2026-11-02', to: '2026-11-01' }, /`from` \(2026-11-02\) is after `to`/);
    await refused({ from: '2025-01-01', to: '2026-01-02' }, /longer than 366 days/);
    await refused({ from: '2026-02-30', to: '2026-03-01' }, /not a calendar date/);
    await refused({ from: 'yesterday', to: '2026-03-01' }, /`from` must be a date/);
    await refused({ from: '2026-03-01' }, /`to` must be a date/);
    await refused(undefined, /pass `\{ from, to \}`/);
    await expect(readSpend(counting, '', { from: '2026-01-01', to: '2026-01-01' })).rejects.toThrow(
      /`customerId` must be a non-empty string/,
    );
    expect(reads).toBe(0);
    // The longest range allowed: a leap year's 366 days.
    const year = await readSpend(store, 'cus_x', { from: '2024-01-01', to: '2024-12-31' });
    expect(year.days).toHaveLength(MAX_SPEND_DAYS);
    expect(year.total.cost).toBe('0');
  });
});

describe('spend retention', () => {
  it('keeps a day for spendRetentionMs after its last request, then forgets it', async () => {
    let now = Date.parse('2026-11-30T10:00:00Z');
    const store = new MemoryStore({ now: () => now });
    await store.settle(
      buildSettlement(settlementConfig({ spendRetentionMs: 60_000 }), {
        customerId: 'cus_r',
        settlementId: 's',
        records: [{ model: 'gpt-4o', inputTokens: 10, outputTokens: 10 }],
        chargeCredits: true,
        now,
      }),
    );
    const range = { from: '2026-11-30', to: '2026-11-30' };
    expect((await readSpend(store, 'cus_r', range)).total.tokens).toBe(20);
    now += 60_001;
    expect((await readSpend(store, 'cus_r', range)).total).toEqual({
      cost: '0',
      inputTokens: 0,
      outputTokens: 0,
      tokens: 0,
    });
  });
});
