import type { BudgetPeriods } from './types.js';

/**
 * The usage period a key's budget is counted under: the key, length-prefixed so that no two
 * keys and periods name the same counters. RedisStore's `admit.lua` builds the same string.
 */
export function budgetPeriod(key: string, periodId: string): string {
  return `budget:${key.length}:${key}:${periodId}`;
}

/** The current calendar month and day, UTC: `2026-11`, `2026-11-30`. */
export function budgetPeriods(now: number): BudgetPeriods {
  const day = new Date(now).toISOString().slice(0, 10);
  return { month: day.slice(0, 7), day };
}
