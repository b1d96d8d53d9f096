import { randomUUID } from 'node:crypto';
import DodoPayments from 'dodopayments';
import { afterAll, describe, expect, it } from 'vitest';
import type { BalanceAlert, BillingAlert } from '../../src/alerts/index.js';
import { createBilling } from '../../src/create-billing.js';
import { ConfigError } from '../../src/errors.js';
import { parseUsd } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { BillingStore } from '../../src/store/types.js';
import { chat, PRICING } from '../support/billing-app.js';
import { appsOnEmulator } from '../support/emulator-apps.js';
import { storesUnderTest } from '../support/stores.js';

const stores = await storesUnderTest('alerts');
/** At most 452 input and 50 output tokens, billed at that: $0.00163 a request. */
const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
const USAGE: [number, number] = [452, 50];
/** At most 452 input and 1,000 output tokens, billed at that: $0.01113 a request. */
const LARGE = { ...REQUEST, max_tokens: 1000 };
const LARGE_USAGE: [number, number] = [452, 1000];
const usd = (text: string) => parseUsd(text, 'test');

describe.each(stores)('low-balance alerts (%s)', (_name, createStore) => {
  const emulated = appsOnEmulator((emulator) => emulator.setWebhookUrl(undefined));
  const { apps } = emulated;

  it('fires each threshold once per crossing, however many instances settle at once, and again after a top-up', async () => {
    const alerts: BillingAlert[] = [];
    const store: BillingStore = await createStore();
    // Two instances on one store (on Redis, two clients would race the same way: settlements are atomic).
    const meterUsage = {
      alerts: { balanceBelow: ['0.04', '0.02', '0'], on: (alert: BillingAlert) => void alerts.push(alert) },
    };
    for (let i = 0; i < 2; i++) await emulated.start({ store, meterUsage });
    const customer = emulated.customerWith('5'); // $0.05: about 30 requests
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

  it('fires shares of the last top-up once each across instances, and a larger top-up moves them', async () => {
    const alerts: BalanceAlert[] = [];
    const store: BillingStore = await createStore();
    const meterUsage = {
      alerts: {
        // One share as a string, one as a number whose decimal string is exact.
        balanceBelow: [{ fractionOfLastTopUp: '0.25' }, { fractionOfLastTopUp: 0.1 }],
        on: (alert: BillingAlert) => void (alert.kind === 'balance' && alerts.push(alert)),
      },
    };
    for (let i = 0; i < 2; i++) {
      await emulated.start({
        store,
        meterUsage,
        // Dodo's webhooks reach the first instance: the top-ups land through `credit.added`.
        before: (express, billing) => express.use('/webhooks/dodo', billing.dodoWebhooks()),
      });
    }
    emulated.dodo.emulator.setWebhookUrl(`${apps[0]!.url}/webhooks/dodo`);
    const customer = emulated.dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    const topUp = async (credits: string, dollars: string) => {
      emulated.dodo.emulator.addCredits(customer, emulated.dodo.entitlementId, credits);
      await expect.poll(async () => (await store.getBalance(customer))?.lastTopUp).toBe(usd(dollars));
    };
    const burst = (count: number) =>
      Promise.all(
        Array.from({ length: count }, (_, i) => chat(apps[i % 2]!, customer, LARGE, LARGE_USAGE)),
      ).then((responses) => responses.map((response) => response.status));
    const check = (alert: BalanceAlert) => {
      // Exactly one settlement took the balance from above the threshold to at or below it.
      expect(usd(alert.before)).toBeGreaterThan(usd(alert.threshold));
      expect(usd(alert.balance)).toBeLessThanOrEqual(usd(alert.threshold));
      expect(usd(alert.before) - usd(alert.balance)).toBe(usd('0.01113'));
    };

    // A $0.20 top-up: the shares are $0.05 and $0.02. 17 requests of $0.01113 fit in it.
    await topUp('20', '0.2');
    let statuses = await burst(30);
    expect(statuses.filter((status) => status === 200)).toHaveLength(17);
    await expect.poll(() => alerts.length).toBe(2);
    expect(
      alerts.map(({ threshold, fractionOfLastTopUp, lastTopUp }) => [
        threshold,
        fractionOfLastTopUp,
        lastTopUp,
      ]),
    ).toEqual([
      ['0.05', '0.25', '0.2'],
      ['0.02', '0.1', '0.2'],
    ]);
    for (const alert of alerts) check(alert);
    expect(alerts.every((alert) => alert.customerId === customer)).toBe(true);

    // A $0.60 top-up lifts the balance to $0.61079: the shares are now $0.15 and $0.06.
    await topUp('60', '0.6');
    expect((await store.getBalance(customer))?.balance).toBe(usd('0.61079'));
    statuses = await burst(64);
    expect(statuses.filter((status) => status === 200)).toHaveLength(54);
    await expect.poll(() => alerts.length).toBe(4);
    expect(
      alerts
        .slice(2)
        .map(({ threshold, fractionOfLastTopUp, lastTopUp }) => [threshold, fractionOfLastTopUp, lastTopUp]),
    ).toEqual([
      ['0.15', '0.25', '0.6'],
      ['0.06', '0.1', '0.6'],
    ]);
    for (const alert of alerts.slice(2)) check(alert);
    // Nothing else fires late.
    await emulated.dodo.emulator.settle();
    expect(alerts).toHaveLength(4);
  });
});

describe('low-balance alert thresholds (configuration)', () => {
  const billing = createBilling({
    store: new MemoryStore(),
    // No request is sent: the client only has to exist.
    dodo: new DodoPayments({ bearerToken: 'unused', baseURL: 'http://127.0.0.1:9' }),
    creditEntitlementId: 'cde_test',
    customerId: () => 'cus_1',
    pricing: { 'gpt-4o': PRICING['gpt-4o'] },
    creditsPerDollar: 100,
  });
  const on = () => {};
  afterAll(() => billing.close());

  it.each([
    [{ fractionOfLastTopUp: '0' }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fractionOfLastTopUp: '1.5' }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fractionOfLastTopUp: '-0.1' }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fractionOfLastTopUp: '10%' }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fractionOfLastTopUp: 1e-7 }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fractionOfLastTopUp: Number.NaN }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fractionOfLastTopUp: '0.0000000000001' }, 'alerts.balanceBelow[1].fractionOfLastTopUp'],
    [{ fraction: '0.1' }, 'alerts.balanceBelow[1]'],
    [{ fractionOfLastTopUp: '0.1', amount: '5' }, 'alerts.balanceBelow[1]'],
    [null, 'alerts.balanceBelow[1]'],
    ['five', 'alerts.balanceBelow[1]'],
  ])('refuses %j with a ConfigError naming the option', (threshold, option) => {
    const make = () => billing.meterUsage({ alerts: { balanceBelow: ['5.00', threshold as never], on } });
    expect(make).toThrow(ConfigError);
    expect(make).toThrow(`\`${option}\``);
  });

  it('takes shares as exact decimal strings or numbers', () => {
    expect(() =>
      billing.meterUsage({
        alerts: {
          balanceBelow: [
            { fractionOfLastTopUp: '0.25' },
            { fractionOfLastTopUp: 0.1 },
            { fractionOfLastTopUp: '1' },
          ],
          on,
        },
      }),
    ).not.toThrow();
  });
});
