import { randomUUID } from 'node:crypto';
import { parseUsd } from '../../money.js';
import { subscriptionPeriod } from '../../store/subscription-period.js';
import type {
  Admission,
  AdmissionPlans,
  BillingStore,
  Settlement,
  SubscriptionState,
} from '../../store/types.js';
import type { ConformanceTestApi } from './test-api.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const usd = (text: string) => parseUsd(text, 'test');

/** What the admission cases need of the suite that runs them. */
export interface AdmissionContext {
  store: BillingStore;
  now: number;
  advance(ms: number): void;
}

const plus: SubscriptionState = {
  subscriptionId: 'sub_plus',
  productId: 'prod_plus',
  status: 'active',
  quantity: 1,
  periodStart: 1_790_000_000_000,
  periodEnd: 1_792_592_000_000,
  updatedAt: 100,
};

function plans(
  overrides: Partial<AdmissionPlans> = {},
  hardCapTokens?: bigint,
  perSeat = false,
): AdmissionPlans {
  return {
    activeStatuses: ['active'],
    byProduct: new Map([
      [
        'prod_plus',
        {
          chargeCredits: false,
          ...(hardCapTokens === undefined
            ? {}
            : { hardCap: { unit: 'tokens' as const, amount: hardCapTokens, perSeat } }),
        },
      ],
    ]),
    estimate: { tokens: 100n, cost: usd('0.01') },
    ...overrides,
  };
}

function admission(customerId: string, overrides: Partial<Admission> = {}): Admission {
  return {
    customerId,
    requestId: randomUUID(),
    readProfile: false,
    credits: { min: usd('1'), max: usd('1'), overdraft: 0n },
    ttlMs: MINUTE,
    ...overrides,
  };
}

/** `BillingStore.admit`: one atomic call decides and holds everything a request's admission needs. */
export function describeAdmissionConformance(
  context: () => AdmissionContext,
  test: ConformanceTestApi,
): void {
  const { describe, it, expect } = test;
  describe('admission', () => {
    it('holds credits against the balance and refuses what is not covered, holding nothing', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('2.5'), now);
      expect(await store.admit(admission('cus_1'))).toEqual({
        credits: { ok: true, reserved: usd('1'), available: usd('1.5'), syncedAt: now },
      });
      await store.admit(admission('cus_1'));
      expect(await store.admit(admission('cus_1'))).toEqual({
        credits: { ok: false, reason: 'insufficient', available: usd('0.5'), syncedAt: now },
      });
      expect((await store.getBalance('cus_1'))?.reserved).toBe(usd('2'));
      expect(await store.admit(admission('cus_new'))).toEqual({
        credits: { ok: false, reason: 'no_balance' },
      });
    });

    it('holds as much of the maximum as the balance covers, never less than the minimum', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('1.5'), now);
      const flexible = { min: usd('0.25'), max: usd('1'), overdraft: 0n };
      expect((await store.admit(admission('cus_1', { credits: flexible }))).credits).toMatchObject({
        ok: true,
        reserved: usd('1'),
      });
      expect((await store.admit(admission('cus_1', { credits: flexible }))).credits).toMatchObject({
        ok: true,
        reserved: usd('0.5'),
        available: 0n,
      });
      expect((await store.admit(admission('cus_1', { credits: flexible }))).credits).toMatchObject({
        ok: false,
        reason: 'insufficient',
      });
    });

    it('lets the available balance go below zero by the overdraft, and no further', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('0.5'), now);
      const credits = { min: usd('0.4'), max: usd('0.4'), overdraft: usd('0.3') };
      expect((await store.admit(admission('cus_1', { credits }))).credits).toMatchObject({ ok: true });
      expect((await store.admit(admission('cus_1', { credits }))).credits).toMatchObject({
        ok: true,
        available: usd('-0.3'),
      });
      expect((await store.admit(admission('cus_1', { credits }))).credits).toMatchObject({
        ok: false,
        reason: 'insufficient',
      });
    });

    it('refuses a request id in flight or settled, and admits it again once released', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('10'), now);
      const first = admission('cus_1');
      expect((await store.admit(first)).credits).toMatchObject({ ok: true });
      expect(await store.admit(first)).toEqual({ duplicate: 'in_flight', credits: undefined });
      // The same id for another customer is another request.
      await store.syncBalance('cus_2', usd('10'), now);
      expect((await store.admit({ ...first, customerId: 'cus_2' })).credits).toMatchObject({ ok: true });
      // A re-admission replaces what the id holds.
      expect((await store.admit({ ...first, replace: true })).credits).toMatchObject({
        ok: true,
        available: usd('9'),
      });
      expect(await store.release('cus_1', first.requestId)).toBe(true);
      expect((await store.admit(first)).credits).toMatchObject({ ok: true, available: usd('9') });
      await store.settle({
        customerId: 'cus_1',
        settlementId: first.requestId,
        reservationId: first.requestId,
        cost: usd('0.5'),
        events: [],
        retentionMs: DAY,
      });
      expect(await store.admit(first)).toEqual({ duplicate: 'settled', credits: undefined });
      expect((await store.getBalance('cus_1'))?.reserved).toBe(0n);
    });

    it('never admits one request id twice under 20 parallel admissions', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('100'), now);
      const same = admission('cus_1');
      const results = await Promise.all(Array.from({ length: 20 }, () => store.admit(same)));
      expect(results.filter((result) => result.credits?.ok)).toHaveLength(1);
      expect(results.filter((result) => result.duplicate === 'in_flight')).toHaveLength(19);
      expect((await store.getBalance('cus_1'))?.reserved).toBe(usd('1'));
    });

    it('never holds more than the balance under 50 parallel flexible admissions', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('10'), now);
      const credits = { min: usd('0.1'), max: usd('0.7'), overdraft: 0n };
      const results = await Promise.all(
        Array.from({ length: 50 }, () => store.admit(admission('cus_1', { credits }))),
      );
      const held = results.reduce(
        (sum, result) => sum + (result.credits?.ok ? result.credits.reserved : 0n),
        0n,
      );
      expect(held).toBeLessThanOrEqual(usd('10'));
      expect(held).toBeGreaterThan(usd('9.9'));
      expect((await store.getBalance('cus_1'))?.reserved).toBe(held);
    });

    it('reads the profile in the same call, as getCustomerProfile reads it', async () => {
      const { store, now } = context();
      await store.recordPayment('cus_1', 'pay_1', usd('60'), now - DAY);
      await store.putSubscription('cus_1', plus);
      await store.addUsage('cus_1', {
        period: subscriptionPeriod(plus),
        counters: { tokens: 7n },
        ttlMs: DAY,
      });
      await store.syncBalance('cus_1', usd('5'), now);
      const result = await store.admit(admission('cus_1', { readProfile: true }));
      expect(result.profile).toEqual(await store.getCustomerProfile('cus_1'));
      expect(result.profile?.spend).toBe(usd('60'));
      // Without the profile asked, none is read.
      expect((await store.admit(admission('cus_1'))).profile).toBeUndefined();
    });

    it('lets an active subscription to a plan cover the request: no credits held, none needed', async () => {
      const { store } = context();
      await store.putSubscription('cus_sub', plus);
      const covered = await store.admit(admission('cus_sub', { plans: plans() }));
      expect(covered).toEqual({ subscription: plus, credits: undefined });
      // Another status, or a product no plan names, covers nothing: credits are asked for.
      await store.putSubscription('cus_other', { ...plus, status: 'on_hold' });
      expect((await store.admit(admission('cus_other', { plans: plans() }))).credits).toEqual({
        ok: false,
        reason: 'no_balance',
      });
      await store.putSubscription('cus_third', { ...plus, productId: 'prod_unknown' });
      expect((await store.admit(admission('cus_third', { plans: plans() }))).subscription).toBeUndefined();
    });

    it('picks the most recently updated active subscription, then the larger id', async () => {
      const { store, now } = context();
      await store.syncBalance('cus_1', usd('5'), now);
      const charging = plans();
      (charging.byProduct as Map<string, unknown>).set('prod_team', { chargeCredits: true });
      await store.putSubscription('cus_1', plus);
      await store.putSubscription('cus_1', {
        ...plus,
        subscriptionId: 'sub_team',
        productId: 'prod_team',
        updatedAt: 200,
      });
      const newer = await store.admit(admission('cus_1', { plans: charging }));
      expect(newer.subscription?.subscriptionId).toBe('sub_team');
      // The team plan charges credits: they are held.
      expect(newer.credits).toMatchObject({ ok: true });
      await store.putSubscription('cus_1', { ...plus, subscriptionId: 'sub_z', updatedAt: 200 });
      expect((await store.admit(admission('cus_1', { plans: charging }))).subscription?.subscriptionId).toBe(
        'sub_z',
      );
    });

    it('holds against the hard cap atomically: passed by no more than one request’s estimate', async () => {
      const { store } = context();
      await store.putSubscription('cus_sub', plus);
      await store.addUsage('cus_sub', {
        period: subscriptionPeriod(plus),
        counters: { tokens: 650n },
        ttlMs: DAY,
      });
      const capped = plans({}, 1000n);
      const results = await Promise.all(
        Array.from({ length: 20 }, () => store.admit(admission('cus_sub', { plans: capped }))),
      );
      // 650 used: admitted at 650, 750, 850 and 950 held; then 1050 reaches the cap, and stays
      // within one request's estimate of it.
      expect(results.filter((result) => !result.capped)).toHaveLength(4);
      const refused = results.find((result) => result.capped)!;
      expect(refused.capped).toEqual({ unit: 'tokens', used: 1050n, limit: 1000n });
    });

    it('gives a cap hold back on release, on settle, and when it expires', async () => {
      const { store, advance } = context();
      await store.putSubscription('cus_sub', plus);
      const capped = plans({}, 200n);
      const first = admission('cus_sub', { plans: capped });
      const second = admission('cus_sub', { plans: capped });
      expect((await store.admit(first)).capped).toBeUndefined();
      expect((await store.admit(second)).capped).toBeUndefined();
      expect((await store.admit(admission('cus_sub', { plans: capped }))).capped).toMatchObject({
        used: 200n,
      });
      await store.release('cus_sub', first.requestId);
      expect((await store.admit(admission('cus_sub', { plans: capped }))).capped).toBeUndefined();
      await store.settle({
        customerId: 'cus_sub',
        settlementId: second.requestId,
        reservationId: second.requestId,
        cost: 0n,
        events: [],
        usage: [{ period: subscriptionPeriod(plus), counters: { tokens: 30n }, ttlMs: DAY }],
        retentionMs: DAY,
      });
      // 30 used (settled) + 100 held (the third) + 100 asked = 230.
      expect((await store.admit(admission('cus_sub', { plans: capped }))).capped).toBeUndefined();
      expect((await store.admit(admission('cus_sub', { plans: capped }))).capped).toMatchObject({
        used: 230n,
      });
      advance(MINUTE);
      expect((await store.admit(admission('cus_sub', { plans: capped }))).capped).toBeUndefined();
    });

    it('multiplies a per-seat cap by the subscription’s seats', async () => {
      const { store } = context();
      await store.putSubscription('cus_team', { ...plus, quantity: 3 });
      const capped = plans({}, 100n, true);
      const results = await Promise.all(
        Array.from({ length: 5 }, () => store.admit(admission('cus_team', { plans: capped }))),
      );
      expect(results.filter((result) => !result.capped)).toHaveLength(3);
    });

    it('holds nothing when the cap passes but the credits do not', async () => {
      const { store, now } = context();
      await store.putSubscription('cus_sub', plus);
      await store.syncBalance('cus_sub', usd('0.5'), now);
      const charging = plans({}, 100n);
      (charging.byProduct.get('prod_plus') as { chargeCredits: boolean }).chargeCredits = true;
      const refused = await store.admit(admission('cus_sub', { plans: charging }));
      expect(refused.credits).toMatchObject({ ok: false, reason: 'insufficient' });
      // Had the refused request held its 100 tokens, the cap of 100 would refuse this one.
      const cheap = { min: usd('0.1'), max: usd('0.1'), overdraft: 0n };
      expect(
        (await store.admit(admission('cus_sub', { plans: charging, credits: cheap }))).capped,
      ).toBeUndefined();
    });

    describe('budgets per API key', () => {
      const periods = { month: '2026-11', day: '2026-11-30' };
      const budgeted = (key: string, amount = usd('0.4')) => ({ key, amount, periods });

      it('holds a key’s requests against its hard budget: passed by no more than one request', async () => {
        const { store, now } = context();
        await store.syncBalance('cus_1', usd('100'), now);
        await store.setBudget('cus_1', 'key_a', { hard: usd('1'), soft: usd('0.5'), period: 'month' });
        const results = await Promise.all(
          Array.from({ length: 10 }, () => store.admit(admission('cus_1', { budget: budgeted('key_a') }))),
        );
        // Admitted at 0, 0.4 and 0.8 held; then 1.2 reaches the limit.
        expect(results.filter((result) => !result.budgetExceeded)).toHaveLength(3);
        const refused = results.find((result) => result.budgetExceeded)!;
        expect(refused.budget).toMatchObject({ used: usd('1.2'), hard: usd('1'), soft: usd('0.5') });
        expect(refused.credits).toBeUndefined();
        expect((await store.getBalance('cus_1'))?.reserved).toBe(usd('3'));
        expect(await store.getBudget('cus_1', 'key_a', periods)).toEqual({
          key: 'key_a',
          hard: usd('1'),
          soft: usd('0.5'),
          period: 'month',
          periodId: '2026-11',
          spent: 0n,
          held: usd('1.2'),
        });
        // Another key, and a key without a budget, are not held by it.
        expect((await store.admit(admission('cus_1', { budget: budgeted('key_b') }))).budget).toBeUndefined();
      });

      it('gives a key’s hold back on release and on expiry, and counts per day when asked', async () => {
        const { store, now, advance } = context();
        await store.syncBalance('cus_1', usd('100'), now);
        await store.setBudget('cus_1', 'daily', { hard: usd('0.5'), period: 'day' });
        const first = admission('cus_1', { budget: budgeted('daily') });
        expect((await store.admit(first)).budgetExceeded).toBeUndefined();
        expect(
          (await store.admit(admission('cus_1', { budget: budgeted('daily') }))).budgetExceeded,
        ).toBeUndefined();
        expect((await store.admit(admission('cus_1', { budget: budgeted('daily') }))).budgetExceeded).toBe(
          true,
        );
        await store.release('cus_1', first.requestId);
        expect((await store.getBudget('cus_1', 'daily', periods))?.held).toBe(usd('0.4'));
        expect(
          (await store.admit(admission('cus_1', { budget: budgeted('daily') }))).budgetExceeded,
        ).toBeUndefined();
        // The next day is another period.
        expect(
          (
            await store.admit(
              admission('cus_1', {
                budget: { ...budgeted('daily'), periods: { ...periods, day: '2026-12-01' } },
              }),
            )
          ).budgetExceeded,
        ).toBeUndefined();
        advance(MINUTE);
        expect((await store.getBudget('cus_1', 'daily', periods))?.held).toBe(0n);
        await store.setBudget('cus_1', 'daily', undefined);
        expect(await store.getBudget('cus_1', 'daily', periods)).toBeUndefined();
      });

      it('turns a key’s hold into its spend when the request settles, once, next to the billing period', async () => {
        const { store, now } = context();
        await store.syncBalance('cus_1', usd('100'), now);
        await store.setBudget('cus_1', 'key_a', { hard: usd('1'), period: 'month' });
        const request = admission('cus_1', { budget: budgeted('key_a') });
        const admitted = await store.admit(request);
        const budgetPeriod = admitted.budget!.period;
        const settlement: Settlement = {
          customerId: 'cus_1',
          settlementId: request.requestId,
          reservationId: request.requestId,
          cost: usd('0.25'),
          events: [],
          usage: [
            { period: '2026-11', counters: { cost: usd('0.25'), tokens: 900n }, ttlMs: DAY },
            { period: budgetPeriod, counters: { cost: usd('0.25') }, ttlMs: DAY },
          ],
          retentionMs: DAY,
        };
        expect(await store.settle(settlement)).toMatchObject({
          applied: true,
          costAfter: [usd('0.25'), usd('0.25')],
        });
        expect((await store.settle(settlement)).applied).toBe(false);
        expect(await store.getBudget('cus_1', 'key_a', periods)).toMatchObject({
          spent: usd('0.25'),
          held: 0n,
        });
        expect(await store.getUsage('cus_1', '2026-11')).toEqual({ cost: usd('0.25'), tokens: 900n });
        // 0.25 spent + 0.4 asked, twice: the third (1.05) reaches the limit.
        expect(
          (await store.admit(admission('cus_1', { budget: budgeted('key_a') }))).budgetExceeded,
        ).toBeUndefined();
        expect(
          (await store.admit(admission('cus_1', { budget: budgeted('key_a') }))).budgetExceeded,
        ).toBeUndefined();
        expect((await store.admit(admission('cus_1', { budget: budgeted('key_a') }))).budgetExceeded).toBe(
          true,
        );
      });

      it('holds nothing when the budget passes but the credits do not, and holds no budget for a covered subscriber', async () => {
        const { store, now } = context();
        await store.syncBalance('cus_1', usd('0.3'), now);
        await store.setBudget('cus_1', 'key_a', { hard: usd('0.5'), period: 'month' });
        const refused = await store.admit(admission('cus_1', { budget: budgeted('key_a') }));
        expect(refused.credits).toMatchObject({ ok: false, reason: 'insufficient' });
        expect((await store.getBudget('cus_1', 'key_a', periods))?.held).toBe(0n);
        await store.putSubscription('cus_sub', plus);
        await store.setBudget('cus_sub', 'key_a', { hard: usd('0.1'), period: 'month' });
        const covered = await store.admit(
          admission('cus_sub', { plans: plans(), budget: budgeted('key_a') }),
        );
        expect(covered).toEqual({ subscription: plus, credits: undefined });
      });
    });
  });
}
