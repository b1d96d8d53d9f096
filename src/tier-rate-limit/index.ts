import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { LRUCache } from 'lru-cache';
import { openBilling, type RequestBilling } from '../billing-context.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { charactersOverFour, promptText, requestedMaxOutputTokens } from '../require-credits/estimate.js';
import { openAIDuration, retryAfterSeconds } from './headers.js';
import { buildTierLimiters, type Consumed, consume, type TierLimiters } from './limiters.js';
import {
  type ResolvedTierRateLimitOptions,
  resolveTierRateLimitOptions,
  type TierRateLimitOptions,
} from './options.js';
import { type ResolvedTier, tierFor } from './tiers.js';

export { openAIDuration } from './headers.js';
export type { TierRateLimitOptions } from './options.js';
export { OPENAI_TIERS, SEED_TIERS, type Tier } from './tiers.js';

/**
 * OpenAI's spend-based usage tiers: the customer's lifetime spend and days since first payment
 * (kept true by `dodoWebhooks`) select a tier, whose RPM, TPM and RPD are enforced with
 * `rate-limiter-flexible` on the store's backend. Every response carries OpenAI's
 * `x-ratelimit-*` headers; over a limit, a 429 shaped like OpenAI's.
 */
export function tierRateLimit(options: Readonly<TierRateLimitOptions>): RequestHandler {
  const config = resolveTierRateLimitOptions(options);
  const limiters = buildTierLimiters(config.store, config.tiers, config.keyPrefix);
  // The last tier seen per customer: used while the store cannot tell the spend.
  const lastTier = new LRUCache<string, ResolvedTier>({ max: 100_000 });

  return async function tierRateLimitMiddleware(req: Request, res: Response, next: NextFunction) {
    let billing: RequestBilling | undefined;
    try {
      billing = await openBilling(req, res, config);
    } catch (error) {
      return next(error);
    }
    if (!billing) {
      return sendOpenAIError(
        res,
        401,
        openAIError(
          'No customer is associated with this request. Authenticate with a valid API key.',
          'invalid_request_error',
          'invalid_api_key',
        ),
      );
    }
    const customerId = billing.customerId;
    const tier = await currentTier(config, customerId, lastTier);
    const windows = limiters.get(tier.name)!;
    const estimatedTokens =
      charactersOverFour(promptText(req.body)) + (requestedMaxOutputTokens(req.body) ?? 0);

    const consumed = await Promise.all([
      consume(windows.rpm, customerId, 1),
      windows.rpd && consume(windows.rpd, customerId, 1),
      windows.tpm && consume(windows.tpm, customerId, estimatedTokens),
    ]);
    const [rpm, , tpm] = consumed;
    for (const failed of consumed) {
      if (failed?.outcome === 'failed') {
        config.logger.error('rate limiter failed even with its insurance: request not limited', {
          customerId,
          error: failed.error,
        });
      }
    }
    setHeaders(res, rpm!, tpm);
    const refused = consumed.find((answer) => answer?.outcome === 'refused');
    if (refused && refused.outcome === 'refused') {
      // What was taken from the other windows for a request that will not run is given back.
      for (const answer of consumed) {
        if (answer && answer !== refused && answer.outcome === 'allowed') {
          answer.window.limiter.reward(customerId, answer.points).catch(() => {});
        }
      }
      return refuse(res, config, req, customerId, refused, tier);
    }
    if (tpm?.outcome === 'allowed')
      correctTokensAfterSettlement(billing, windows, customerId, estimatedTokens);
    return next();
  };
}

async function currentTier(
  config: ResolvedTierRateLimitOptions,
  customerId: string,
  lastTier: LRUCache<string, ResolvedTier>,
): Promise<ResolvedTier> {
  try {
    const { spend, firstPaymentAt } = await config.store.getSpend(customerId);
    const tier = tierFor(config.tiers, spend, firstPaymentAt, config.store.now());
    lastTier.set(customerId, tier);
    return tier;
  } catch (error) {
    const fallback = lastTier.get(customerId) ?? config.tiers[0]!;
    config.logger.warn('store unavailable: limiting on the last known tier', {
      customerId,
      tier: fallback.name,
      error,
    });
    return fallback;
  }
}

function setHeaders(res: Response, rpm: Consumed, tpm: Consumed | undefined): void {
  const set = (kind: 'requests' | 'tokens', answer: Consumed) => {
    if (answer.outcome === 'failed') return;
    res.setHeader(`x-ratelimit-limit-${kind}`, String(answer.window.limit));
    res.setHeader(`x-ratelimit-remaining-${kind}`, String(Math.max(0, answer.result.remainingPoints)));
    res.setHeader(`x-ratelimit-reset-${kind}`, openAIDuration(answer.result.msBeforeNext));
  };
  set('requests', rpm);
  if (tpm) set('tokens', tpm);
}

/** After the response is settled, the window is charged the actual tokens, not the estimate. */
function correctTokensAfterSettlement(
  billing: RequestBilling,
  windows: TierLimiters,
  customerId: string,
  estimated: number,
): void {
  const tpm = windows.tpm!;
  billing.onEnd((ended) => {
    if (!ended.settledUsage) return;
    const actual = ended.settledUsage.reduce((sum, usage) => sum + usage.inputTokens + usage.outputTokens, 0);
    const difference = actual - estimated;
    if (difference > 0) tpm.limiter.penalty(customerId, difference).catch(() => {});
    else if (difference < 0) tpm.limiter.reward(customerId, -difference).catch(() => {});
  });
}

function refuse(
  res: Response,
  config: ResolvedTierRateLimitOptions,
  req: Request,
  customerId: string,
  refused: Extract<Consumed, { outcome: 'refused' }>,
  tier: ResolvedTier,
): void {
  const wait = refused.result.msBeforeNext;
  const used = Math.max(0, refused.result.consumedPoints - refused.points);
  const model = config.model(req);
  const message =
    `Rate limit reached for ${model ?? 'requests'} in organization ${customerId} on ${refused.window.label}: ` +
    `Limit ${refused.window.limit}, Used ${used}, Requested ${refused.points}. ` +
    `Please try again in ${openAIDuration(wait)}. Your usage tier is ${tier.name}; spending more unlocks higher limits.`;
  sendOpenAIError(res, 429, openAIError(message, refused.window.kind, 'rate_limit_exceeded'), {
    'retry-after': String(retryAfterSeconds(wait)),
    'retry-after-ms': String(Math.ceil(wait)),
  });
}
