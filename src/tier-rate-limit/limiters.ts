import { type RateLimiterAbstract, RateLimiterRes } from 'rate-limiter-flexible';
import type { ResolvedTier } from './tiers.js';

/** One rate window, shared by every tier: what it counts and how the 429 message names it. */
export interface Window {
  kind: 'requests' | 'tokens';
  /** As OpenAI's message says it: `requests per min (RPM)`. */
  label: string;
  limiter: RateLimiterAbstract;
}

/** A window with one tier's limit in it. */
export interface Limit {
  window: Window;
  limit: number;
}

export interface TierLimits {
  rpm: Limit;
  rpd: Limit | undefined;
  tpm: Limit | undefined;
}

/** The windows every tier shares, and each tier's limits in them. */
export interface TierWindows {
  rpm: Window;
  rpd: Window | undefined;
  tpm: Window | undefined;
  limitsOf: Map<string, TierLimits>;
}

/**
 * The limits of every tier. Each window (RPM, RPD, TPM) is one limiter shared by all tiers,
 * and each tier's limit is checked against its count here, so a customer moving to another
 * tier keeps the current window's count on every store (memory limiters do not share counts
 * between instances), and a request can be counted before its tier is known.
 */
export function buildTierWindows(
  createLimiter: (options: { keyPrefix: string; points: number; duration: number }) => RateLimiterAbstract,
  tiers: readonly ResolvedTier[],
  keyPrefix: string,
): TierWindows {
  const window = (
    name: string,
    limits: (number | undefined)[],
    duration: number,
    kind: Window['kind'],
    label: string,
  ): Window | undefined => {
    const defined = limits.filter((limit): limit is number => limit !== undefined);
    if (defined.length === 0) return undefined;
    // The limiter itself never decides: the tier's limit is compared with its count.
    const points = Math.max(...defined);
    return { kind, label, limiter: createLimiter({ keyPrefix: `${keyPrefix}:${name}`, points, duration }) };
  };
  const rpm = window(
    'rpm',
    tiers.map((tier) => tier.rpm),
    60,
    'requests',
    'requests per min (RPM)',
  )!;
  const rpd = window(
    'rpd',
    tiers.map((tier) => tier.rpd),
    86_400,
    'requests',
    'requests per day (RPD)',
  );
  const tpm = window(
    'tpm',
    tiers.map((tier) => tier.tpm),
    60,
    'tokens',
    'tokens per min (TPM)',
  );
  const limitOf = (shared: Window | undefined, limit: number | undefined) =>
    shared && limit !== undefined ? { window: shared, limit } : undefined;
  const limitsOf = new Map(
    tiers.map((tier) => [
      tier.name,
      { rpm: { window: rpm, limit: tier.rpm }, rpd: limitOf(rpd, tier.rpd), tpm: limitOf(tpm, tier.tpm) },
    ]),
  );
  return { rpm, rpd, tpm, limitsOf };
}

/** What counting a request in a window answered, before any tier's limit is applied. */
export type Count =
  | { window: Window; points: number; outcome: 'counted'; consumedPoints: number; msBeforeNext: number }
  | { window: Window; points: number; outcome: 'failed'; error: unknown };

/** Counts `points` in a window. A store failure is `failed`, never a refusal. */
export async function count(window: Window, key: string, points: number): Promise<Count> {
  let result: RateLimiterRes;
  try {
    result = await window.limiter.consume(key, points);
  } catch (rejection) {
    if (!(rejection instanceof RateLimiterRes))
      return { window, points, outcome: 'failed', error: rejection };
    result = rejection;
  }
  return {
    window,
    points,
    outcome: 'counted',
    consumedPoints: result.consumedPoints,
    msBeforeNext: result.msBeforeNext,
  };
}

/** A window's count judged against one tier's limit in it. */
export function judge(count: Count, limit: Limit): Consumed {
  if (count.outcome === 'failed')
    return { limit, points: count.points, outcome: 'failed', error: count.error };
  return {
    limit,
    points: count.points,
    outcome: count.consumedPoints > limit.limit ? 'refused' : 'allowed',
    used: count.consumedPoints - count.points,
    msBeforeNext: count.msBeforeNext,
    resetsAt: Date.now() + count.msBeforeNext,
  };
}

/** What consuming a window answered. `used` is what it held before this request. */
export type Consumed = Counted | { limit: Limit; points: number; outcome: 'failed'; error: unknown };

export interface Counted {
  limit: Limit;
  points: number;
  outcome: 'allowed' | 'refused';
  used: number;
  msBeforeNext: number;
  /** When the window this request was counted in ends (ms, `Date.now()` clock). */
  resetsAt: number;
}

/**
 * Gives `points` back to the window a request was counted in. Once that window has ended, a
 * reward would open the next one below zero, so it is skipped.
 */
export function giveBack(consumed: Consumed, key: string, points: number): void {
  if (consumed.outcome === 'failed' || points <= 0 || Date.now() >= consumed.resetsAt) return;
  consumed.limit.window.limiter.reward(key, points).catch(() => {});
}
