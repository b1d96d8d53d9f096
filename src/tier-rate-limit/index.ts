import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { LRUCache } from 'lru-cache';
import { billingOf, billingOrRefusal, type RequestBilling } from '../billing-context.js';
import { sendReservationAhead } from '../early-reservation.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { captureResponse } from '../meter-usage/response-capture.js';
import { usageRecordsOf } from '../meter-usage/usage-records.js';
import { charactersOverFour, requestedMaxOutputTokens } from '../require-credits/estimate.js';
import { openAIDuration, retryAfterSeconds } from './headers.js';
import {
  buildTierWindows,
  type Consumed,
  type Count,
  type Counted,
  count,
  giveBack,
  judge,
  type Limit,
} from './limiters.js';
import {
  type ResolvedTierRateLimitOptions,
  resolveTierRateLimitOptions,
  type TierRateLimitOptions,
} from './options.js';
import { type ResolvedTier, tierFor } from './tiers.js';

export { openAIDuration } from './headers.js';
export type { TierRateLimitOptions } from './options.js';
export { GUIDE_TIERS, OPENAI_TIERS, SEED_TIERS, type Tier } from './tiers.js';

/** Largest JSON response read for usage when `meterUsage` is not mounted. */
const MAX_JSON_BYTES = 8 * 1024 * 1024;

/**
 * OpenAI's spend-based usage tiers: the customer's lifetime spend and days since first payment
 * (kept true by `dodoWebhooks`) select a tier, whose RPM, TPM and RPD are enforced with
 * `rate-limiter-flexible` on the store's backend. Every response carries OpenAI's
 * `x-ratelimit-*` headers; over a limit, a 429 shaped like OpenAI's.
 */
export function tierRateLimit(options: Readonly<TierRateLimitOptions>): RequestHandler {
  const config = resolveTierRateLimitOptions(options);
  const windows = buildTierWindows(config.store, config.tiers, config.keyPrefix);
  // The last tier seen per customer: used while the store cannot tell the spend.
  const lastTier = new LRUCache<string, ResolvedTier>({ max: 100_000 });

  return async function tierRateLimitMiddleware(req: Request, res: Response, next: NextFunction) {
    const billing = billingOf(res) ?? (await billingOrRefusal(req, res, next, config));
    if (!billing) return;
    const customerId = billing.customerId;
    const estimatedTokens =
      charactersOverFour(billing.promptOf(req.body)) + (requestedMaxOutputTokens(req.body) ?? 0);
    // Counting does not depend on the tier (every tier shares the windows), so the request is
    // counted while its tier is read, and `requireCredits`' reservation goes with them: one
    // round trip for the three.
    sendReservationAhead(req, billing);
    const [tier, rpmCount, rpdCount, tpmCount] = await Promise.all([
      currentTier(config, billing, lastTier),
      count(windows.rpm, customerId, 1),
      windows.rpd && count(windows.rpd, customerId, 1),
      windows.tpm && count(windows.tpm, customerId, estimatedTokens),
    ]);
    const limits = windows.limitsOf.get(tier.name)!;
    const rpm = judge(rpmCount, limits.rpm);
    const tokens = judgeIfCounted(tpmCount, limits.tpm);
    const consumed = [rpm, judgeIfCounted(rpdCount, limits.rpd), tokens];
    // The headers show the tier's own limits: the tokens trio only when the tier limits tokens.
    const tpm = limits.tpm ? tokens : undefined;
    for (const answer of consumed) {
      if (answer?.outcome === 'failed') {
        config.logger.error('rate limiter failed even with its insurance: request not limited', {
          customerId,
          error: answer.error,
        });
      }
    }
    if (limits.tpm && estimatedTokens > limits.tpm.limit) {
      for (const answer of consumed) if (answer) giveBack(answer, customerId, answer.points);
      return tooLarge(res, config, req, customerId, limits.tpm, estimatedTokens);
    }
    const refused = consumed.find((answer) => answer?.outcome === 'refused');
    if (refused && refused.outcome === 'refused') {
      // A refused request is not counted in any window: "Used" stays what was admitted, and a
      // large refused request does not crowd out smaller ones that fit.
      for (const answer of consumed) if (answer) giveBack(answer, customerId, answer.points);
      setHeaders(res, rpm, tpm, true);
      return refuse(res, config, req, customerId, refused, tier);
    }
    setHeaders(res, rpm, tpm, false);
    if (tokens?.outcome === 'allowed') correctTokensAfterSettlement(billing, res, tokens, customerId);
    return next();
  };
}

/**
 * A window's count judged against the tier's limit in it; a window the tier does not limit
 * (another tier does) still holds the request's count, so it is judged as unlimited.
 */
function judgeIfCounted(counted: Count | undefined, limit: Limit | undefined): Consumed | undefined {
  if (!counted) return undefined;
  return judge(counted, limit ?? { window: counted.window, limit: Number.POSITIVE_INFINITY });
}

async function currentTier(
  config: ResolvedTierRateLimitOptions,
  billing: RequestBilling,
  lastTier: LRUCache<string, ResolvedTier>,
): Promise<ResolvedTier> {
  const { customerId } = billing;
  try {
    const { spend, firstPaymentAt } = await billing.profile(config.store);
    const tier = tierFor(config.tiers, spend, firstPaymentAt, config.store.now());
    lastTier.set(customerId, tier);
    return tier;
  } catch (error) {
    const fallback = lastTier.get(customerId) ?? config.tiers[0]!;
    config.logger.warn(
      'store unavailable: limiting on the last known tier with the in-process insurance limiter',
      {
        customerId,
        tier: fallback.name,
        error,
      },
    );
    return fallback;
  }
}

/** OpenAI's rate-limit header names, per kind of window. */
const HEADER_NAMES = {
  requests: {
    limit: 'x-ratelimit-limit-requests',
    remaining: 'x-ratelimit-remaining-requests',
    reset: 'x-ratelimit-reset-requests',
  },
  tokens: {
    limit: 'x-ratelimit-limit-tokens',
    remaining: 'x-ratelimit-remaining-tokens',
    reset: 'x-ratelimit-reset-tokens',
  },
} as const;

function setHeaders(res: Response, rpm: Consumed, tpm: Consumed | undefined, refused: boolean): void {
  setWindowHeaders(res, rpm, refused);
  if (tpm) setWindowHeaders(res, tpm, refused);
}

function setWindowHeaders(res: Response, answer: Consumed, refused: boolean): void {
  if (answer.outcome === 'failed') return;
  const names = HEADER_NAMES[answer.limit.window.kind];
  // A refused request was given back, so what remains is counted without it.
  const counted = refused ? answer.used : answer.used + answer.points;
  res.setHeader(names.limit, String(answer.limit.limit));
  res.setHeader(names.remaining, String(Math.max(0, answer.limit.limit - counted)));
  res.setHeader(names.reset, openAIDuration(answer.msBeforeNext));
}

/**
 * After the response, the window is charged the actual tokens instead of the estimate: the
 * usage `meterUsage` settles, else the usage the response reports. The correction is sent with
 * the settlement, in its round trip. An error response without usage generated nothing and is
 * charged nothing; a success without usage keeps the estimate.
 */
function correctTokensAfterSettlement(
  billing: RequestBilling,
  res: Response,
  tpm: Consumed,
  customerId: string,
): void {
  const capture = captureResponse(res, MAX_JSON_BYTES);
  billing.onSettling((ended) => {
    const records = ended.settledUsage ?? usageRecordsOf(ended, capture, res);
    if (records.length === 0 && res.statusCode < 400) return;
    const actual = records.reduce((sum, usage) => sum + usage.inputTokens + usage.outputTokens, 0);
    const difference = actual - tpm.points;
    if (difference > 0) tpm.limit.window.limiter.penalty(customerId, difference).catch(() => {});
    else giveBack(tpm, customerId, -difference);
  });
}

function refuse(
  res: Response,
  config: ResolvedTierRateLimitOptions,
  req: Request,
  customerId: string,
  refused: Counted,
  tier: ResolvedTier,
): void {
  const wait = refused.msBeforeNext;
  const model = config.model(req);
  const message =
    `Rate limit reached for ${model ?? 'requests'} in organization ${customerId} on ${refused.limit.window.label}: ` +
    `Limit ${refused.limit.limit}, Used ${refused.used}, Requested ${refused.points}. ` +
    `Please try again in ${openAIDuration(wait)}. Your usage tier is ${tier.name}; spending more unlocks higher limits.`;
  sendOpenAIError(res, 429, openAIError(message, refused.limit.window.kind, 'rate_limit_exceeded'), {
    'retry-after': String(retryAfterSeconds(wait)),
    'retry-after-ms': String(Math.ceil(wait)),
  });
}

/** A request whose estimate alone exceeds the TPM limit can never run: OpenAI's "Request too large". */
function tooLarge(
  res: Response,
  config: ResolvedTierRateLimitOptions,
  req: Request,
  customerId: string,
  tpm: Limit,
  requested: number,
): void {
  const model = config.model(req);
  const message =
    `Request too large for ${model ?? 'requests'} in organization ${customerId} on ${tpm.window.label}: ` +
    `Limit ${tpm.limit}, Requested ${requested}. The input or output tokens must be reduced in order to run successfully.`;
  // Retrying the same request cannot succeed: the `openai` SDK honours `x-should-retry`.
  sendOpenAIError(res, 429, openAIError(message, tpm.window.kind, 'rate_limit_exceeded'), {
    'x-should-retry': 'false',
  });
}
