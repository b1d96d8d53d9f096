import { expect, it } from 'vitest';
import { StoreError } from '../../src/errors.js';
import type { RedisStore } from '../../src/store/redis.js';
import type { OutboxEvent } from '../../src/store/types.js';
import type { RedisServer } from '../support/redis.js';

/** What both Redis clients' stall suites share: the deadline, and how a call must fail at it. */
export const DEADLINE_MS = 300;
/** What a call may take beyond its deadline on a busy test machine. */
export const MARGIN_MS = 250;
export const MINUTE = 60_000;
export const DAY = 24 * 60 * MINUTE;
export const COST = 1_000_000n;

/** Runs `call`, expecting a StoreError within the deadline and margin; returns the error. */
export async function failsAtDeadline(call: () => Promise<unknown>): Promise<StoreError> {
  const started = performance.now();
  const error = await call().then(
    () => undefined,
    (caught: unknown) => caught,
  );
  const elapsed = performance.now() - started;
  expect(error).toBeInstanceOf(StoreError);
  expect(elapsed).toBeGreaterThanOrEqual(DEADLINE_MS - 5);
  expect(elapsed).toBeLessThan(DEADLINE_MS + MARGIN_MS);
  return error as StoreError;
}

export function usageEvent(customerId: string, eventId: string): OutboxEvent {
  return {
    event_id: eventId,
    customer_id: customerId,
    event_name: 'llm.input_tokens',
    timestamp: '2026-11-26T00:00:00.000Z',
    metadata: { model: 'gpt-4o', tokens: 100 },
  };
}

/**
 * The stall cases that need nothing of the client: Redis is paused before the call, so either
 * client sends it into the stall. `stallable` gives a store on a `redis-server` of the test's own.
 */
export function stallCasesOfAnyClient(
  stallable: () => Promise<{ server: RedisServer; store: RedisStore }>,
): void {
  it('a webhook claim abandoned at its deadline does not hold the id for the retry', async () => {
    const { server, store } = await stallable();
    server.pause();
    await failsAtDeadline(() => store.claimWebhook('wh_1', 10 * MINUTE));
    server.resume();
    // Dodo's retry can run it at once instead of being answered 409 for ten minutes.
    await expect.poll(() => store.claimWebhook('wh_2', MINUTE), { timeout: 2_000 }).toBe('claimed');
    expect(await store.claimWebhook('wh_1', 10 * MINUTE)).toBe('claimed');
    // A claim of another delivery is left alone by that undo.
    expect(await store.claimWebhook('wh_1', 10 * MINUTE)).toBe('processing');
  });

  it('a settle abandoned at its deadline takes effect once when Redis resumes, and its retry is a no-op', async () => {
    const { server, store } = await stallable();
    await store.syncBalance('cus_1', 10n * COST, Date.now());
    await store.reserve('cus_1', 'req_1', 2n * COST, 10 * MINUTE);
    const settlement = {
      customerId: 'cus_1',
      reservationId: 'req_1',
      settlementId: 'req_1',
      cost: COST,
      events: [usageEvent('cus_1', 'req_1:input')],
      retentionMs: DAY,
    };
    server.pause();
    await failsAtDeadline(() => store.settle(settlement));
    server.resume();
    // The served usage is billed, once: the late settle stands, the retry changes nothing.
    expect(await store.settle(settlement)).toMatchObject({ applied: false });
    expect(await store.getBalance('cus_1')).toMatchObject({
      balance: 9n * COST,
      reserved: 0n,
      pending: COST,
    });
    expect((await store.outboxStats()).waiting).toBe(1);
  });
}
