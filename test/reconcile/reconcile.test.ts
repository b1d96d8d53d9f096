import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Redis } from 'ioredis';
import client from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type BillingOptions, createBilling } from '../../src/create-billing.js';
import { prometheusMetrics } from '../../src/metrics/prometheus.js';
import { formatUsd, type Money, parseCredits, parseUsd, unitsPerCredit } from '../../src/money.js';
import type { ReconcileOptions } from '../../src/reconcile/options.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { BillingStore } from '../../src/store/types.js';
import { chat, PRICING, recordingLogger, startDodo, usageFromHeader } from '../support/billing-app.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';
import { storesUnderTest } from '../support/stores.js';

const CENTS = unitsPerCredit(100);
/** Billed at its reservation's bound, 452 input and 50 output tokens: $0.00163 (0.163 credits). */
const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
const USAGE: [number, number] = [452, 50];
const COST = parseUsd('0.00163', 'test');
const ONE_DOLLAR = parseUsd('1', 'test');
/** Rounds run by hand, back to back: a budget that never makes them wait, no timer. */
const BACK_TO_BACK: ReconcileOptions = { intervalMs: 3_600_000, maxDodoCallsPerMinute: 100_000 };

const stores = await storesUnderTest('reconciliation');
const redisUrl = await requireRedis('reconciliation across two processes');

describe.each(stores)('reconciliation on %s', (_name, createStore) => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    dodo = await startDodo();
  });
  afterAll(async () => {
    await dodo.emulator.close();
  });
  afterEach(async () => {
    dodo.emulator.clearFaults();
    dodo.emulator.setWebhookUrl(undefined);
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** An app billing `POST /v1/chat/completions` through `billing.chain()`, with the webhook route. */
  async function startApp(
    options: { reconcile?: ReconcileOptions | boolean; metrics?: boolean; store?: BillingStore } = {},
  ) {
    const store: BillingStore = options.store ?? (await createStore());
    const logger = recordingLogger();
    const registry = new client.Registry();
    const api = dodo.emulator.client({ maxRetries: 0 });
    const billingOptions: BillingOptions = {
      store,
      dodo: api,
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: PRICING,
      creditsPerDollar: 100,
      logger,
      ...(options.metrics ? { metrics: prometheusMetrics({ registry }) } : {}),
      ...(options.reconcile === undefined ? {} : { reconcile: options.reconcile }),
    };
    const billing = createBilling(billingOptions);
    const app = express();
    app.use('/webhooks/dodo', billing.dodoWebhooks({ webhookKey: dodo.emulator.webhookKey }));
    app.use(express.json());
    app.post(
      '/v1/chat/completions',
      billing.chain({
        requireCredits: { dodoTimeoutMs: 500 },
        meterUsage: { flushIntervalMs: 20, maxBackoffMs: 100 },
      }),
      usageFromHeader,
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const webhookUrl = `${url}/webhooks/dodo`;
    dodo.emulator.setWebhookUrl(webhookUrl);
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await billing.close();
    };
    cleanups.push(close);
    return { store, billing, logger, registry, api, url, webhookUrl, close };
  }

  async function customerWith(credits: string): Promise<string> {
    const customer = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, credits);
    return customer;
  }

  const dodoBalance = (customer: string): Money =>
    parseCredits(dodo.emulator.balance(customer, dodo.entitlementId)!, CENTS);

  async function requests(app: { url: string }, customer: string, count: number): Promise<void> {
    const statuses = await Promise.all(
      Array.from({ length: count }, () => chat(app, customer, REQUEST, USAGE).then((r) => r.status)),
    );
    expect(statuses).toEqual(Array.from({ length: count }, () => 200));
  }

  /** Every usage event delivered, every meter deduction made and its webhook applied. */
  async function quiesce(app: Awaited<ReturnType<typeof startApp>>, customer: string): Promise<void> {
    await app.billing.flush();
    await dodo.emulator.settle();
    await expect
      .poll(async () => (await app.store.getBalance(customer))?.pending, { timeout: 5000 })
      .toBe(0n);
  }

  /** A debit on Dodo whose webhook never reaches the app: drift the webhooks cannot heal. */
  async function debitWithoutWebhook(
    app: Awaited<ReturnType<typeof startApp>>,
    customer: string,
    credits: string,
  ) {
    dodo.emulator.setWebhookUrl(undefined);
    try {
      await app.api.creditEntitlements.balances.createLedgerEntry(customer, {
        credit_entitlement_id: dodo.entitlementId,
        entry_type: 'debit',
        amount: credits,
        reason: 'manual correction',
      });
    } finally {
      dodo.emulator.setWebhookUrl(app.webhookUrl);
    }
  }

  it('heals a manual debit on Dodo whose webhook never came, reporting both figures once', async () => {
    const app = await startApp({ metrics: true });
    const customer = await customerWith('1000');
    await requests(app, customer, 3);
    await quiesce(app, customer);
    expect((await app.store.getBalance(customer))?.balance).toBe(dodoBalance(customer));

    await debitWithoutWebhook(app, customer, '100');
    const local = (await app.store.getBalance(customer))!.balance;
    expect(local - dodoBalance(customer)).toBe(ONE_DOLLAR);

    const report = await app.billing.reconcile();
    expect(report).toMatchObject({ checked: 1, failed: 0, dodoCalls: 2 });
    expect(report.corrections).toEqual([
      {
        customerId: customer,
        localBalance: formatUsd(local),
        dodoBalance: formatUsd(dodoBalance(customer)),
        pending: formatUsd(0n),
        correctedBalance: formatUsd(dodoBalance(customer)),
        drift: formatUsd(-ONE_DOLLAR),
      },
    ]);
    expect((await app.store.getBalance(customer))?.balance).toBe(dodoBalance(customer));
    const warnings = app.logger.lines.filter((line) => line.message.startsWith('reconciliation:'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe('warn');
    expect(warnings[0]!.message).toContain(formatUsd(local));
    expect(warnings[0]!.message).toContain(formatUsd(dodoBalance(customer)));

    // Healed: the next round finds nothing to correct.
    expect((await app.billing.reconcile()).corrections).toEqual([]);
    const text = await app.registry.metrics();
    expect(text).toContain('llm_billing_reconciliation_checks_total 2');
    expect(text).toContain('llm_billing_reconciliation_corrections_total 1');
    expect(text).toContain('llm_billing_reconciliation_drift_usd_sum -1');
    expect(text).toMatch(
      /llm_billing_dodo_call_duration_seconds_count\{operation="creditEntitlements\.balances\.listLedger",outcome="ok"\} 2/,
    );
  });

  it('reports no drift when usage Dodo has not deducted yet explains the difference', async () => {
    const app = await startApp({ metrics: true });
    const customer = await customerWith('1000');
    dodo.emulator.fault('POST /events/ingest', { status: 503 });
    await requests(app, customer, 5);
    const view = (await app.store.getBalance(customer))!;
    expect(view.pending).toBe(5n * COST);
    expect(dodoBalance(customer) - view.balance).toBe(5n * COST);

    const report = await app.billing.reconcile();
    expect(report).toMatchObject({ checked: 1, corrections: [], failed: 0 });
    expect(await app.store.getBalance(customer)).toMatchObject({
      balance: dodoBalance(customer) - 5n * COST,
      pending: 5n * COST,
    });

    dodo.emulator.clearFaults();
    await quiesce(app, customer);
    expect((await app.billing.reconcile()).corrections).toEqual([]);
    expect((await app.store.getBalance(customer))?.balance).toBe(dodoBalance(customer));
    expect(app.logger.lines.filter((line) => line.message.startsWith('reconciliation:'))).toEqual([]);
    const text = await app.registry.metrics();
    expect(text).toContain('llm_billing_reconciliation_checks_total 2');
    expect(text).toContain('llm_billing_reconciliation_corrections_total 0');
  });

  it("confirms a meter's deduction whose webhook was lost from the ledger, once", async () => {
    const app = await startApp();
    const customer = await customerWith('1000');
    await requests(app, customer, 1); // the view is fetched while webhooks still arrive
    dodo.emulator.setWebhookUrl(undefined);
    await requests(app, customer, 4);
    await app.billing.flush();
    await dodo.emulator.settle();
    const deducted = dodo.emulator
      .ledger({ customerId: customer })
      .filter((entry) => entry.reference_type !== 'admin');
    expect(deducted.length).toBeGreaterThan(0);
    // Without the webhooks the usage stays pending, and a fresh read of Dodo counts it twice.
    const pending = (await app.store.getBalance(customer))!.pending;
    expect(pending).toBeGreaterThan(0n);
    await app.store.syncBalance(customer, dodoBalance(customer), app.store.now());
    expect((await app.store.getBalance(customer))?.balance).toBe(dodoBalance(customer) - pending);

    const report = await app.billing.reconcile([customer]);
    expect(report.corrections).toMatchObject([{ customerId: customer, drift: formatUsd(pending) }]);
    expect(await app.store.getBalance(customer)).toMatchObject({
      balance: dodoBalance(customer),
      pending: 0n,
    });

    // The same entries read again (or their webhooks delivered late) confirm nothing twice.
    dodo.emulator.setWebhookUrl(app.webhookUrl);
    await requests(app, customer, 1);
    await app.billing.flush();
    await dodo.emulator.settle();
    expect((await app.billing.reconcile([customer])).corrections).toEqual([]);
    expect(await app.store.getBalance(customer)).toMatchObject({
      balance: dodoBalance(customer),
      pending: 0n,
    });
  });

  it('neither loses nor doubles a settlement racing the reconciliation', async () => {
    const app = await startApp({ reconcile: BACK_TO_BACK });
    const customer = await customerWith('1000');
    await requests(app, customer, 1);
    await quiesce(app, customer);
    await debitWithoutWebhook(app, customer, '100');
    // Dodo deducts nothing meanwhile, so no webhook heals the drift: only the rounds can.
    dodo.emulator.fault('POST /events/ingest', { status: 503 });

    const reports: Awaited<ReturnType<typeof app.billing.reconcile>>[] = [];
    let served = false;
    const traffic = requests(app, customer, 40).finally(() => {
      served = true;
    });
    // Rounds back to back for as long as the requests run, three at a time.
    let roundsDuringTraffic = 0;
    const roundsInARow = async () => {
      for (let round = 0; round < 3 || !served; round++) {
        if (!served) roundsDuringTraffic += 1;
        reports.push(await app.billing.reconcile([customer]));
      }
    };
    await Promise.all([traffic, roundsInARow(), roundsInARow(), roundsInARow()]);
    // Rounds started while the settlements ran (how many depends on how fast they run).
    expect(roundsDuringTraffic).toBeGreaterThanOrEqual(3);
    expect(reports.length).toBeGreaterThanOrEqual(9);
    const drift = reports
      .flatMap((report) => report.corrections)
      .reduce((sum, correction) => sum + parseUsd(correction.drift, 'drift'), 0n);
    // Exactly the injected debit, however the rounds interleaved with 40 settlements.
    expect(drift).toBe(-ONE_DOLLAR);
    const afterDebit = parseCredits('900', CENTS) - COST;
    expect(dodoBalance(customer)).toBe(afterDebit);
    expect(await app.store.getBalance(customer)).toMatchObject({
      balance: afterDebit - 40n * COST,
      pending: 40n * COST,
    });

    dodo.emulator.clearFaults();
    await quiesce(app, customer);
    expect(dodoBalance(customer)).toBe(afterDebit - 40n * COST);
    expect(await app.store.getBalance(customer)).toMatchObject({
      balance: afterDebit - 40n * COST,
      pending: 0n,
    });
    expect((await app.billing.reconcile([customer])).corrections).toEqual([]);
  });

  it.runIf(_name === 'RedisStore' && redisUrl)(
    'corrects drift once when two processes on one Redis reconcile while both serve',
    async () => {
      // Two "processes": a client and a store each, on the same keys.
      const prefix = `elb-test:${randomUUID()}:`;
      const clients = [new Redis(redisUrl!), new Redis(redisUrl!)];
      cleanups.push(async () => {
        await deleteKeysWithPrefix(clients[0]!, prefix);
        await Promise.all(clients.map((redis) => redis.quit()));
      });
      await Promise.all(clients.map((redis) => whenReady(redis)));
      const [first, second] = [
        await startApp({ store: new RedisStore({ client: clients[0]!, prefix }), reconcile: BACK_TO_BACK }),
        await startApp({ store: new RedisStore({ client: clients[1]!, prefix }), reconcile: BACK_TO_BACK }),
      ];
      const customer = await customerWith('1000');
      await requests(first, customer, 1);
      await quiesce(first, customer);
      await debitWithoutWebhook(first, customer, '100');
      dodo.emulator.fault('POST /events/ingest', { status: 503 });

      const reports: Awaited<ReturnType<typeof first.billing.reconcile>>[] = [];
      let served = false;
      const traffic = Promise.all([requests(first, customer, 20), requests(second, customer, 20)]).finally(
        () => {
          served = true;
        },
      );
      const rounds = async (app: typeof first) => {
        // Each process finds the customer in the store's list of recently active customers.
        for (let round = 0; round < 3 || !served; round++) reports.push(await app.billing.reconcile());
      };
      await Promise.all([traffic, rounds(first), rounds(second)]);
      const drift = reports
        .flatMap((report) => report.corrections)
        .reduce((sum, correction) => sum + parseUsd(correction.drift, 'drift'), 0n);
      expect(drift).toBe(-ONE_DOLLAR);
      expect(reports.every((report) => report.failed === 0)).toBe(true);
      const afterDebit = parseCredits('900', CENTS) - COST;
      expect(await second.store.getBalance(customer)).toMatchObject({
        balance: afterDebit - 40n * COST,
        pending: 40n * COST,
      });

      dodo.emulator.clearFaults();
      await first.billing.flush();
      await second.billing.flush();
      await dodo.emulator.settle();
      await expect
        .poll(async () => (await first.store.getBalance(customer))?.pending, { timeout: 5000 })
        .toBe(0n);
      expect(dodoBalance(customer)).toBe(afterDebit - 40n * COST);
      expect((await first.store.getBalance(customer))?.balance).toBe(afterDebit - 40n * COST);
    },
  );

  it('runs in the background every intervalMs, and stops with close()', async () => {
    const app = await startApp({ reconcile: { intervalMs: 50 } });
    const customer = await customerWith('1000');
    await requests(app, customer, 2);
    await quiesce(app, customer);
    await debitWithoutWebhook(app, customer, '250');
    await expect
      .poll(async () => (await app.store.getBalance(customer))?.balance, { timeout: 5000 })
      .toBe(dodoBalance(customer));
    expect(app.logger.lines.some((line) => line.message.includes(formatUsd(-parseUsd('2.5', 'test'))))).toBe(
      true,
    );

    await app.close();
    const calls = dodo.emulator.requests().length;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(dodo.emulator.requests().length).toBe(calls);
    await expect(app.billing.reconcile()).rejects.toThrow(/closed/);
  });

  it('makes at most maxDodoCallsPerMinute calls, and close() ends a round waiting for the budget', async () => {
    const app = await startApp({ reconcile: { intervalMs: 3_600_000, maxDodoCallsPerMinute: 5 } });
    const customers = [];
    for (let i = 0; i < 4; i++) {
      const customer = await customerWith('1000');
      await requests(app, customer, 1);
      customers.push(customer);
    }
    const before = dodo.emulator.requests().length;
    const round = app.billing.reconcile();
    await new Promise((resolve) => setTimeout(resolve, 700));
    const reconcileCalls = () =>
      dodo.emulator
        .requests()
        .slice(before)
        .filter((call) => call.path.includes('/balances/'));
    expect(reconcileCalls()).toHaveLength(5);
    expect(reconcileCalls().every((call) => call.method === 'GET')).toBe(true);

    const started = performance.now();
    await app.close();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await round).toMatchObject({ checked: 2, dodoCalls: 5, failed: 0 });
    expect(reconcileCalls()).toHaveLength(5);
  });

  it('gives every Dodo call a deadline, and a Dodo outage never slows requests', async () => {
    const app = await startApp({ reconcile: { intervalMs: 3_600_000, dodoTimeoutMs: 150 } });
    const customer = await customerWith('1000');
    await requests(app, customer, 1);
    dodo.emulator.fault('GET /credit-entitlements/{id}/balances/{customer_id}', { hang: true });
    dodo.emulator.fault('POST /events/ingest', { status: 503 });

    const started = performance.now();
    const round = app.billing.reconcile();
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      const sent = performance.now();
      expect((await chat(app, customer, REQUEST, USAGE)).status).toBe(200);
      latencies.push(performance.now() - sent);
    }
    expect(await round).toMatchObject({ checked: 0, failed: 1, corrections: [] });
    expect(performance.now() - started).toBeLessThan(1000);
    expect(Math.max(...latencies)).toBeLessThan(200);
    expect(
      app.logger.lines.some((line) => /reconciliation: 1 of 1 balance checks failed/.test(line.message)),
    ).toBe(true);
    // Nothing was changed by the failed check: the settlements are all there.
    expect((await app.store.getBalance(customer))?.pending).toBe(6n * COST);
  });
});

describe('reconciliation options', () => {
  const base = {
    store: new MemoryStore(),
    customerId: () => undefined,
    pricing: PRICING,
  };

  it('refuses at startup a job it cannot run, naming the option and the fix', () => {
    expect(() => createBilling({ ...base, reconcile: true })).toThrow(
      expect.objectContaining({
        code: 'ERR_ELB_MISSING_OPTION',
        message: expect.stringMatching(/reconcile: `dodo`/),
      }),
    );
    expect(() => createBilling({ ...base, reconcile: 'yes' as unknown as boolean })).toThrow(
      /`reconcile` must be `true` or an object/,
    );
    expect(() =>
      createBilling({
        ...base,
        dodo: {} as never,
        creditEntitlementId: 'cde_1',
        reconcile: { maxDodoCallsPerMinute: 0 },
      }),
    ).toThrow(/`reconcile.maxDodoCallsPerMinute` must be a positive integer/);
  });

  it('refuses bad customer ids with a clear error, calling nobody', async () => {
    const billing = createBilling({ ...base, dodo: {} as never, creditEntitlementId: 'cde_1' });
    await expect(billing.reconcile('cus_1' as unknown as string[])).rejects.toMatchObject({
      code: 'ERR_ELB_INVALID_CUSTOMER_IDS',
      status: 400,
    });
    await expect(billing.reconcile([42 as unknown as string])).rejects.toThrow(/array of Dodo customer ids/);
    // Nobody active yet: a round checks no one and calls nothing.
    expect(await billing.reconcile()).toEqual({ checked: 0, corrections: [], failed: 0, dodoCalls: 0 });
    await billing.close();
  });
});
