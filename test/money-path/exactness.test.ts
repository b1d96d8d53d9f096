import { describe, expect, it } from 'vitest';
import { meterUsage } from '../../src/meter-usage/index.js';
import { costOfTokens, parseUsd, resolvePricing } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { PRICING } from '../support/billing-app.js';

describe('money stays exact at volume', () => {
  it('100k settled requests deduct exactly the cost of their summed tokens', async () => {
    const pricing = resolvePricing(PRICING);
    const store = new MemoryStore();
    const start = parseUsd('1000000', 'test');
    await store.syncBalance('cus_volume', start, 1);
    const totals = new Map<string, { input: number; output: number }>();
    let seed = 42;
    const random = (max: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % max;
    };
    for (let i = 0; i < 100_000; i++) {
      const model = i % 3 === 0 ? 'gpt-4o-mini' : 'gpt-4o';
      const input = 1 + random(4000);
      const output = random(1000);
      const total = totals.get(model) ?? { input: 0, output: 0 };
      totals.set(model, { input: total.input + input, output: total.output + output });
      await store.settle({
        customerId: 'cus_volume',
        settlementId: `s${i}`,
        cost: costOfTokens(pricing.get(model)!, input, output).total,
        events: [],
        retentionMs: 60_000,
      });
    }
    let expected = 0n;
    for (const [model, total] of totals)
      expected += costOfTokens(pricing.get(model)!, total.input, total.output).total;
    const view = await store.getBalance('cus_volume');
    expect(view?.pending).toBe(expected);
    expect(view?.balance).toBe(start - expected);
  });

  it('meterUsage says at startup which option is wrong', () => {
    const base = { store: new MemoryStore(), dodo: {} as never, customerId: () => 'c', pricing: PRICING };
    expect(() => meterUsage({ ...base, dodo: undefined })).toThrow(/meterUsage: `dodo` is required/);
    expect(() => meterUsage({ ...base, batchSize: 1001 })).toThrow(/`batchSize` must be at most 1000/);
    expect(() => meterUsage({ ...base, meters: { input: 'a' } as never })).toThrow(/`meters` must be/);
    expect(() => meterUsage({ ...base, pricing: undefined })).toThrow(/meterUsage: `pricing` is required/);
  });
});
