import { expect } from 'vitest';
import { StoreError } from '../../src/errors.js';
import type { OutboxEvent } from '../../src/store/types.js';

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
