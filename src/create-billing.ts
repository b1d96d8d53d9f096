import type { RequestHandler, Router } from 'express';
import { type DodoWebhooksOptions, dodoWebhooks } from './dodo-webhooks/index.js';
import { type MeterUsageMiddleware, type MeterUsageOptions, meterUsage } from './meter-usage/index.js';
import type { SharedOptions } from './options.js';
import { type RequireCreditsOptions, requireCredits } from './require-credits/index.js';
import { type SoftCapRouterOptions, softCapRouter } from './soft-cap-router/index.js';
import { type TierRateLimitOptions, tierRateLimit } from './tier-rate-limit/index.js';

/** Options of a middleware once the shared settings are bound: only its own are required. */
type Own<T> = Omit<T, keyof SharedOptions> & Partial<SharedOptions>;

/** The five middlewares with shared settings bound, and the controls of the usage flusher. */
export interface Billing {
  requireCredits(options?: Own<RequireCreditsOptions>): RequestHandler;
  meterUsage(options?: Own<MeterUsageOptions>): MeterUsageMiddleware;
  tierRateLimit(options: Own<TierRateLimitOptions>): RequestHandler;
  softCapRouter(options: Own<SoftCapRouterOptions>): RequestHandler;
  dodoWebhooks(options?: Own<DodoWebhooksOptions>): Router;
  /** Resolves once every queued usage event has been accepted by Dodo, or rejects with why not. */
  flush(timeoutMs?: number): Promise<void>;
  /** Flushes, then stops the flusher's timers (and the store's, not an injected Redis client). */
  close(): Promise<void>;
}

/**
 * Binds the shared settings (`store`, `dodo`, `customerId`, `pricing`, …) once. Each factory
 * still takes its own options, which win over the shared ones.
 *
 * @example
 * const billing = createBilling({ store, dodo, creditEntitlementId, customerId, pricing });
 * app.post('/v1/chat/completions', billing.requireCredits(), billing.meterUsage(), handler);
 */
export function createBilling(shared: Readonly<SharedOptions>): Billing {
  const meters: MeterUsageMiddleware[] = [];
  // The outbox is delivered by a flusher even if no route mounted meterUsage yet.
  const flusherOwner = (): MeterUsageMiddleware => {
    if (meters.length === 0) meters.push(meterUsage({ ...shared } as MeterUsageOptions));
    return meters[0]!;
  };
  return {
    requireCredits: (options = {}) => requireCredits({ ...shared, ...options } as RequireCreditsOptions),
    meterUsage: (options = {}) => {
      const middleware = meterUsage({ ...shared, ...options } as MeterUsageOptions);
      meters.push(middleware);
      return middleware;
    },
    tierRateLimit: (options) => tierRateLimit({ ...shared, ...options } as TierRateLimitOptions),
    softCapRouter: (options) => softCapRouter({ ...shared, ...options } as SoftCapRouterOptions),
    dodoWebhooks: (options = {}) => dodoWebhooks({ ...shared, ...options } as DodoWebhooksOptions),
    flush: (timeoutMs) => flusherOwner().flush(timeoutMs),
    close: async () => {
      try {
        await Promise.all(meters.map((middleware) => middleware.close()));
      } finally {
        await shared.store.close();
      }
    },
  };
}
