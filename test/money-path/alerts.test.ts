import { randomUUID } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BillingAlert } from '../../src/alerts/index.js';
import { parseUsd } from '../../src/money.js';
import type { BillingStore } from '../../src/store/types.js';
import { type BillingApp, chat, startBillingApp, startDodo } from '../support/billing-app.js';
import { storesUnderTest } from '../support/stores.js';

const stores = await storesUnderTest('alerts');
/** At most 452 input and 50 output tokens, billed at that: $0.00163 a request. */
const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
const USAGE: [number, number] = [452, 50];

describe.each(stores)('low-balance alerts (%s)', (_name, createStore) => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let apps: BillingApp[] = [];
  beforeAll(async () => {
    dodo = await startDodo();
  });
  afterEach(async () => {
    await Promise.all(apps.map((app) => app.close()));
    apps = [];
  });

  it('fires each threshold once per crossing, however many instances settle at once, and again after a top-up', async () => {
    const alerts: BillingAlert[] = [];
    const store: BillingStore = await createStore();
    // Two instances on one store (on Redis, two clients would race the same way: settlements are atomic).
    const meterUsage = {
      alerts: { balanceBelow: ['0.04', '0.02', '0'], on: (alert: BillingAlert) => void alerts.push(alert) },
    };
    for (let i = 0; i < 2; i++) {
      apps.push(
        await startBillingApp({
          store,
          emulator: dodo.emulator,
          entitlementId: dodo.entitlementId,
          meterUsage,
        }),
      );
    }
    const customer = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '5'); // $0.05: about 30 requests
    const statuses = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        chat(apps[i % 2]!, customer, REQUEST, USAGE).then((r) => r.status),
      ),
    );
    expect(statuses.filter((status) => status === 200).length).toBe(30);
    await expect.poll(() => alerts.length).toBe(2);
    expect(alerts.map((alert) => [alert.threshold, alert.customerId])).toEqual([
      ['0.04', customer],
      ['0.02', customer],
    ]);
    for (const alert of alerts) {
      if (alert.kind !== 'balance') throw new Error(`unexpected ${alert.kind} alert`);
      expect(parseUsd(alert.balance, 'balance')).toBeLessThanOrEqual(parseUsd(alert.threshold, 'threshold'));
    }
    // The balance never reached 0 (a request needs $0.00163): that one did not fire.
    // A top-up lifts the balance above $0.04 again: the next crossing fires again.
    await store.adjustBalance(customer, 'top-up-1', 5_000_000_000n * 10n, 86_400_000);
    for (let i = 0; i < 40 && alerts.length < 3; i++) await chat(apps[0]!, customer, REQUEST, USAGE);
    expect(alerts.map((alert) => alert.threshold)).toEqual(['0.04', '0.02', '0.04']);
  });
});
