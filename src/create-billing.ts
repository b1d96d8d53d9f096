import type { RequestHandler, Router } from 'express';
import { SharedRequestSettings } from './chain/context.js';
import { type ChainContext, type ChainSteps, createChain } from './chain/index.js';
import { type DodoWebhooksOptions, dodoWebhooks } from './dodo-webhooks/index.js';
import { Flushers } from './meter-usage/flushers.js';
import { flusherOptions, type MeterUsageMiddleware, withFlusherControls } from './meter-usage/index.js';
import { type MeterUsageOptions, resolveMeterUsageOptions } from './meter-usage/options.js';
import { MeterStep } from './meter-usage/step.js';
import { resolveLogger, resolveStore, type SharedOptions } from './options.js';
import { type RequireCreditsOptions, resolveRequireCreditsOptions } from './require-credits/options.js';
import { CreditStep } from './require-credits/step.js';
import { resolveSoftCapRouterOptions, type SoftCapRouterOptions } from './soft-cap-router/options.js';
import { SoftCapStep } from './soft-cap-router/step.js';
import { resolveTierRateLimitOptions, type TierRateLimitOptions } from './tier-rate-limit/options.js';
import { TierStep } from './tier-rate-limit/step.js';

/** Options of a middleware once the shared settings are bound: only its own are required. */
type Own<T> = Omit<T, keyof SharedOptions> & Partial<SharedOptions>;

/**
 * What `billing.chain()` runs, keyed by middleware: each takes that middleware's own options,
 * or `false` to leave it out. Credits and metering run unless `false`; tiers and soft caps run
 * when given.
 */
export interface ChainOptions {
  tierRateLimit?: Own<TierRateLimitOptions> | false;
  softCapRouter?: Own<SoftCapRouterOptions> | false;
  requireCredits?: Own<RequireCreditsOptions> | false;
  meterUsage?: Own<MeterUsageOptions> | false;
}

/** The five middlewares and the chain, with shared settings bound, and the usage flusher's controls. */
export interface Billing {
  /**
   * One Express handler that runs, for a request, the tier limit, the soft cap, the credit
   * reservation and the metering — one store round trip to admit, one to settle — wherever it
   * is mounted (`app.use`, a router, a route).
   * @example app.post('/v1/chat/completions', billing.chain({ tierRateLimit: { tiers: OPENAI_TIERS } }), proxy)
   */
  chain(options?: ChainOptions): MeterUsageMiddleware;
  requireCredits(options?: Own<RequireCreditsOptions>): RequestHandler;
  meterUsage(options?: Own<MeterUsageOptions>): MeterUsageMiddleware;
  tierRateLimit(options: Own<TierRateLimitOptions>): RequestHandler;
  softCapRouter(options: Own<SoftCapRouterOptions>): RequestHandler;
  dodoWebhooks(options?: Own<DodoWebhooksOptions>): Router;
  /** Resolves once every queued usage event has been accepted by Dodo, or rejects with why not. */
  flush(timeoutMs?: number): Promise<void>;
  /** Flushes, then stops the flushers' timers (and the store's, not an injected Redis client). */
  close(): Promise<void>;
}

/**
 * Binds the shared settings (`store`, `dodo`, `customerId`, `pricing`, …) once. The
 * per-request settings (`customerId`, `requestId`, `model`, `pricing`, the estimator…) are the
 * same for every middleware of the billing; each middleware's own options are its own.
 *
 * @example
 * const billing = createBilling({ store, dodo, creditEntitlementId, customerId, pricing });
 * app.post('/v1/chat/completions', billing.chain(), handler);
 */
export function createBilling(shared: Readonly<SharedOptions>): Billing {
  const settings = new SharedRequestSettings(shared);
  const context: ChainContext = {
    settings: () => settings.get(),
    store: resolveStore(shared, 'createBilling'),
    logger: resolveLogger(shared.logger),
  };
  const flushers = new Flushers();
  /** A middleware's options over the shared ones, its per-request settings adopted. */
  const merged = <T>(options: object | undefined, middleware: string): T => {
    const own = options ?? {};
    settings.adopt(own, middleware);
    return { ...shared, ...own } as T;
  };
  const steps = {
    tierRateLimit: (options: Own<TierRateLimitOptions>) =>
      new TierStep(resolveTierRateLimitOptions(merged(options, 'tierRateLimit'))),
    softCapRouter: (options: Own<SoftCapRouterOptions>) =>
      new SoftCapStep(resolveSoftCapRouterOptions(merged(options, 'softCapRouter'))),
    requireCredits: (options: Own<RequireCreditsOptions> | undefined) =>
      new CreditStep(resolveRequireCreditsOptions(merged(options, 'requireCredits'))),
    meterUsage: (options: Own<MeterUsageOptions> | undefined) => {
      const config = resolveMeterUsageOptions(merged(options, 'meterUsage'));
      return new MeterStep(config, flushers.for(flusherOptions(config)));
    },
  };
  const chainOf = (chainSteps: ChainSteps, name: string): RequestHandler => {
    // Resolved now, so a missing or invalid setting is named at startup.
    settings.get();
    return createChain(context, chainSteps, name);
  };
  // Without a route mounting metering yet, `flush` still delivers the store's outbox.
  const ensureFlusher = () => {
    steps.meterUsage(undefined);
  };
  return {
    chain: (options = {}) => {
      const chainSteps: ChainSteps = {
        tierRateLimit: options.tierRateLimit ? steps.tierRateLimit(options.tierRateLimit) : undefined,
        softCapRouter: options.softCapRouter ? steps.softCapRouter(options.softCapRouter) : undefined,
        requireCredits:
          options.requireCredits === false ? undefined : steps.requireCredits(options.requireCredits),
        meterUsage: options.meterUsage === false ? undefined : steps.meterUsage(options.meterUsage),
      };
      return withFlusherControls(chainOf(chainSteps, 'billingChain'), flushers);
    },
    requireCredits: (options) => chainOf({ requireCredits: steps.requireCredits(options) }, 'requireCredits'),
    meterUsage: (options) =>
      withFlusherControls(chainOf({ meterUsage: steps.meterUsage(options) }, 'meterUsage'), flushers),
    tierRateLimit: (options) => chainOf({ tierRateLimit: steps.tierRateLimit(options) }, 'tierRateLimit'),
    softCapRouter: (options) => chainOf({ softCapRouter: steps.softCapRouter(options) }, 'softCapRouter'),
    dodoWebhooks: (options = {}) => dodoWebhooks({ ...shared, ...options } as DodoWebhooksOptions),
    flush: async (timeoutMs) => {
      ensureFlusher();
      await flushers.flush(timeoutMs);
    },
    close: async () => {
      try {
        await flushers.close();
      } finally {
        await shared.store.close();
      }
    },
  };
}
