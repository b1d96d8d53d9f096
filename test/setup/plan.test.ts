import express from 'express';
import { describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { ConfigError } from '../../src/errors.js';
import { exactDecimal, meterSpecs, resolveMetering } from '../../src/metering.js';
import { resolvePricing, unitsPerCredit } from '../../src/money.js';
import { planSetup } from '../../src/setup/plan.js';
import { MemoryStore } from '../../src/store/memory.js';
import { SEED_PRICING } from './support.js';

const CENTS = unitsPerCredit(100);

describe('exactDecimal', () => {
  it('writes terminating quotients exactly and refuses the others', () => {
    expect(exactDecimal(10n ** 10n, 2_500_000n)).toBe('4000');
    expect(exactDecimal(10n ** 10n, 2n ** 20n)).toBe('9536.7431640625');
    expect(exactDecimal(1n, 8n)).toBe('0.125');
    expect(exactDecimal(10n ** 10n, 150_000n)).toBeUndefined(); // 66666.666…
    expect(exactDecimal(1n, 2n ** 40n)).toBeUndefined(); // terminates, but past 12 decimals
  });
});

describe('planSetup: the seed on weighted meters', () => {
  const plan = planSetup({ pricing: SEED_PRICING, meters: { strategy: 'weighted' } });

  it('picks the base that divides every price and the credit: $0.05 per 1M, 200000 units per credit', () => {
    expect(plan.strategy).toBe('weighted');
    expect(plan.base).toBe('0.05');
    expect(
      plan.meters.map((meter) => [meter.eventName, meter.unitsPerCredit, meter.measurementUnit]),
    ).toEqual([
      ['llm.input_tokens', '200000', 'weighted tokens'],
      ['llm.output_tokens', '200000', 'weighted tokens'],
    ]);
    expect(plan.meters[0]?.models).toEqual([
      { model: 'gpt-4o', weight: 50n },
      { model: 'gpt-4o-mini', weight: 3n },
      { model: 'o1', weight: 300n },
    ]);
    expect(plan.meters[1]?.models.map((entry) => entry.weight)).toEqual([200n, 12n, 1200n]);
  });

  it('plans the USD entitlement, the metering product and the $5/$10/$50/$100 packs in cents', () => {
    expect(plan.entitlement).toMatchObject({
      name: 'USD credits',
      unit: 'USD cents',
      currency: 'USD',
      precision: 10,
      pricePerUnit: '0.01',
    });
    expect(plan.metering?.key).toBe('metering');
    expect(plan.topUps.map((pack) => [pack.key, pack.priceCents, pack.credits])).toEqual([
      ['top-up-5', 500, '500'],
      ['top-up-10', 1000, '1000'],
      ['top-up-50', 5000, '5000'],
      ['top-up-100', 10000, '10000'],
    ]);
    expect(plan.plans).toEqual([]);
  });

  it('issues credits per dollar as configured, and plans subscriptions', () => {
    const dollars = planSetup({
      pricing: SEED_PRICING,
      creditsPerDollar: 1,
      meters: { strategy: 'weighted' },
      topUps: ['5', '0.50'],
      plans: [
        { key: 'plus', name: 'Plus', price: '20.00' },
        { key: 'team', name: 'Team', price: 25, interval: 'Year', credits: '10' },
      ],
    });
    expect(dollars.entitlement.unit).toBe('USD');
    expect(dollars.meters[0]?.unitsPerCredit).toBe('20000000');
    expect(dollars.topUps.map((pack) => [pack.key, pack.name, pack.credits])).toEqual([
      ['top-up-5', '$5.00 credits', '5'],
      ['top-up-0.5', '$0.50 credits', '0.5'],
    ]);
    expect(dollars.plans.map((plan) => [plan.key, plan.priceCents, plan.interval, plan.credits])).toEqual([
      ['plan-plus', 2000, 'Month', undefined],
      ['plan-team', 2500, 'Year', '10'],
    ]);
  });

  it('keeps a pinned base, and refuses one that does not divide every price', () => {
    expect(
      planSetup({ pricing: SEED_PRICING, meters: { strategy: 'weighted', base: '0.01' } }).meters[0],
    ).toMatchObject({
      unitsPerCredit: '1000000',
      models: [
        { model: 'gpt-4o', weight: 250n },
        { model: 'gpt-4o-mini', weight: 15n },
        { model: 'o1', weight: 1500n },
      ],
    });
    expect(() =>
      planSetup({ pricing: SEED_PRICING, meters: { strategy: 'weighted', base: '0.10' } }),
    ).toThrow(/does not divide gpt-4o-mini's input price/);
  });
});

describe('planSetup: per-model meters', () => {
  it("computes the seed's figures for GPT-4o: 4000 and 1000 tokens per cent (400,000 / 100,000 per $1)", () => {
    const cents = planSetup({
      pricing: { 'gpt-4o': SEED_PRICING['gpt-4o'] },
      meters: { strategy: 'per-model' },
    });
    expect(cents.meters.map((meter) => [meter.eventName, meter.unitsPerCredit])).toEqual([
      ['gpt-4o.input_tokens', '4000'],
      ['gpt-4o.output_tokens', '1000'],
    ]);
    const dollars = planSetup({
      pricing: { 'gpt-4o': SEED_PRICING['gpt-4o'] },
      creditsPerDollar: 1,
      meters: { strategy: 'per-model' },
    });
    expect(dollars.meters.map((meter) => meter.unitsPerCredit)).toEqual(['400000', '100000']);
  });

  it('refuses a price whose tokens per credit do not terminate, naming the model and the weighted strategy', () => {
    const attempt = () => planSetup({ pricing: SEED_PRICING, meters: { strategy: 'per-model' } });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(/gpt-4o-mini's input tokens .* 66666\.666666… tokens.*strategy: 'weighted'/);
  });

  it('is refused the same way when the app starts meterUsage', () => {
    const billing = createBilling({
      store: new MemoryStore(),
      dodo: {} as never,
      customerId: () => 'cus_1',
      pricing: SEED_PRICING,
      meters: { strategy: 'per-model' },
    });
    expect(() => express().use(billing.meterUsage())).toThrow(
      /meterUsage: `meters`: gpt-4o-mini's input tokens/,
    );
  });

  it('refuses a defaultPrice that per-model meters would not bill on Dodo', () => {
    const billing = createBilling({
      store: new MemoryStore(),
      dodo: {} as never,
      customerId: () => 'cus_1',
      pricing: { 'gpt-4o': SEED_PRICING['gpt-4o'] },
      meters: { strategy: 'per-model' },
    });
    expect(() => billing.meterUsage({ defaultPrice: { input: '1', output: '2' } })).toThrow(/defaultPrice/);
  });
});

describe('planSetup: fixed event names and invalid configs', () => {
  it('accepts one shared meter only when every model it sums has the same price', () => {
    const same = planSetup({
      pricing: { a: { input: '1.00', output: '2.00' }, b: { input: '1.00', output: '2.00' } },
    });
    expect(same.strategy).toBe('names');
    expect(same.meters.map((meter) => [meter.eventName, meter.unitsPerCredit])).toEqual([
      ['llm.input_tokens', '10000'],
      ['llm.output_tokens', '5000'],
    ]);
    expect(() => planSetup({ pricing: SEED_PRICING })).toThrow(
      /"llm.input_tokens" would sum gpt-4o \(\$2.50 per 1M tokens\) and gpt-4o-mini \(\$0.15 per 1M tokens\)/,
    );
  });

  it('names the field of a bad config', () => {
    expect(() =>
      planSetup({ pricing: SEED_PRICING, meters: { strategy: 'weighted' }, topUps: ['5.001'] }),
    ).toThrow(/topUps\[0\]/);
    expect(() =>
      planSetup({
        pricing: SEED_PRICING,
        meters: { strategy: 'weighted' },
        plans: [{ key: 'Plus!', name: 'P', price: 1 }],
      }),
    ).toThrow(/plans\[0\]\.key/);
    expect(() => planSetup({ pricing: SEED_PRICING, meters: { strategy: 'hourly' } as never })).toThrow(
      /meters.strategy/,
    );
    expect(() => planSetup({ pricing: {} })).toThrow(/at least one model/);
  });

  it('weights each model exactly: weight × base is its price, for every model and kind', () => {
    const pricing = resolvePricing(SEED_PRICING);
    const metering = resolveMetering({ strategy: 'weighted' }, pricing, CENTS);
    for (const [model, price] of pricing) {
      const meter = metering.forModel(model);
      expect(meter.inputWeight * metering.base!).toBe(price.input);
      expect(meter.outputWeight * metering.base!).toBe(price.output);
    }
    expect(meterSpecs(metering, pricing, CENTS)).toHaveLength(2);
  });
});
