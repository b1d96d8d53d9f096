import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseCredits } from '../../src/money.js';
import { requireRedis } from '../support/redis.js';
import { appProcessSuite, CENTS, COST, chat } from './support.js';

/*
 * Reconciliation across real processes: two app processes on one Redis, each running the job
 * back to back while both serve the same customer. The drift (a debit on Dodo no webhook
 * announced) must be healed, every settlement counted once, and the meters' deductions — whose
 * webhooks never come — confirmed from the ledger once, whichever process reads them.
 */

const redisUrl = await requireRedis('reliability: reconciliation across processes');

describe.runIf(redisUrl)('reconciliation across two processes on one Redis', () => {
  const suite = appProcessSuite(redisUrl!);

  it('heals drift while both serve, counting each settlement and each deduction once', {
    timeout: 45_000,
  }, async () => {
    const { dodo } = suite;
    const { first, second, store } = await suite.twoApps({
      reconcile: { intervalMs: 20, maxDodoCallsPerMinute: 100_000 },
    });
    const customer = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '1000');
    const dodoBalance = () => parseCredits(dodo.emulator.balance(customer, dodo.entitlementId)!, CENTS);
    // Dodo takes no usage for now: nothing is deducted, so no difference but the drift is unexplained.
    dodo.emulator.fault('POST /events/ingest', { status: 503 });
    for (const app of [first, second]) expect((await chat(app.url, customer)).status).toBe(200);

    // A debit on Dodo no webhook announces (this app mounts no webhook route at all).
    await dodo.emulator.client().creditEntitlements.balances.createLedgerEntry(customer, {
      credit_entitlement_id: dodo.entitlementId,
      entry_type: 'debit',
      amount: '100',
    });
    const statuses = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        chat((i % 2 ? first : second).url, customer).then((r) => r.status),
      ),
    );
    expect(statuses.filter((status) => status !== 200)).toEqual([]);
    const afterDebit = parseCredits('900', CENTS);
    await expect
      .poll(async () => (await store.getBalance(customer))?.balance, { timeout: 10_000 })
      .toBe(afterDebit - 62n * COST);
    expect((await store.getBalance(customer))?.pending).toBe(62n * COST);

    // Dodo takes the usage and deducts it; with no webhooks, only the jobs confirm it, from the ledger.
    dodo.emulator.clearFaults();
    await Promise.all([first.flush(), second.flush()]);
    await dodo.emulator.settle();
    expect(dodoBalance()).toBe(afterDebit - 62n * COST);
    await expect.poll(async () => (await store.getBalance(customer))?.pending, { timeout: 10_000 }).toBe(0n);
    // A deduction is confirmed, then its balance applied: two store calls, so the view can lag
    // the last one by a moment (the webhooks' path is the same); it settles on Dodo's balance.
    await expect
      .poll(async () => (await store.getBalance(customer))?.balance, { timeout: 5_000 })
      .toBe(dodoBalance());
    expect((await store.getBalance(customer))?.pending).toBe(0n);
  });
});
