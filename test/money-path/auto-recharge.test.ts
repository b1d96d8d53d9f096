import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type {
  RechargeCallbacks,
  RechargeLimitReport,
  RechargeReport,
} from '../../src/auto-recharge/options.js';
import { createBilling } from '../../src/create-billing.js';
import type { BillingObserver } from '../../src/metrics/observer.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { BillingStore } from '../../src/store/types.js';
import { type BillingApp, chat, startDodo } from '../support/billing-app.js';
import { appsOnEmulator } from '../support/emulator-apps.js';
import { storesUnderTest } from '../support/stores.js';

const stores = await storesUnderTest('auto-recharge');
/** At most 452 input and 50 output tokens, billed at that: $0.00163 a request. */
const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
const USAGE: [number, number] = [452, 50];
const SETTINGS = { threshold: '0.04', amount: '1.00', monthlyLimit: '10.00' };

/** What the app's callbacks heard. */
function listen() {
  const heard = {
    succeeded: [] as RechargeReport[],
    failed: [] as RechargeReport[],
    requiresAction: [] as RechargeReport[],
    monthlyLimit: [] as RechargeLimitReport[],
  };
  const on: RechargeCallbacks = {
    succeeded: (report) => void heard.succeeded.push(report),
    failed: (report) => void heard.failed.push(report),
    requiresAction: (report) => void heard.requiresAction.push(report),
    monthlyLimit: (report) => void heard.monthlyLimit.push(report),
  };
  return { heard, on };
}

describe.each(stores)('auto-recharge through the emulator and the real SDK (%s)', (_name, createStore) => {
  const emulated = appsOnEmulator((emulator) => emulator.clearChargeOutcomes());

  /** An app on `store` with auto-recharge on and Dodo's webhooks mounted (Dodo sends them to the first). */
  async function start(
    store: BillingStore,
    on: RechargeCallbacks,
    options: Record<string, unknown> = {},
    metrics?: BillingObserver,
  ) {
    const app = await emulated.start({
      store,
      ...(metrics ? { metrics } : {}),
      autoRecharge: { usagePlanProductId: emulated.dodo.usagePlanId, failurePauseMs: 1, on, ...options },
      before: (express, billing) => express.use('/webhooks/dodo', billing.dodoWebhooks()),
    });
    if (emulated.apps.length === 1) emulated.dodo.emulator.setWebhookUrl(`${app.url}/webhooks/dodo`);
    return app;
  }

  /** A customer whose API account keeps their card as an on-demand mandate, holding `credits` cents. */
  function customerWithMandate(credits: string): string {
    const customer = emulated.dodo.emulator.createCustomer({
      email: `${randomUUID()}@example.com`,
    }).customer_id;
    emulated.dodo.emulator.subscribe(customer, emulated.dodo.usagePlanId, { onDemand: 'mandate' });
    emulated.dodo.emulator.setBalance(customer, emulated.dodo.entitlementId, credits);
    return customer;
  }

  /** The recharge payments Dodo has for the customer, read with the SDK. */
  async function recharges(customer: string) {
    const page = await emulated.dodo.emulator.client().payments.list({ customer_id: customer });
    return page.items.filter((payment) => typeof payment.metadata?.elb_recharge_attempt === 'string');
  }

  it('a burst across two instances that crosses the threshold recharges exactly once, and the credits arrive', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    const [first, second] = [await start(store, on), await start(store, on)];
    const customer = customerWithMandate('5'); // $0.05: the threshold is $0.04
    await first!.billing.setAutoRecharge(customer, SETTINGS);
    const statuses = await Promise.all(
      Array.from({ length: 40 }, (_, i) => chat(i % 2 ? second! : first!, customer, REQUEST, USAGE)),
    ).then((responses) => responses.map((response) => response.status));
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThanOrEqual(30);
    await expect.poll(() => heard.succeeded.length, { timeout: 10_000 }).toBe(1);
    await emulated.dodo.emulator.settle();
    // More requests, well above the threshold now: nothing more is charged.
    for (let i = 0; i < 5; i++) expect((await chat(first!, customer, REQUEST, USAGE)).status).toBe(200);
    await emulated.dodo.emulator.settle();
    const payments = await recharges(customer);
    expect(payments).toHaveLength(1);
    expect(payments[0]).toMatchObject({ status: 'succeeded', total_amount: 100 });
    expect(heard.succeeded[0]).toMatchObject({
      customerId: customer,
      amount: '1',
      failures: 0,
      disabled: false,
    });
    expect(heard.succeeded[0]!.paymentId).toBe(payments[0]!.payment_id);
    const granted = emulated.dodo.emulator
      .ledger({ customerId: customer })
      .filter((entry) => entry.metadata?.elb_recharge_attempt !== undefined);
    expect(granted.map((entry) => [entry.is_credit, entry.amount])).toEqual([[true, '100']]);
    // The recharge is the customer's last top-up (alerts may be shares of it).
    expect((await store.getBalance(customer))?.lastTopUp).toBe(1_000_000_000_000n);
    expect(await first!.billing.autoRecharge(customer)).toMatchObject({
      recharged: '1',
      failures: 0,
      disabled: false,
      inFlight: false,
    });
    expect(heard.failed).toEqual([]);
    for (const app of [first!, second!]) {
      expect(app.logger.lines.filter((line) => line.level === 'error')).toEqual([]);
    }
  });

  it('respects the monthly limit: a recharge that would pass it is not made, and reported once', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    // No cooldown here: the second crossing comes right after the first recharge.
    const app = await start(store, on, { cooldownMs: 1 });
    const customer = customerWithMandate('3');
    await app.billing.setAutoRecharge(customer, { ...SETTINGS, monthlyLimit: '1.50' });
    expect((await chat(app, customer, REQUEST, USAGE)).status).toBe(200);
    await expect.poll(() => heard.succeeded.length, { timeout: 10_000 }).toBe(1);
    await emulated.dodo.emulator.settle();
    // The balance falls below the threshold again: another $1 would make $2 this month.
    emulated.dodo.emulator.setBalance(customer, emulated.dodo.entitlementId, '3');
    await emulated.dodo.emulator.settle();
    for (let i = 0; i < 3; i++) await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.monthlyLimit.length, { timeout: 10_000 }).toBe(1);
    for (let i = 0; i < 3; i++) await chat(app, customer, REQUEST, USAGE);
    await emulated.dodo.emulator.settle();
    expect(heard.monthlyLimit).toEqual([
      { customerId: customer, recharged: '1', monthlyLimit: '1.5', amount: '1' },
    ]);
    expect(await recharges(customer)).toHaveLength(1);
    expect(heard.succeeded).toHaveLength(1);
  });

  it('reports each declined charge and disables auto-recharge after maxFailures, until it is set again', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    const outcomes: string[] = [];
    const app = await start(
      store,
      on,
      { maxFailures: 2 },
      { recharge: (outcome) => void outcomes.push(outcome) },
    );
    const customer = customerWithMandate('30');
    await app.billing.setAutoRecharge(customer, { ...SETTINGS, threshold: '1.00' });
    emulated.dodo.emulator.failCharges({ outcome: 'failed' });
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.failed.length, { timeout: 10_000 }).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 5)); // past failurePauseMs
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.failed.length, { timeout: 10_000 }).toBe(2);
    expect(heard.failed.map((report) => [report.failures, report.disabled])).toEqual([
      [1, false],
      [2, true],
    ]);
    expect(heard.failed[0]!.reason).toMatch(/declined/);
    for (let i = 0; i < 3; i++) await chat(app, customer, REQUEST, USAGE);
    await emulated.dodo.emulator.settle();
    const payments = await recharges(customer);
    expect(payments.map((payment) => payment.status)).toEqual(['failed', 'failed']);
    // Nothing was charged: the month's total is back to zero.
    expect(await app.billing.autoRecharge(customer)).toMatchObject({
      recharged: '0',
      failures: 2,
      disabled: true,
    });
    // Set again (the customer fixed their card): enabled, and the next request recharges.
    emulated.dodo.emulator.clearChargeOutcomes();
    await app.billing.setAutoRecharge(customer, { ...SETTINGS, threshold: '1.00' });
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.succeeded.length, { timeout: 10_000 }).toBe(1);
    expect(await app.billing.autoRecharge(customer)).toMatchObject({ failures: 0, disabled: false });
    // The metrics observer counted each recharge once, in the process that finished it.
    expect(outcomes).toEqual(['failed', 'failed', 'succeeded']);
  });

  it('reports a charge that needs the customer (requires_action) and counts it against the month', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    const app = await start(store, on);
    const customer = customerWithMandate('3');
    await app.billing.setAutoRecharge(customer, SETTINGS);
    emulated.dodo.emulator.failCharges({ outcome: 'requires_action', times: 1 });
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.requiresAction.length, { timeout: 10_000 }).toBe(1);
    const [payment] = await recharges(customer);
    expect(payment?.status).toBe('requires_customer_action');
    expect(heard.requiresAction[0]).toMatchObject({
      customerId: customer,
      paymentId: payment!.payment_id,
      amount: '1',
      failures: 1,
      disabled: false,
    });
    expect(await app.billing.autoRecharge(customer)).toMatchObject({ recharged: '1', failures: 1 });
    expect(heard.succeeded).toEqual([]);
  });

  it('reports a customer without an on-demand mandate as failed, charging nothing (a throwing callback is logged)', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    const app = await start(store, {
      ...on,
      failed: (report) => {
        heard.failed.push(report);
        throw new Error('the app callback broke');
      },
    });
    const customer = emulated.dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id; // saveCard: false
    emulated.dodo.emulator.setBalance(customer, emulated.dodo.entitlementId, '3');
    await app.billing.setAutoRecharge(customer, SETTINGS);
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.failed.length, { timeout: 10_000 }).toBe(1);
    expect(heard.failed[0]!.reason).toMatch(/on-demand/);
    expect(await recharges(customer)).toEqual([]);
    await expect
      .poll(() => app.logger.lines.some((line) => /failed callback failed/.test(line.message)))
      .toBe(true);
    expect((await chat(app, customer, REQUEST, USAGE)).status).toBe(200);
  });

  /** Sends requests until `done()` holds: each request reports the balance again. */
  async function drive(app: BillingApp, customer: string, done: () => boolean) {
    for (let i = 0; i < 100 && !done(); i++) {
      await chat(app, customer, REQUEST, USAGE);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('a charge left unanswered past its deadline is never made twice: after the lease it is found on Dodo by its attempt', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    const app = await start(store, on, { dodoTimeoutMs: 100, leaseMs: 300 });
    // No webhooks: only the lookup after the lease can learn what the charge did.
    emulated.dodo.emulator.setWebhookUrl(undefined);
    const customer = customerWithMandate('3');
    await app.billing.setAutoRecharge(customer, SETTINGS);
    // Dodo takes the charge, but answers after the caller's deadline.
    emulated.dodo.emulator.fault('POST /subscriptions/{id}/charge', {
      delayMs: 250,
      afterProcessing: true,
      times: 1,
    });
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(async () => (await recharges(customer)).length, { timeout: 5_000 }).toBe(1);
    expect(heard.succeeded).toEqual([]);
    expect(await app.billing.autoRecharge(customer)).toMatchObject({ recharged: '1', inFlight: true });
    await drive(app, customer, () => heard.succeeded.length > 0);
    expect(heard.succeeded).toHaveLength(1);
    const payments = await recharges(customer);
    expect(payments).toHaveLength(1);
    expect(heard.succeeded[0]!.paymentId).toBe(payments[0]!.payment_id);
    const grants = emulated.dodo.emulator
      .ledger({ customerId: customer })
      .filter((entry) => entry.metadata?.elb_recharge_attempt !== undefined);
    expect(grants.map((entry) => entry.amount)).toEqual(['100']);
    expect(await app.billing.autoRecharge(customer)).toMatchObject({ recharged: '1', inFlight: false });
    emulated.dodo.emulator.clearFaults();
  });

  it('a recharging process that never hears back: the payment.succeeded webhook grants the credits and finishes the attempt', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    // A lease far longer than the test: only the webhook can finish the attempt.
    const app = await start(store, on, { dodoTimeoutMs: 100, leaseMs: 60_000 });
    const customer = customerWithMandate('3');
    await app.billing.setAutoRecharge(customer, SETTINGS);
    emulated.dodo.emulator.fault('POST /subscriptions/{id}/charge', {
      drop: true,
      afterProcessing: true,
      times: 1,
    });
    await chat(app, customer, REQUEST, USAGE);
    await expect.poll(() => heard.succeeded.length, { timeout: 10_000 }).toBe(1);
    await emulated.dodo.emulator.settle();
    const payments = await recharges(customer);
    expect(payments).toHaveLength(1);
    expect(heard.succeeded[0]!.paymentId).toBe(payments[0]!.payment_id);
    const grants = emulated.dodo.emulator
      .ledger({ customerId: customer })
      .filter((entry) => entry.metadata?.elb_recharge_attempt !== undefined);
    expect(grants.map((entry) => entry.amount)).toEqual(['100']);
    expect(await app.billing.autoRecharge(customer)).toMatchObject({ recharged: '1', inFlight: false });
    // The credits reached the view: the customer's balance is above the threshold again.
    expect((await store.getBalance(customer))!.available).toBeGreaterThan(100n * 10n ** 10n);
    emulated.dodo.emulator.clearFaults();
  });

  it('a charge whose connection dropped before Dodo took it is made once, under the same attempt, after the lease', async () => {
    const store = await createStore();
    const { heard, on } = listen();
    const app = await start(store, on, { dodoTimeoutMs: 100, leaseMs: 300 });
    const customer = customerWithMandate('3');
    await app.billing.setAutoRecharge(customer, SETTINGS);
    emulated.dodo.emulator.fault('POST /subscriptions/{id}/charge', { drop: true, times: 1 });
    await chat(app, customer, REQUEST, USAGE);
    await drive(app, customer, () => heard.succeeded.length > 0);
    expect(heard.succeeded).toHaveLength(1);
    const payments = await recharges(customer);
    expect(payments).toHaveLength(1);
    expect(payments[0]!.metadata?.elb_recharge_attempt).toBe(heard.succeeded[0]!.attemptId);
    emulated.dodo.emulator.clearFaults();
  });

  it('never holds a request: Dodo hanging on the charge leaves requests as fast', async () => {
    const store = await createStore();
    const app = await start(store, {}, { dodoTimeoutMs: 1_500, leaseMs: 5_000 });
    const customer = customerWithMandate('30');
    await app.billing.setAutoRecharge(customer, { ...SETTINGS, threshold: '1.00' });
    emulated.dodo.emulator.fault('POST /subscriptions/{id}/charge', { hang: true, times: 1 });
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      expect((await chat(app, customer, REQUEST, USAGE)).status).toBe(200);
      expect(performance.now() - started).toBeLessThan(500);
    }
    // The hung charge reaches its deadline; the lease keeps anything else from being charged.
    await expect
      .poll(() => app.logger.lines.some((line) => /charge unanswered/.test(line.message)), {
        timeout: 5_000,
      })
      .toBe(true);
    expect(await recharges(customer)).toEqual([]);
    expect(await app.billing.autoRecharge(customer)).toMatchObject({ inFlight: true, failures: 0 });
    emulated.dodo.emulator.clearFaults();
  });

  it('refuses bad settings with a clear error, changing nothing', async () => {
    const store = await createStore();
    const app = await start(store, {});
    const customer = customerWithMandate('3');
    await expect(app.billing.setAutoRecharge(customer, { ...SETTINGS, amount: '0.005' })).rejects.toThrow(
      /whole number of cents/,
    );
    await expect(
      app.billing.setAutoRecharge(customer, { ...SETTINGS, monthlyLimit: '0.50' }),
    ).rejects.toThrow(/monthlyLimit/);
    await expect(app.billing.setAutoRecharge(customer, { ...SETTINGS, threshold: 'lots' })).rejects.toThrow(
      /threshold/,
    );
    expect(await app.billing.autoRecharge(customer)).toBeUndefined();
  });
});

describe('auto-recharge configuration', () => {
  it('says at startup what is missing or inconsistent, naming the option', async () => {
    const dodo = await startDodo();
    try {
      const base = {
        store: new MemoryStore(),
        dodo: dodo.emulator.client(),
        creditEntitlementId: dodo.entitlementId,
      };
      expect(() => createBilling({ ...base, autoRecharge: {} as never })).toThrow(/usagePlanProductId/);
      expect(() =>
        createBilling({
          ...base,
          autoRecharge: { usagePlanProductId: dodo.usagePlanId, dodoTimeoutMs: 10_000, leaseMs: 20_000 },
        }),
      ).toThrow(/leaseMs/);
      expect(() =>
        createBilling({ ...base, creditEntitlementId: undefined, autoRecharge: { usagePlanProductId: 'p' } }),
      ).toThrow(/creditEntitlementId/);
      expect(() =>
        createBilling({
          ...base,
          autoRecharge: { usagePlanProductId: 'p', on: { failed: 'email' as never } },
        }),
      ).toThrow(/on\.failed/);
      await expect(createBilling(base).setAutoRecharge('cus_1', SETTINGS)).rejects.toThrow(
        /autoRecharge: \{ usagePlanProductId \}/,
      );
    } finally {
      await dodo.emulator.close();
    }
  });
});
