import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { type MetersOption, resolveMetering } from '../../src/metering.js';
import {
  costOfTokens,
  formatCredits,
  type Money,
  parseCredits,
  resolvePricing,
  unitsPerCredit,
} from '../../src/money.js';
import { applySetup } from '../../src/setup/apply.js';
import { type BillingConfig, planSetup } from '../../src/setup/plan.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';
import { SEED_PRICING } from './support.js';

/**
 * A model whose prices per-model meters carry exactly at 100 credits per USD. One only: Dodo's
 * usage plan carries at most 3 meters, and per-model meters take two per model.
 */
const PER_MODEL_PRICING = {
  'gpt-4.1': { input: '2.00', output: '8.00' },
};

const CASES: { strategy: string; config: BillingConfig }[] = [
  {
    strategy: 'weighted (the seed: GPT-4o, GPT-4o-mini, o1)',
    config: { pricing: SEED_PRICING, creditsPerDollar: 100, meters: { strategy: 'weighted' } },
  },
  {
    strategy: 'per-model',
    config: { pricing: PER_MODEL_PRICING, creditsPerDollar: 100, meters: { strategy: 'per-model' } },
  },
];

/** A deterministic spread of odd token counts (primes, 1s, large), three models in turn. */
function requests(models: readonly string[], count: number) {
  let seed = 7;
  const next = (limit: number) => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
    return seed % limit;
  };
  return Array.from({ length: count }, (_, i) => ({
    model: models[i % models.length] as string,
    inputTokens: i % 10 === 0 ? 1 : 1 + next(20_000),
    outputTokens: i % 7 === 0 ? 0 : 1 + next(3_001),
  }));
}

describe.each(CASES)('setup’s meters price usage exactly as meterUsage does: $strategy', ({ config }) => {
  let emulator: DodoEmulator;
  let entitlementId: string;
  let usagePlanId: string;
  let close: () => Promise<void>;
  let url: string;
  let billing: ReturnType<typeof createBilling>;
  const store = new MemoryStore();

  beforeAll(async () => {
    emulator = await createDodoEmulator({ meterDelayMs: 0 });
    const result = await applySetup(planSetup(config), emulator.client({ maxRetries: 0 }));
    expect(result.ok).toBe(true);
    entitlementId = result.ids.creditEntitlementId!;
    usagePlanId = result.ids.usagePlanProductId!;
    billing = createBilling({
      store,
      dodo: emulator.client({ maxRetries: 0 }),
      creditEntitlementId: entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: config.pricing,
      creditsPerDollar: config.creditsPerDollar,
      meters: config.meters as MetersOption,
    });
    const app = express().use(express.json());
    app.post('/v1/chat/completions', billing.meterUsage({ flushIntervalMs: 10 }), (req, res) => {
      res.locals.billing.record(req.body);
      res.json({ ok: true });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await billing.close();
      await emulator.close();
    };
  });
  afterAll(() => close?.());

  it('Dodo deducts, to the unit, the cost meterUsage settles — per meter, over 120 requests', async () => {
    const customer = emulator.createCustomer({ email: 'exact@example.com' }).customer_id;
    // The customer's API account: subscribed to setup's usage plan, whose meters bill the credits.
    emulator.subscribe(customer, usagePlanId, { onDemand: 'mandate' });
    emulator.setBalance(customer, entitlementId, '100000');
    const perCredit = unitsPerCredit(config.creditsPerDollar ?? 100);
    const pricing = resolvePricing(config.pricing);
    const metering = resolveMetering(config.meters, pricing, perCredit);
    const sent = requests(Object.keys(config.pricing), 120);
    const expectedByMeter = new Map<string, Money>();
    let total: Money = 0n;
    for (const usage of sent) {
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-customer': customer },
        body: JSON.stringify(usage),
      });
      expect(response.status).toBe(200);
      const cost = costOfTokens(pricing.get(usage.model)!, usage.inputTokens, usage.outputTokens);
      total += cost.total;
      const names = metering.forModel(usage.model);
      for (const kind of ['input', 'output'] as const) {
        expectedByMeter.set(names[kind], (expectedByMeter.get(names[kind]) ?? 0n) + cost[kind]);
      }
    }

    await billing.flush();
    await emulator.settle();
    // What the local money path settled…
    const usage = await store.getUsage(customer, new Date().toISOString().slice(0, 7));
    expect(usage.cost).toBe(total);
    // …is what Dodo's meters deducted, meter by meter, to the unit.
    const meterNames = new Map<string, string>();
    const meters = (await emulator.client().meters.list({ page_size: 100 })).items;
    for (const meter of meters) meterNames.set(meter.id, meter.event_name);
    const deductedByMeter = new Map<string, Money>();
    for (const deduction of emulator.meterDeductions({ customerId: customer })) {
      const name = meterNames.get(deduction.meterId)!;
      const money = parseCredits(deduction.credits, perCredit);
      // Exact on its own: no digit finer than one money unit, nothing carried to the next one.
      expect(formatCredits(money, perCredit)).toBe(deduction.credits);
      deductedByMeter.set(name, (deductedByMeter.get(name) ?? 0n) + money);
    }
    expect(Object.fromEntries(deductedByMeter)).toEqual(Object.fromEntries(expectedByMeter));
    expect(parseCredits(emulator.balance(customer, entitlementId)!, perCredit)).toBe(
      parseCredits('100000', perCredit) - total,
    );
  });
});
