import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { BillingStore } from '../store/types.js';
import type { ResolvedTier } from './tiers.js';

/** One rate window of a tier: what it counts and how the 429 message names it. */
export interface Window {
  kind: 'requests' | 'tokens';
  /** As OpenAI's message says it: `requests per min (RPM)`. */
  label: string;
  limiter: RateLimiterAbstract;
  limit: number;
}

export interface TierLimiters {
  rpm: Window;
  rpd: Window | undefined;
  tpm: Window | undefined;
}

/**
 * Limiters of every tier. Limiters of one window share a key prefix across tiers, so a
 * customer moving up a tier keeps the current window's count instead of starting afresh.
 * Each has an in-process insurance limiter that takes over while the store is failing.
 */
export function buildTierLimiters(
  store: BillingStore,
  tiers: readonly ResolvedTier[],
  keyPrefix: string,
): Map<string, TierLimiters> {
  const window = (
    name: string,
    points: number,
    duration: number,
    kind: Window['kind'],
    label: string,
  ): Window => ({
    kind,
    label,
    limit: points,
    limiter: store.createRateLimiter({
      keyPrefix: `${keyPrefix}:${name}`,
      points,
      duration,
      insuranceLimiter: new RateLimiterMemory({
        keyPrefix: `${keyPrefix}:${name}:insurance`,
        points,
        duration,
      }),
    }),
  });
  return new Map(
    tiers.map((tier) => [
      tier.name,
      {
        rpm: window('rpm', tier.rpm, 60, 'requests', 'requests per min (RPM)'),
        rpd:
          tier.rpd === undefined
            ? undefined
            : window('rpd', tier.rpd, 86_400, 'requests', 'requests per day (RPD)'),
        tpm:
          tier.tpm === undefined ? undefined : window('tpm', tier.tpm, 60, 'tokens', 'tokens per min (TPM)'),
      },
    ]),
  );
}

/** A consumed window: its answer, or the refusal. */
export type Consumed =
  | { window: Window; points: number; outcome: 'allowed'; result: RateLimiterRes }
  | { window: Window; points: number; outcome: 'refused'; result: RateLimiterRes }
  | { window: Window; points: number; outcome: 'failed'; error: unknown };

/** Consumes `points` from a window. A store failure is `failed`, never a refusal. */
export async function consume(window: Window, key: string, points: number): Promise<Consumed> {
  try {
    return { window, points, outcome: 'allowed', result: await window.limiter.consume(key, points) };
  } catch (rejection) {
    if (rejection instanceof RateLimiterRes) return { window, points, outcome: 'refused', result: rejection };
    return { window, points, outcome: 'failed', error: rejection };
  }
}
