import type { RequestHandler } from 'express';
import { standaloneContext } from '../chain/context.js';
import { createChain } from '../chain/index.js';
import { resolveTierRateLimitOptions, type TierRateLimitOptions } from './options.js';
import { TierStep } from './step.js';

export { openAIDuration } from './headers.js';
export type { TierRateLimitOptions } from './options.js';
export { GUIDE_TIERS, OPENAI_TIERS, SEED_TIERS, type Tier } from './tiers.js';

/**
 * OpenAI's spend-based usage tiers: the customer's lifetime spend and days since first payment
 * (kept true by `dodoWebhooks`) select a tier, whose RPM, TPM and RPD are enforced with
 * `rate-limiter-flexible` on the store's backend. Every response carries OpenAI's
 * `x-ratelimit-*` headers; over a limit, a 429 shaped like OpenAI's. A chain of one.
 */
export function tierRateLimit(options: Readonly<TierRateLimitOptions>): RequestHandler {
  const context = standaloneContext(options, 'tierRateLimit');
  return createChain(
    context,
    { tierRateLimit: new TierStep(resolveTierRateLimitOptions(options)) },
    'tierRateLimit',
  );
}
