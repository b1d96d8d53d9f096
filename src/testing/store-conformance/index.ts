import { randomUUID } from 'node:crypto';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { StoreError } from '../../errors.js';
import { parseUsd } from '../../money.js';
import { subscriptionPeriod } from '../../store/subscription-period.js';
import type { BillingStore, OutboxEvent, Settlement } from '../../store/types.js';
import { describeAdmissionConformance } from './admission.js';
import { describeRechargeConformance } from './auto-recharge.js';
import type { ConformanceTestApi } from './test-api.js';

export type { ConformanceAssertion, ConformanceMatchers, ConformanceTestApi } from './test-api.js';

/** A store under test, built on a clock the suite controls. */
export interface ConformanceSubject {
  /**
   * A new, empty store whose clock is `clock` (ms since the epoch; the suite moves it to test
   * expiries and deadlines). Called before every case; the store is closed after it.
   */
  createStore(clock: () => number): BillingStore | Promise<BillingStore>;
  /**
   * A store whose backend is unreachable (a server that is down): every operation must fail
   * with a `StoreError` within its deadline, never hang. Omit it for an in-process store.
   */
  createUnreachableStore?(): BillingStore | Promise<BillingStore>;
}

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const usd = (text: string) => parseUsd(text, 'test');

/** Ids that have broken key schemes elsewhere: hash-tag braces, separators, prototypes, unicode. */
export const AWKWARD_IDS = [
  'cus_plain',
  '{cus}',
  'cus}{x',
  'a:b:c',
  'with space',
  '__proto__',
  'constructor',
  'ünïcødé-客户-🚀',
  '',
  '*',
];

function event(customerId: string, id: string, tokens = 10): OutboxEvent {
  return {
    event_id: id,
    customer_id: customerId,
    event_name: 'llm.input_tokens',
    timestamp: '2026-11-26T00:00:00.000Z',
    metadata: { model: 'gpt-4o', tokens },
  };
}

function settlement(customerId: string, overrides: Partial<Settlement> = {}): Settlement {
  const settlementId = overrides.settlementId ?? randomUUID();
  return {
    customerId,
    settlementId,
    cost: usd('0.01'),
    events: [event(customerId, `${settlementId}:in`), event(customerId, `${settlementId}:out`)],
    retentionMs: DAY,
    ...overrides,
  };
}

/**
 * The behaviour every `BillingStore` must have — balances, reservations, atomic admission and
 * settlement, the outbox, webhook claims, subscriptions, usage counters, with their race cases —
 * declared as test cases of your runner, so a store of your own (Postgres, DynamoDB…) is checked
 * against the same cases as `MemoryStore` and `RedisStore`, which run it unchanged.
 *
 * Call it at the top level of a test file, with your runner's API (vitest: its module):
 * @example
 * import * as vitest from 'vitest';
 * import { describeStoreConformance } from 'express-llm-billing/testing';
 *
 * describeStoreConformance('postgres', {
 *   createStore: (clock) => new PostgresStore({ pool, schema: freshSchema(), now: clock }),
 * }, vitest);
 */
export function describeStoreConformance(
  name: string,
  subject: ConformanceSubject,
  test: ConformanceTestApi,
): void {
  const { describe, it, expect, beforeEach, afterEach } = test;
  describe(`BillingStore conformance: ${name}`, () => {
    let now = 0;
    let store: BillingStore;
    const advance = (ms: number) => {
      now += ms;
    };

    beforeEach(async () => {
      now = 1_790_000_000_000;
      store = await subject.createStore(() => now);
    });

    afterEach(async () => {
      await store.close();
    });

    describeAdmissionConformance(() => ({ store, now, advance }), test);
    describeRechargeConformance(() => ({ store, now, advance }), test);

    describe('balance view', () => {
      it('has no view for a customer never synced', async () => {
        expect(await store.getBalance('cus_unknown')).toBeUndefined();
      });

      it('applies a Dodo balance and reports it', async () => {
        const result = await store.syncBalance('cus_1', usd('5'), now);
        expect(result.applied).toBe(true);
        expect(await store.getBalance('cus_1')).toEqual({
          balance: usd('5'),
          reserved: 0n,
          available: usd('5'),
          pending: 0n,
          syncedAt: now,
        });
      });

      it('ignores an observation older than the one applied', async () => {
        await store.syncBalance('cus_1', usd('5'), now);
        const older = await store.syncBalance('cus_1', usd('9'), now - 1);
        expect(older.applied).toBe(false);
        expect(older.view.balance).toBe(usd('5'));
        const newer = await store.syncBalance('cus_1', usd('7'), now + 1);
        expect(newer.applied).toBe(true);
        expect(newer.view.balance).toBe(usd('7'));
      });

      it('marks a view stale without forgetting the newest observation', async () => {
        await store.syncBalance('cus_1', usd('5'), now);
        await store.markBalanceStale('cus_1');
        const stale = await store.getBalance('cus_1');
        expect(stale?.syncedAt).toBe(0);
        expect(stale?.balance).toBe(usd('5'));
        expect((await store.syncBalance('cus_1', usd('9'), now - 1)).applied).toBe(false);
        const fresh = await store.syncBalance('cus_1', usd('4'), now + 5);
        expect(fresh.view).toMatchObject({ balance: usd('4'), syncedAt: now + 5 });
      });

      it('adjusts by a signed amount exactly once per adjustment id', async () => {
        await store.syncBalance('cus_1', usd('5'), now);
        await store.adjustBalance('cus_1', 'topup_1', usd('10'), DAY);
        const again = await store.adjustBalance('cus_1', 'topup_1', usd('10'), DAY);
        expect(again?.balance).toBe(usd('15'));
        const clawBack = await store.adjustBalance('cus_1', 'refund_1', usd('-20'), DAY);
        expect(clawBack?.balance).toBe(usd('-5'));
        expect(clawBack?.available).toBe(usd('-5'));
      });

      it('leaves a customer without a view when adjusted before any sync, and remembers the id', async () => {
        expect(await store.adjustBalance('cus_new', 'topup_1', usd('10'), DAY)).toBeUndefined();
        expect(await store.getBalance('cus_new')).toBeUndefined();
        await store.syncBalance('cus_new', usd('10'), now);
        // The sync already includes the top-up: replaying its webhook must not add it again.
        expect((await store.adjustBalance('cus_new', 'topup_1', usd('10'), DAY))?.balance).toBe(usd('10'));
      });

      it('keeps amounts far beyond 2^53 units exact', async () => {
        const huge = 10n ** 21n + 7n; // a billion dollars and seven picodollars
        await store.syncBalance('cus_big', huge, now);
        await store.adjustBalance('cus_big', 'adj', 3n, DAY);
        const reserved = await store.reserve('cus_big', 'r1', 10n ** 20n + 1n, MINUTE);
        expect(reserved).toMatchObject({ ok: true, available: huge + 3n - (10n ** 20n + 1n) });
        await store.settle(settlement('cus_big', { reservationId: 'r1', cost: 10n ** 19n + 9n }));
        const view = await store.getBalance('cus_big');
        expect(view?.balance).toBe(huge + 3n - (10n ** 19n + 9n));
        expect(view?.pending).toBe(10n ** 19n + 9n);
        expect(view?.reserved).toBe(0n);
      });

      it('reports what an applied observation corrected, measured in the same step', async () => {
        const first = await store.syncBalance('cus_1', usd('5'), now);
        expect(first.previousBalance).toBeUndefined();
        await store.settle(settlement('cus_1', { cost: usd('1') }));
        // Dodo has not deducted the usage: 5 − 1 pending = 4, what the view already says.
        const same = await store.syncBalance('cus_1', usd('5'), now + 1);
        expect(same).toMatchObject({ applied: true, previousBalance: usd('4') });
        expect(same.view.balance).toBe(usd('4'));
        // A debit on Dodo the view never heard of: corrected by −2.
        const drifted = await store.syncBalance('cus_1', usd('3'), now + 2);
        expect(drifted).toMatchObject({ applied: true, previousBalance: usd('4') });
        expect(drifted.view.balance).toBe(usd('2'));
        const ignored = await store.syncBalance('cus_1', usd('9'), now);
        expect(ignored.applied).toBe(false);
        expect(ignored.previousBalance).toBeUndefined();
      });
    });

    describe('last top-up', () => {
      it('reports the last top-up with the balance view, from settle too, once the customer has a view', async () => {
        expect(await store.recordTopUp('cus_1', { topUpId: 'ent_1', amount: usd('20'), at: now })).toBe(true);
        // No view yet: the next request fetches the balance, and the view then carries it.
        expect(await store.getBalance('cus_1')).toBeUndefined();
        const synced = await store.syncBalance('cus_1', usd('20'), now);
        expect(synced.view.lastTopUp).toBe(usd('20'));
        const settled = await store.settle(settlement('cus_1', { cost: usd('1') }));
        expect(settled.view).toMatchObject({ balance: usd('19'), lastTopUp: usd('20') });
        await store.adjustBalance('cus_1', 'adj_1', usd('-2'), DAY);
        await store.markBalanceStale('cus_1');
        await store.syncBalance('cus_1', usd('30'), now + 1);
        expect((await store.getBalance('cus_1'))?.lastTopUp).toBe(usd('20'));
        expect((await store.getBalance('cus_never'))?.lastTopUp).toBeUndefined();
        await store.syncBalance('cus_never', usd('1'), now);
        expect('lastTopUp' in (await store.getBalance('cus_never'))!).toBe(false);
      });

      it('keeps the newest top-up, whatever order the webhooks arrive in and however often', async () => {
        await store.syncBalance('cus_1', usd('5'), now);
        expect(await store.recordTopUp('cus_1', { topUpId: 'ent_b', amount: usd('50'), at: now + 10 })).toBe(
          true,
        );
        // A delivery of an older entry, late: ignored.
        expect(await store.recordTopUp('cus_1', { topUpId: 'ent_a', amount: usd('10'), at: now })).toBe(
          false,
        );
        // The same entry again: not newer, nothing changes.
        expect(await store.recordTopUp('cus_1', { topUpId: 'ent_b', amount: usd('50'), at: now + 10 })).toBe(
          false,
        );
        expect((await store.getBalance('cus_1'))?.lastTopUp).toBe(usd('50'));
        // Two entries of the same millisecond: the greater id wins, in every process.
        expect(await store.recordTopUp('cus_1', { topUpId: 'ent_c', amount: usd('7'), at: now + 10 })).toBe(
          true,
        );
        expect(await store.recordTopUp('cus_1', { topUpId: 'ent_a2', amount: usd('8'), at: now + 10 })).toBe(
          false,
        );
        expect((await store.getBalance('cus_1'))?.lastTopUp).toBe(usd('7'));
        // Ids compare as UTF-8 bytes: U+1F680 is greater than U+FFFD (not so in UTF-16).
        await store.recordTopUp('cus_2', { topUpId: 'ent_\uFFFD', amount: usd('1'), at: now });
        expect(await store.recordTopUp('cus_2', { topUpId: 'ent_🚀', amount: usd('2'), at: now })).toBe(true);
        expect(await store.recordTopUp('cus_2', { topUpId: 'ent_\uFFFD', amount: usd('1'), at: now })).toBe(
          false,
        );
      });

      it('ends on the newest of 30 top-ups recorded at once, exact beyond 2^53 units, for any customer id', async () => {
        for (const id of ['cus_plain', '{cus}', 'ünïcødé-客户-🚀', '']) {
          await store.syncBalance(id, usd('1'), now);
          const amounts = Array.from({ length: 30 }, (_, i) => 10n ** 21n + BigInt(i));
          const order = amounts.map((_, i) => (i * 7) % 30);
          await Promise.all(
            order.map((i) =>
              store.recordTopUp(id, { topUpId: `ent_${i}`, amount: amounts[i]!, at: now + i }),
            ),
          );
          expect((await store.getBalance(id))?.lastTopUp).toBe(10n ** 21n + 29n);
        }
      });
    });

    describe('recently active customers', () => {
      it('lists customers by their last applied settlement, most recent first, since a time', async () => {
        expect(await store.recentCustomers(0, 10)).toEqual([]);
        for (const [index, id] of AWKWARD_IDS.entries()) {
          now += 1000;
          await store.settle(settlement(id, { settlementId: `s${index}` }));
        }
        const all = await store.recentCustomers(0, 100);
        expect(all.map((entry) => entry.customerId)).toEqual([...AWKWARD_IDS].reverse());
        expect(all[0]).toEqual({ customerId: AWKWARD_IDS.at(-1), activeAt: now });
        expect(await store.recentCustomers(now - 1000, 100)).toHaveLength(2);
        expect(await store.recentCustomers(0, 3)).toHaveLength(3);
        expect(await store.recentCustomers(0, 0)).toEqual([]);
      });

      it('moves a customer up when settled again, and not for a repeated settlement id', async () => {
        await store.settle(settlement('cus_a', { settlementId: 'a1' }));
        now += 1000;
        await store.settle(settlement('cus_b', { settlementId: 'b1' }));
        now += 1000;
        await store.settle(settlement('cus_b', { settlementId: 'b1' }));
        expect((await store.recentCustomers(0, 10)).map((entry) => entry.customerId)).toEqual([
          'cus_b',
          'cus_a',
        ]);
        await store.settle(settlement('cus_a', { settlementId: 'a2' }));
        expect(await store.recentCustomers(0, 10)).toEqual([
          { customerId: 'cus_a', activeAt: now },
          { customerId: 'cus_b', activeAt: now - 1000 },
        ]);
      });

      it('does not list customers only synced or adjusted', async () => {
        await store.syncBalance('cus_synced', usd('1'), now);
        await store.adjustBalance('cus_synced', 'adj', usd('1'), DAY);
        expect(await store.recentCustomers(0, 10)).toEqual([]);
      });
    });

    describe('reservations', () => {
      beforeEach(async () => {
        await store.syncBalance('cus_1', usd('1'), now);
      });

      it('reserves against the balance and refuses what is not covered', async () => {
        expect(await store.reserve('cus_1', 'r1', usd('0.60'), MINUTE)).toEqual({
          ok: true,
          available: usd('0.40'),
          syncedAt: now,
        });
        expect(await store.reserve('cus_1', 'r2', usd('0.50'), MINUTE)).toEqual({
          ok: false,
          reason: 'insufficient',
          available: usd('0.40'),
          syncedAt: now,
        });
        expect((await store.getBalance('cus_1'))?.reserved).toBe(usd('0.60'));
      });

      it('refuses a customer with no view so the caller can fetch one', async () => {
        expect(await store.reserve('cus_none', 'r1', 1n, MINUTE)).toEqual({
          ok: false,
          reason: 'no_balance',
        });
      });

      it('refuses even a zero-cost reservation when nothing is available', async () => {
        await store.adjustBalance('cus_1', 'spend_all', usd('-1'), DAY);
        expect(await store.reserve('cus_1', 'r1', 0n, MINUTE)).toMatchObject({
          ok: false,
          reason: 'insufficient',
        });
      });

      it('releases once', async () => {
        await store.reserve('cus_1', 'r1', usd('0.60'), MINUTE);
        expect(await store.release('cus_1', 'r1')).toBe(true);
        expect(await store.release('cus_1', 'r1')).toBe(false);
        expect((await store.getBalance('cus_1'))?.available).toBe(usd('1'));
      });

      it('replaces a live reservation reserved again under the same id', async () => {
        await store.reserve('cus_1', 'r1', usd('0.60'), MINUTE);
        await store.reserve('cus_1', 'r1', usd('0.30'), MINUTE);
        expect((await store.getBalance('cus_1'))?.reserved).toBe(usd('0.30'));
      });

      it('frees the amount of an expired reservation', async () => {
        await store.reserve('cus_1', 'r1', usd('1'), MINUTE);
        expect(await store.reserve('cus_1', 'r2', usd('0.10'), MINUTE)).toMatchObject({ ok: false });
        advance(MINUTE);
        expect(await store.reserve('cus_1', 'r2', usd('0.10'), MINUTE)).toMatchObject({ ok: true });
        expect(await store.release('cus_1', 'r1')).toBe(false);
        expect((await store.getBalance('cus_1'))?.reserved).toBe(usd('0.10'));
      });

      it('never overspends under 50 parallel reservations', async () => {
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) => store.reserve('cus_1', `r${i}`, usd('0.10'), MINUTE)),
        );
        expect(results.filter((result) => result.ok)).toHaveLength(10);
        const view = await store.getBalance('cus_1');
        expect(view?.reserved).toBe(usd('1'));
        expect(view?.available).toBe(0n);
      });
    });

    describe('settle', () => {
      beforeEach(async () => {
        await store.syncBalance('cus_1', usd('1'), now);
      });

      it('releases, deducts, queues the events and counts usage in one operation', async () => {
        await store.reserve('cus_1', 'r1', usd('0.50'), MINUTE);
        const result = await store.settle(
          settlement('cus_1', {
            settlementId: 's1',
            reservationId: 'r1',
            cost: usd('0.12'),
            usage: [{ period: '2026-11', counters: { tokens: 1500n, cost: usd('0.12') }, ttlMs: DAY }],
          }),
        );
        expect(result.applied).toBe(true);
        expect(result.view).toMatchObject({
          balance: usd('0.88'),
          reserved: 0n,
          available: usd('0.88'),
          pending: usd('0.12'),
        });
        expect(await store.getUsage('cus_1', '2026-11')).toEqual({ tokens: 1500n, cost: usd('0.12') });
        expect(await store.outboxStats()).toMatchObject({ waiting: 2, leased: 0, dead: 0 });
      });

      it('applies a settlement id once, however often it is retried', async () => {
        const first = settlement('cus_1', {
          settlementId: 's1',
          usage: [{ period: 'p', counters: { tokens: 10n }, ttlMs: DAY }],
        });
        await store.settle(first);
        const again = await store.settle(first);
        expect(again.applied).toBe(false);
        expect(again.view?.balance).toBe(usd('0.99'));
        expect(await store.getUsage('cus_1', 'p')).toEqual({ tokens: 10n });
        expect((await store.outboxStats()).waiting).toBe(2);
      });

      it('queues the usage of a customer without a view (usage is never lost)', async () => {
        const result = await store.settle(settlement('cus_none', { cost: usd('0.25') }));
        expect(result.applied).toBe(true);
        expect(result.view).toBeUndefined();
        expect((await store.outboxStats()).waiting).toBe(2);
        // Dodo has not deducted it yet either: the first sync must still subtract it.
        const synced = await store.syncBalance('cus_none', usd('1'), now);
        expect(synced.view).toMatchObject({ balance: usd('0.75'), pending: usd('0.25') });
      });

      it('deducts after the reservation already expired', async () => {
        await store.reserve('cus_1', 'r1', usd('0.50'), MINUTE);
        advance(2 * MINUTE);
        await store.settle(settlement('cus_1', { reservationId: 'r1', cost: usd('0.30') }));
        expect(await store.getBalance('cus_1')).toMatchObject({ balance: usd('0.70'), reserved: 0n });
      });

      it('counts usage Dodo has not deducted yet when a sync arrives, until Dodo confirms it', async () => {
        await store.settle(settlement('cus_1', { cost: usd('0.25') }));
        // Dodo has not processed the events yet: its balance still says 1.
        advance(1);
        expect((await store.syncBalance('cus_1', usd('1'), now)).view.balance).toBe(usd('0.75'));
        await store.confirmDeducted('cus_1', 'cle_1', usd('0.25'), DAY);
        advance(1);
        const synced = await store.syncBalance('cus_1', usd('0.75'), now);
        expect(synced.view).toMatchObject({ balance: usd('0.75'), pending: 0n });
        await store.confirmDeducted('cus_1', 'cle_2', usd('5'), DAY);
        expect((await store.getBalance('cus_1'))?.pending).toBe(0n);
      });

      it('confirms each deduction once, however often it is replayed, for as long as it is remembered', async () => {
        await store.settle(settlement('cus_1', { settlementId: 's1', cost: usd('0.25') }));
        await store.settle(settlement('cus_1', { settlementId: 's2', cost: usd('0.25') }));
        await store.confirmDeducted('cus_1', 'cle_1', usd('0.25'), DAY);
        await Promise.all(
          Array.from({ length: 10 }, () => store.confirmDeducted('cus_1', 'cle_1', usd('0.25'), DAY)),
        );
        expect((await store.getBalance('cus_1'))?.pending).toBe(usd('0.25'));
        // Remembered with nothing pending, too: a replay after new usage must not lower that.
        await store.confirmDeducted('cus_2', 'cle_9', usd('1'), DAY);
        await store.syncBalance('cus_2', usd('10'), now);
        await store.settle(settlement('cus_2', { settlementId: 's3', cost: usd('1') }));
        await store.confirmDeducted('cus_2', 'cle_9', usd('1'), DAY);
        expect(await store.getBalance('cus_2')).toMatchObject({ balance: usd('9'), pending: usd('1') });
        advance(DAY + 1);
        await store.confirmDeducted('cus_1', 'cle_1', usd('0.25'), DAY);
        expect((await store.getBalance('cus_1'))?.pending).toBe(0n);
      });

      it('stays exact under 100 parallel settlements', async () => {
        await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            store.settle(
              settlement('cus_1', {
                settlementId: `s${i}`,
                cost: 1_500_000n + BigInt(i),
                usage: [{ period: 'p', counters: { tokens: BigInt(i) }, ttlMs: DAY }],
              }),
            ),
          ),
        );
        const spent = 100n * 1_500_000n + 4950n;
        expect(await store.getBalance('cus_1')).toMatchObject({ balance: usd('1') - spent, pending: spent });
        expect(await store.getUsage('cus_1', 'p')).toEqual({ tokens: 4950n });
        expect((await store.outboxStats()).waiting).toBe(200);
      });

      it('adds up 2,000 one-token settlements to exactly one 2,000-token settlement, across 2^53 and 2^63', async () => {
        // $0.15 per 1M tokens is 150,000 units (10^-12 USD) a token. The counters start just
        // below 2^53 (tokens) and 2^63 (cost), so the run crosses both on the way.
        const perToken = 150_000n;
        const tokens = 2_000;
        const whole = perToken * BigInt(tokens);
        const start = { cost: 2n ** 63n - 1_000n * perToken, tokens: 2n ** 53n - 1_000n };
        await store.syncBalance('cus_2', usd('1'), now);
        for (const customerId of ['cus_1', 'cus_2'])
          await store.addUsage(customerId, { period: 'p', counters: start, ttlMs: DAY });
        const oneToken = { cost: perToken, tokens: 1n };
        for (let first = 0; first < tokens; first += 100) {
          await Promise.all(
            Array.from({ length: 100 }, (_, i) =>
              store.settle(
                settlement('cus_1', {
                  settlementId: `one-${first + i}`,
                  cost: perToken,
                  events: [],
                  usage: [{ period: 'p', counters: oneToken, ttlMs: DAY }],
                }),
              ),
            ),
          );
        }
        await store.settle(
          settlement('cus_2', {
            cost: whole,
            events: [],
            usage: [{ period: 'p', counters: { cost: whole, tokens: BigInt(tokens) }, ttlMs: DAY }],
          }),
        );
        const [ones, once] = await Promise.all([store.getBalance('cus_1'), store.getBalance('cus_2')]);
        expect(ones).toMatchObject({ balance: usd('1') - whole, pending: whole });
        expect(once).toMatchObject({ balance: ones!.balance, pending: ones!.pending });
        const counted = { cost: start.cost + whole, tokens: start.tokens + BigInt(tokens) };
        expect(await store.getUsage('cus_1', 'p')).toEqual(counted);
        expect(await store.getUsage('cus_2', 'p')).toEqual(counted);
      });
    });

    describe('usage counters', () => {
      it('adds per period and expires idle periods', async () => {
        await store.addUsage('cus_1', { period: '2026-10', counters: { tokens: 5n }, ttlMs: DAY });
        await store.addUsage('cus_1', { period: '2026-11', counters: { tokens: 7n, cost: 3n }, ttlMs: DAY });
        await store.addUsage('cus_1', { period: '2026-11', counters: { tokens: 1n }, ttlMs: DAY });
        expect(await store.getUsage('cus_1', '2026-10')).toEqual({ tokens: 5n });
        expect(await store.getUsage('cus_1', '2026-11')).toEqual({ tokens: 8n, cost: 3n });
        expect(await store.getUsage('cus_2', '2026-11')).toEqual({});
        advance(DAY);
        expect(await store.getUsage('cus_1', '2026-11')).toEqual({});
      });
    });

    describe('outbox', () => {
      async function enqueue(count: number): Promise<string[]> {
        const ids: string[] = [];
        for (let i = 0; i < count; i++) {
          const id = `evt_${i}`;
          ids.push(id);
          await store.settle({
            customerId: `cus_${i % 3}`,
            settlementId: `s_${i}`,
            cost: 0n,
            events: [event(`cus_${i % 3}`, id, i)],
            retentionMs: DAY,
          });
          advance(1);
        }
        return ids;
      }

      it('claims due events oldest first under a lease, once', async () => {
        const ids = await enqueue(5);
        const batch = await store.claimOutbox(3, MINUTE);
        expect(batch.events.map((claimed) => claimed.event.event_id)).toEqual(ids.slice(0, 3));
        expect(batch.events.every((claimed) => claimed.attempts === 1)).toBe(true);
        expect(batch.events[0]?.event).toEqual(event('cus_0', 'evt_0', 0));
        const rest = await store.claimOutbox(10, MINUTE);
        expect(rest.events.map((claimed) => claimed.event.event_id)).toEqual(ids.slice(3));
        expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 5, dead: 0 });
        expect((await store.claimOutbox(10, MINUTE)).events).toEqual([]);
      });

      it('removes acknowledged events', async () => {
        await enqueue(2);
        const batch = await store.claimOutbox(10, MINUTE);
        await store.ackOutbox(batch, ['evt_0', 'evt_1', 'evt_unknown']);
        expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
        advance(2 * MINUTE);
        expect((await store.claimOutbox(10, MINUTE)).events).toEqual([]);
      });

      it('returns nacked events after their backoff, rewritten when asked', async () => {
        await enqueue(2);
        const batch = await store.claimOutbox(10, MINUTE);
        const restamped = { ...event('cus_0', 'evt_0', 0), timestamp: '2026-11-26T01:00:00.000Z' };
        await store.nackOutbox(batch, ['evt_0', 'evt_1'], 5000, [restamped]);
        expect(await store.outboxStats()).toMatchObject({ waiting: 2, leased: 0, dead: 0 });
        expect((await store.claimOutbox(10, MINUTE)).events).toEqual([]);
        advance(5000);
        const retry = await store.claimOutbox(10, MINUTE);
        expect(retry.events.map((claimed) => [claimed.event.event_id, claimed.attempts])).toEqual([
          ['evt_0', 2],
          ['evt_1', 2],
        ]);
        expect(retry.events[0]?.event.timestamp).toBe('2026-11-26T01:00:00.000Z');
      });

      it("reclaims a dead worker's batch after its lease, and ignores that worker's late ack", async () => {
        await enqueue(2);
        const deadWorker = await store.claimOutbox(10, MINUTE);
        advance(MINUTE - 1);
        expect((await store.claimOutbox(10, MINUTE)).events).toEqual([]);
        advance(1);
        const rescuer = await store.claimOutbox(10, MINUTE);
        expect(rescuer.events.map((claimed) => claimed.attempts)).toEqual([2, 2]);
        await store.ackOutbox(deadWorker, ['evt_0', 'evt_1']);
        expect((await store.outboxStats()).leased).toBe(2);
        await store.ackOutbox(rescuer, ['evt_0', 'evt_1']);
        expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
      });

      it('keeps one dead letter per event however many of a customer it refuses, the newest refusal', async () => {
        for (const id of ['evt_a', 'evt_b']) {
          await store.settle({
            customerId: 'cus_1',
            settlementId: `s_${id}`,
            cost: 0n,
            events: [event('cus_1', id)],
            retentionMs: DAY,
          });
        }
        const batch = await store.claimOutbox(10, MINUTE);
        await store.deadLetterOutbox(batch, [{ eventId: 'evt_a', reason: 'first' }]);
        await store.deadLetterOutbox(batch, [{ eventId: 'evt_b', reason: 'second' }]);
        // The same event settled again (another settlement) and refused again: one record, the newest.
        await store.settle({
          customerId: 'cus_1',
          settlementId: 's_again',
          cost: 0n,
          events: [event('cus_1', 'evt_a')],
          retentionMs: DAY,
        });
        advance(1);
        const again = await store.claimOutbox(10, MINUTE);
        await store.deadLetterOutbox(again, [{ eventId: 'evt_a', reason: 'third' }]);
        expect((await store.outboxStats()).dead).toBe(2);
        expect((await store.listDeadLetters()).map((dead) => [dead.event.event_id, dead.reason])).toEqual([
          ['evt_b', 'second'],
          ['evt_a', 'third'],
        ]);
      });

      it('dead-letters refused events with the reason and never claims them again', async () => {
        await enqueue(2);
        const batch = await store.claimOutbox(10, MINUTE);
        await store.deadLetterOutbox(batch, [{ eventId: 'evt_1', reason: 'metadata value too long' }]);
        await store.ackOutbox(batch, ['evt_0']);
        expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 1 });
        const dead = await store.listDeadLetters();
        expect(dead).toEqual([
          { event: event('cus_1', 'evt_1', 1), reason: 'metadata value too long', attempts: 1, deadAt: now },
        ]);
        advance(DAY);
        expect((await store.claimOutbox(10, MINUTE)).events).toEqual([]);
      });

      it('reports its depth: the bytes it holds and when the oldest event still to deliver was enqueued', async () => {
        expect(await store.outboxStats()).toEqual({
          waiting: 0,
          leased: 0,
          dead: 0,
          bytes: 0,
          oldestEnqueuedAt: undefined,
        });
        const enqueuedAt = now;
        const ids = await enqueue(3);
        const three = await store.outboxStats();
        expect(three).toMatchObject({ waiting: 3, oldestEnqueuedAt: enqueuedAt });
        expect(three.bytes).toBeGreaterThan(0);
        await store.settle(settlement('cus_9'));
        expect((await store.outboxStats()).bytes).toBeGreaterThan(three.bytes);

        // Leased, then backing off after a failed delivery: still to deliver, still the oldest.
        const first = await store.claimOutbox(1, MINUTE);
        expect(first.events.map((claimed) => claimed.event.event_id)).toEqual([ids[0]]);
        expect((await store.outboxStats()).oldestEnqueuedAt).toBe(enqueuedAt);
        await store.nackOutbox(first, [ids[0]!], 5_000);
        expect((await store.outboxStats()).oldestEnqueuedAt).toBe(enqueuedAt);

        advance(5_000);
        const all = await store.claimOutbox(10, MINUTE);
        await store.ackOutbox(all, [ids[0]!]);
        expect((await store.outboxStats()).oldestEnqueuedAt).toBe(enqueuedAt + 1);
        await store.deadLetterOutbox(all, [{ eventId: ids[1]!, reason: 'refused' }]);
        await store.ackOutbox(
          all,
          all.events.map((claimed) => claimed.event.event_id).filter((id) => id !== ids[1]),
        );
        // Dead letters take bytes but are not waiting for delivery.
        const onlyDead = await store.outboxStats();
        expect(onlyDead).toMatchObject({ waiting: 0, leased: 0, dead: 1, oldestEnqueuedAt: undefined });
        expect(onlyDead.bytes).toBeGreaterThan(0);
      });

      it('never hands one event to two concurrent claims', async () => {
        await enqueue(30);
        const batches = await Promise.all(Array.from({ length: 6 }, () => store.claimOutbox(10, MINUTE)));
        const claimed = batches.flatMap((batch) =>
          batch.events.map((claimedEvent) => claimedEvent.event.event_id),
        );
        expect(claimed).toHaveLength(30);
        expect(new Set(claimed).size).toBe(30);
      });
    });

    describe('lifetime spend', () => {
      it('adds each payment once and keeps the earliest payment date', async () => {
        expect(await store.getSpend('cus_1')).toEqual({ spend: 0n, firstPaymentAt: undefined });
        await store.recordPayment('cus_1', 'pay_2', usd('50'), now);
        expect(await store.recordPayment('cus_1', 'pay_2', usd('50'), now)).toMatchObject({
          applied: false,
          spend: usd('50'),
        });
        const earlier = await store.recordPayment('cus_1', 'pay_1', usd('10.01'), now - DAY);
        expect(earlier).toEqual({ applied: true, spend: usd('60.01'), firstPaymentAt: now - DAY });
      });

      it('subtracts each refund once', async () => {
        await store.recordPayment('cus_1', 'pay_1', usd('60'), now);
        await store.recordRefund('cus_1', 'ref_1', usd('60'));
        const again = await store.recordRefund('cus_1', 'ref_1', usd('60'));
        expect(again).toEqual({ applied: false, spend: 0n, firstPaymentAt: now });
      });
    });

    describe('webhook claims', () => {
      it('lets exactly one of 20 parallel deliveries claim an id', async () => {
        const claims = await Promise.all(
          Array.from({ length: 20 }, () => store.claimWebhook('wh_1', MINUTE)),
        );
        expect(claims.filter((claim) => claim === 'claimed')).toHaveLength(1);
        expect(claims.filter((claim) => claim === 'processing')).toHaveLength(19);
      });

      it('answers done after completion, until the retention lapses', async () => {
        await store.claimWebhook('wh_1', MINUTE);
        await store.completeWebhook('wh_1', 3 * DAY);
        advance(3 * DAY - 1);
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('done');
        advance(1);
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('claimed');
      });

      it('can be claimed again after a release, or after its holder died', async () => {
        await store.claimWebhook('wh_1', MINUTE);
        await store.releaseWebhook('wh_1');
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('claimed');
        advance(MINUTE - 1);
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('processing');
        advance(1);
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('claimed');
      });

      it('does not release an id that is done', async () => {
        await store.claimWebhook('wh_1', MINUTE);
        await store.completeWebhook('wh_1', DAY);
        await store.releaseWebhook('wh_1');
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('done');
      });
    });

    describe('subscriptions', () => {
      const plus = {
        subscriptionId: 'sub_1',
        productId: 'prod_plus',
        status: 'active',
        quantity: 1,
        periodStart: 1_790_000_000_000,
        periodEnd: 1_792_592_000_000,
        updatedAt: 100,
      };

      it('keeps the newest state of each subscription', async () => {
        expect(await store.putSubscription('cus_1', plus)).toBe(true);
        expect(await store.putSubscription('cus_1', { ...plus, status: 'cancelled', updatedAt: 300 })).toBe(
          true,
        );
        expect(await store.putSubscription('cus_1', { ...plus, status: 'active', updatedAt: 200 })).toBe(
          false,
        );
        await store.putSubscription('cus_1', { ...plus, subscriptionId: 'sub_2', quantity: 5, updatedAt: 1 });
        const subscriptions = await store.getSubscriptions('cus_1');
        expect(subscriptions.sort((a, b) => a.subscriptionId.localeCompare(b.subscriptionId))).toEqual([
          { ...plus, status: 'cancelled', updatedAt: 300 },
          { ...plus, subscriptionId: 'sub_2', quantity: 5, updatedAt: 1 },
        ]);
        expect(await store.getSubscriptions('cus_2')).toEqual([]);
      });

      it('reads spend, subscriptions and their current periods’ usage together as the customer profile', async () => {
        await store.recordPayment('cus_1', 'pay_1', usd('60'), now - DAY);
        await store.putSubscription('cus_1', plus);
        const team = { ...plus, subscriptionId: 'sub_team', periodStart: 1_790_000_000_123, updatedAt: 50 };
        await store.putSubscription('cus_1', team);
        const counted = {
          period: subscriptionPeriod(plus),
          counters: { tokens: 1500n, cost: 10n ** 20n },
          ttlMs: DAY,
        };
        await store.addUsage('cus_1', counted);
        // A past period of the same subscription is not its current usage.
        await store.addUsage('cus_1', {
          ...counted,
          period: subscriptionPeriod({ ...plus, periodStart: 1 }),
        });
        expect(await store.getCustomerProfile('cus_1')).toEqual({
          spend: usd('60'),
          firstPaymentAt: now - DAY,
          subscriptions: [plus, team],
          periodUsage: new Map([
            ['sub_1', { tokens: 1500n, cost: 10n ** 20n }],
            ['sub_team', {}],
          ]),
        });
        // The profile reads a period exactly as `getUsage` does, expiry included.
        expect((await store.getCustomerProfile('cus_1')).periodUsage.get('sub_1')).toEqual(
          await store.getUsage('cus_1', subscriptionPeriod(plus)),
        );
        advance(DAY);
        expect((await store.getCustomerProfile('cus_1')).periodUsage.get('sub_1')).toEqual({});
        expect(await store.getCustomerProfile('cus_2')).toEqual({
          spend: 0n,
          firstPaymentAt: undefined,
          subscriptions: [],
          periodUsage: new Map(),
        });
      });
    });

    describe('rate limiters', () => {
      it('limits on the store backend', async () => {
        const limiter = store.createRateLimiter({ keyPrefix: `rl-${randomUUID()}`, points: 2, duration: 60 });
        await limiter.consume('cus_1');
        const second = await limiter.consume('cus_1');
        expect(second.remainingPoints).toBe(0);
        await expect(limiter.consume('cus_1')).rejects.toMatchObject({ remainingPoints: 0 });
        await expect(limiter.consume('cus_2')).resolves.toMatchObject({ remainingPoints: 1 });
      });
    });

    describe('awkward ids', () => {
      it('keeps every customer, reservation and webhook id separate and safe', async () => {
        for (const [index, id] of AWKWARD_IDS.entries()) {
          await store.syncBalance(id, BigInt(index + 1) * 1000n, now);
          expect(await store.reserve(id, id, 1n, MINUTE)).toMatchObject({ ok: true });
          await store.settle(settlement(id, { settlementId: id, reservationId: id, cost: 10n }));
          await store.recordPayment(id, id, BigInt(index + 1), now);
          await store.putSubscription(id, {
            subscriptionId: id,
            productId: id,
            status: 'active',
            quantity: index + 1,
            periodStart: 0,
            periodEnd: 1,
            updatedAt: 1,
          });
          await store.addUsage(id, { period: id, counters: { [id || 'empty']: 1n }, ttlMs: DAY });
          await store.addUsage(id, {
            period: subscriptionPeriod({ subscriptionId: id, periodStart: 0 }),
            counters: { [id || 'empty']: 2n },
            ttlMs: DAY,
          });
          expect(await store.claimWebhook(id, MINUTE)).toBe('claimed');
        }
        for (const [index, id] of AWKWARD_IDS.entries()) {
          expect(await store.getBalance(id)).toMatchObject({
            balance: BigInt(index + 1) * 1000n - 10n,
            reserved: 0n,
          });
          expect((await store.getSpend(id)).spend).toBe(BigInt(index + 1));
          expect((await store.getSubscriptions(id)).map((subscription) => subscription.quantity)).toEqual([
            index + 1,
          ]);
          expect(await store.getUsage(id, id)).toEqual({ [id || 'empty']: 1n });
          expect((await store.getCustomerProfile(id)).periodUsage).toEqual(
            new Map([[id, { [id || 'empty']: 2n }]]),
          );
          expect(await store.claimWebhook(id, MINUTE)).toBe('processing');
        }
        const batch = await store.claimOutbox(1000, MINUTE);
        expect(batch.events).toHaveLength(2 * AWKWARD_IDS.length);
        expect(new Set(batch.events.map((claimed) => claimed.event.customer_id))).toEqual(
          new Set(AWKWARD_IDS),
        );
      });
    });

    if (subject.createUnreachableStore) {
      const createUnreachableStore = subject.createUnreachableStore;
      describe('backend down', () => {
        it('fails fast with a StoreError, never hangs', async () => {
          const unreachable = await createUnreachableStore();
          try {
            for (const call of [
              () => unreachable.reserve('cus_1', 'r1', 1n, MINUTE),
              () => unreachable.settle(settlement('cus_1')),
              () => unreachable.getBalance('cus_1'),
              () => unreachable.claimWebhook('wh_1', MINUTE),
            ]) {
              const started = performance.now();
              await expect(call()).rejects.toBeInstanceOf(StoreError);
              expect(performance.now() - started).toBeLessThan(1000);
            }
          } finally {
            await unreachable.close();
          }
        });

        it('fails its rate limiters with a StoreError, never a RateLimiterRes, unless an insurance limiter answers', async () => {
          const unreachable = await createUnreachableStore();
          try {
            const limiter = unreachable.createRateLimiter({ keyPrefix: 'rl', points: 1, duration: 60 });
            for (const call of [
              () => limiter.consume('cus_1'),
              () => limiter.reward('cus_1'),
              () => limiter.get('cus_1'),
            ]) {
              const started = performance.now();
              await expect(call()).rejects.toBeInstanceOf(StoreError);
              expect(performance.now() - started).toBeLessThan(1000);
            }
            const insured = unreachable.createRateLimiter({
              keyPrefix: 'rl',
              points: 1,
              duration: 60,
              insuranceLimiter: new RateLimiterMemory({ points: 1, duration: 60 }),
            });
            await expect(insured.consume('cus_1')).resolves.toMatchObject({ remainingPoints: 0 });
            await expect(insured.consume('cus_1')).rejects.toBeInstanceOf(RateLimiterRes);
          } finally {
            await unreachable.close();
          }
        });
      });
    }
  });
}
