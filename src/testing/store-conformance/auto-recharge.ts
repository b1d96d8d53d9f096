import { parseUsd } from '../../money.js';
import type { AutoRechargeSettings, RechargeStart } from '../../store/types.js';
import type { AdmissionContext } from './admission.js';
import type { ConformanceTestApi } from './test-api.js';

const MINUTE = 60_000;
const usd = (text: string) => parseUsd(text, 'test');

const settings: AutoRechargeSettings = {
  threshold: usd('5'),
  amount: usd('20'),
  monthlyLimit: usd('50'),
};

function start(attemptId: string, overrides: Partial<RechargeStart> = {}): RechargeStart {
  return { attemptId, available: usd('4.99'), month: '2026-11', leaseMs: MINUTE, ...overrides };
}

/** Auto-recharge: one attempt per customer at a time, the monthly limit counted atomically. */
export function describeRechargeConformance(context: () => AdmissionContext, test: ConformanceTestApi): void {
  const { describe, it, expect } = test;
  describe('auto-recharge', () => {
    it('starts nothing while off, above the threshold, or for an unknown customer', async () => {
      const { store } = context();
      expect(await store.beginRecharge('cus_1', start('a1'))).toEqual({ status: 'off' });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toBeUndefined();
      await store.setAutoRecharge('cus_1', settings);
      expect(await store.beginRecharge('cus_1', start('a1', { available: usd('5') }))).toEqual({
        status: 'above_threshold',
      });
      await store.setAutoRecharge('cus_1', undefined);
      expect(await store.beginRecharge('cus_1', start('a1'))).toEqual({ status: 'off' });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toBeUndefined();
    });

    it('lets exactly one of many concurrent attempts start, and counts it in the month', async () => {
      const { store } = context();
      await store.setAutoRecharge('cus_1', settings);
      const begun = await Promise.all(
        Array.from({ length: 25 }, (_, index) => store.beginRecharge('cus_1', start(`a${index}`))),
      );
      const started = begun.filter((result) => result.status === 'started');
      expect(started).toHaveLength(1);
      expect(begun.filter((result) => result.status === 'in_flight')).toHaveLength(24);
      const state = await store.getAutoRecharge('cus_1', '2026-11');
      expect(state).toMatchObject({ ...settings, recharged: usd('20'), failures: 0, disabled: false });
      expect(state?.inFlight).toMatchObject({ attemptId: (started[0] as { attemptId: string }).attemptId });
      expect(await store.getAutoRecharge('cus_1', '2026-12')).toMatchObject({ recharged: 0n });
    });

    it('refuses a recharge that would pass the monthly limit, reporting it once a month', async () => {
      const { store } = context();
      await store.setAutoRecharge('cus_1', settings);
      for (const id of ['a1', 'a2']) {
        expect(await store.beginRecharge('cus_1', start(id))).toEqual({
          status: 'started',
          attemptId: id,
          amount: usd('20'),
        });
        expect(
          await store.finishRecharge('cus_1', {
            attemptId: id,
            outcome: 'succeeded',
            maxFailures: 3,
            cooldownMs: 0,
          }),
        ).toEqual({ applied: true, failures: 0, disabled: false });
      }
      // 40 of 50 charged: another 20 would pass the limit.
      expect(await store.beginRecharge('cus_1', start('a3'))).toEqual({
        status: 'monthly_limit',
        recharged: usd('40'),
        monthlyLimit: usd('50'),
        first: true,
      });
      expect(await store.beginRecharge('cus_1', start('a4'))).toMatchObject({
        status: 'monthly_limit',
        first: false,
      });
      // A new month starts from zero.
      expect(await store.beginRecharge('cus_1', start('a5', { month: '2026-12' }))).toMatchObject({
        status: 'started',
      });
    });

    it('gives a failed charge back to the month, keeps a requires_action one, and disables after maxFailures', async () => {
      const { store } = context();
      await store.setAutoRecharge('cus_1', settings);
      await store.beginRecharge('cus_1', start('a1'));
      expect(
        await store.finishRecharge('cus_1', {
          attemptId: 'a1',
          outcome: 'failed',
          maxFailures: 3,
          cooldownMs: 0,
        }),
      ).toEqual({
        applied: true,
        failures: 1,
        disabled: false,
      });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({ recharged: 0n, failures: 1 });
      await store.beginRecharge('cus_1', start('a2'));
      expect(
        await store.finishRecharge('cus_1', {
          attemptId: 'a2',
          outcome: 'requires_action',
          maxFailures: 3,
          cooldownMs: 0,
        }),
      ).toEqual({ applied: true, failures: 2, disabled: false });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({ recharged: usd('20') });
      await store.beginRecharge('cus_1', start('a3'));
      expect(
        await store.finishRecharge('cus_1', {
          attemptId: 'a3',
          outcome: 'failed',
          maxFailures: 3,
          cooldownMs: 0,
        }),
      ).toEqual({
        applied: true,
        failures: 3,
        disabled: true,
      });
      expect(await store.beginRecharge('cus_1', start('a4'))).toEqual({ status: 'disabled' });
      // Setting it again re-enables it, and forgives the failures.
      await store.setAutoRecharge('cus_1', settings);
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({ failures: 0, disabled: false });
      expect(await store.beginRecharge('cus_1', start('a5'))).toMatchObject({ status: 'started' });
    });

    it('finishes an attempt once, and only the attempt holding the lease', async () => {
      const { store } = context();
      await store.setAutoRecharge('cus_1', settings);
      await store.beginRecharge('cus_1', start('a1'));
      expect(
        await store.finishRecharge('cus_1', {
          attemptId: 'other',
          outcome: 'failed',
          maxFailures: 1,
          cooldownMs: 0,
        }),
      ).toMatchObject({ applied: false, disabled: false });
      const both = await Promise.all([
        store.finishRecharge('cus_1', { attemptId: 'a1', outcome: 'failed', maxFailures: 3, cooldownMs: 0 }),
        store.finishRecharge('cus_1', { attemptId: 'a1', outcome: 'failed', maxFailures: 3, cooldownMs: 0 }),
      ]);
      expect(both.filter((result) => result.applied)).toHaveLength(1);
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({ failures: 1, recharged: 0n });
    });

    it('takes a lapsed lease again under the same attempt, never counting it twice', async () => {
      const { store, advance } = context();
      await store.setAutoRecharge('cus_1', settings);
      await store.beginRecharge('cus_1', start('a1'));
      advance(MINUTE - 1);
      expect(await store.beginRecharge('cus_1', start('a2'))).toEqual({ status: 'in_flight' });
      advance(1);
      const again = await Promise.all([
        store.beginRecharge('cus_1', start('a3')),
        store.beginRecharge('cus_1', start('a4')),
      ]);
      expect(again.filter((result) => result.status === 'in_flight')).toHaveLength(1);
      expect(again.find((result) => result.status !== 'in_flight')).toEqual({
        status: 'resume',
        attemptId: 'a1',
        amount: usd('20'),
      });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({ recharged: usd('20') });
      expect(
        await store.finishRecharge('cus_1', {
          attemptId: 'a1',
          outcome: 'succeeded',
          maxFailures: 3,
          cooldownMs: 0,
        }),
      ).toMatchObject({ applied: true });
    });

    it('starts nothing for `cooldownMs` after a success, however low the balance read', async () => {
      const { store, advance } = context();
      await store.setAutoRecharge('cus_1', settings);
      await store.beginRecharge('cus_1', start('a1'));
      await store.finishRecharge('cus_1', {
        attemptId: 'a1',
        outcome: 'succeeded',
        maxFailures: 3,
        cooldownMs: MINUTE,
      });
      expect(await store.beginRecharge('cus_1', start('a2'))).toEqual({ status: 'cooling' });
      advance(MINUTE);
      expect(await store.beginRecharge('cus_1', start('a3'))).toMatchObject({ status: 'started' });
    });

    it('keeps the month and an attempt in flight when settings change', async () => {
      const { store } = context();
      await store.setAutoRecharge('cus_1', settings);
      await store.beginRecharge('cus_1', start('a1'));
      await store.setAutoRecharge('cus_1', { ...settings, amount: usd('10') });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({
        amount: usd('10'),
        recharged: usd('20'),
        inFlight: { attemptId: 'a1', amount: usd('20') },
      });
      expect(
        await store.finishRecharge('cus_1', {
          attemptId: 'a1',
          outcome: 'failed',
          maxFailures: 3,
          cooldownMs: 0,
        }),
      ).toMatchObject({
        applied: true,
      });
      expect(await store.getAutoRecharge('cus_1', '2026-11')).toMatchObject({ recharged: 0n });
    });
  });
}
