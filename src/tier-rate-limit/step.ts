import type { Request, Response } from 'express';
import { LRUCache } from 'lru-cache';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import type { RequestBilling } from '../billing-context.js';
import type { RequestEstimate } from '../estimate/index.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { captureResponse } from '../meter-usage/response-capture.js';
import { usageRecordsOf } from '../meter-usage/usage-records.js';
import type { CustomerProfile } from '../store/types.js';
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
  type TierWindows,
  type Window,
} from './limiters.js';
import type { ResolvedTierRateLimitOptions } from './options.js';
import { type ResolvedTier, tierFor } from './tiers.js';

/** What counting a request in every window answered, sent with the admission. */
export interface TierCounts {
  rpm: Count;
  rpd: Count | undefined;
  tpm: Count | undefined;
  /** Tokens counted in the TPM window. */
  tokens: number;
}

/** What the tier decided: admitted (with an output cap when TPM asked for one), or answered. */
export type TierDecision = { admitted: true; outputPerChoiceCap: number | undefined } | { admitted: false };

/**
 * The tier rate limit as a step of the billing chain: it counts the request in the shared
 * windows in the admission's round trip, then judges the counts against the limits of the tier
 * the customer's profile selects.
 */
export class TierStep {
  private readonly windows: TierWindows;
  /** The last tier seen per customer: used while the store cannot tell the spend. */
  private readonly lastTier = new LRUCache<string, ResolvedTier>({ max: 100_000 });
  /** Per-instance windows used while the store is down, when `whenStoreDown` allows it. */
  private readonly insurance: TierWindows | undefined;

  constructor(private readonly config: ResolvedTierRateLimitOptions) {
    this.windows = buildTierWindows(
      (options) => config.store.createRateLimiter(options),
      config.tiers,
      config.keyPrefix,
    );
    const down = config.whenStoreDown;
    this.insurance =
      down === 'fail-closed'
        ? undefined
        : buildTierWindows(
            (options) => new RateLimiterMemory(options),
            config.tiers.map((tier) => scaleTier(tier, down.instances)),
            `${config.keyPrefix}:insurance`,
          );
  }

  /** Starts counting the request in every window (the calls leave in the current tick). */
  count(billing: RequestBilling, estimate: RequestEstimate): Promise<TierCounts> {
    return this.countIn(this.windows, billing.customerId, estimate.maxTokens);
  }

  private async countIn(windows: TierWindows, customerId: string, tokens: number): Promise<TierCounts> {
    const [rpm, rpd, tpm] = await Promise.all([
      count(windows.rpm, customerId, 1),
      windows.rpd && count(windows.rpd, customerId, 1),
      windows.tpm && count(windows.tpm, customerId, tokens),
    ]);
    return { rpm, rpd, tpm, tokens };
  }

  /** Gives back a request's counts when another step refused it before the tier judged it. */
  giveBack(billing: RequestBilling, counts: TierCounts): void {
    giveBackAll(this.windows, counts, billing.customerId);
  }

  /**
   * Judges the counts against the customer's tier. Answers 429 (or 503 with the store down and
   * no insurance) itself and returns `admitted: false`; otherwise sets OpenAI's headers and
   * arranges for the TPM window to be corrected with the request's real usage.
   */
  async decide(
    billing: RequestBilling,
    estimate: RequestEstimate,
    counted: TierCounts,
    profile: CustomerProfile | undefined,
    req: Request,
    res: Response,
  ): Promise<TierDecision> {
    const { customerId } = billing;
    const tier = this.tierOf(customerId, profile);
    let counts = counted;
    let windows = this.windows;
    if (
      counts.rpm.outcome === 'failed' ||
      counts.tpm?.outcome === 'failed' ||
      counts.rpd?.outcome === 'failed'
    ) {
      if (!this.insurance) {
        this.config.logger.error(
          'rate limiter unavailable: refusing the request with 503 (whenStoreDown: fail-closed)',
          {
            customerId,
            error: (counts.rpm as { error?: unknown }).error,
          },
        );
        giveBackAll(this.windows, counts, customerId);
        sendOpenAIError(
          res,
          503,
          openAIError(
            'Rate limiting is temporarily unavailable, so the request cannot be admitted. Please retry shortly.',
            'server_error',
            'billing_unavailable',
          ),
          { 'retry-after': '5' },
        );
        return { admitted: false };
      }
      giveBackAll(this.windows, counts, customerId);
      windows = this.insurance;
      counts = await this.countIn(windows, customerId, counted.tokens);
    }
    const limits = windows.limitsOf.get(tier.name)!;
    const rpm = judge(counts.rpm, limits.rpm);
    const tokens = judgeIfCounted(counts.tpm, limits.tpm);
    const consumed = [rpm, judgeIfCounted(counts.rpd, limits.rpd), tokens];
    // The headers show the tier's own limits: the tokens trio only when the tier limits tokens.
    const tpm = limits.tpm ? tokens : undefined;
    const shrink = limits.tpm && tokens ? this.outputThatFits(estimate, tokens, limits.tpm) : undefined;
    const tooLarge = limits.tpm && estimate.maxTokens > limits.tpm.limit && shrink === undefined;
    if (tooLarge) {
      for (const answer of consumed) if (answer) giveBack(answer, customerId, answer.points);
      this.tooLarge(res, req, customerId, limits.tpm!, estimate.maxTokens);
      return { admitted: false };
    }
    const refused = consumed.find(
      (answer) => answer?.outcome === 'refused' && !(answer === tokens && shrink !== undefined),
    );
    if (refused && refused.outcome === 'refused') {
      // A refused request is not counted in any window: "Used" stays what was admitted, and a
      // large refused request does not crowd out smaller ones that fit.
      for (const answer of consumed) if (answer) giveBack(answer, customerId, answer.points);
      setHeaders(res, rpm, tpm, true);
      this.refuse(res, req, customerId, refused, tier);
      return { admitted: false };
    }
    let outputPerChoiceCap: number | undefined;
    if (shrink !== undefined && tokens?.outcome === 'refused') {
      // Admitted with a smaller written output limit that fits what the window has left.
      outputPerChoiceCap = shrink;
      const fitted = estimate.inputTokens + estimate.output.choices * shrink;
      giveBack(tokens, customerId, tokens.points - fitted);
      tokens.points = fitted;
      tokens.outcome = 'allowed';
    }
    setHeaders(res, rpm, tpm, false);
    if (tokens?.outcome === 'allowed') this.correctTokensAfterSettlement(billing, res, tokens);
    return { admitted: true, outputPerChoiceCap };
  }

  /**
   * For a request the package writes an output limit into, the largest output per choice that
   * fits the TPM window's remaining tokens (and the limit itself), when it is at least
   * `minOutputTokens`; `undefined` when the request is not shrinkable or nothing fits.
   */
  private outputThatFits(estimate: RequestEstimate, tokens: Consumed, limit: Limit): number | undefined {
    if (!estimate.writesLimit || tokens.outcome === 'failed') return undefined;
    if (tokens.outcome === 'allowed' && estimate.maxTokens <= limit.limit) return undefined;
    const room = limit.limit - tokens.used - estimate.inputTokens;
    const perChoice = Math.min(Math.floor(room / estimate.output.choices), estimate.maxOutputPerChoice);
    return perChoice >= estimate.minOutputPerChoice ? perChoice : undefined;
  }

  private tierOf(customerId: string, profile: CustomerProfile | undefined): ResolvedTier {
    if (profile) {
      const tier = tierFor(this.config.tiers, profile.spend, profile.firstPaymentAt, this.config.store.now());
      this.lastTier.set(customerId, tier);
      return tier;
    }
    const fallback = this.lastTier.get(customerId) ?? this.config.tiers[0]!;
    this.config.logger.warn('store unavailable: limiting on the last known tier', {
      customerId,
      tier: fallback.name,
    });
    return fallback;
  }

  /**
   * After the response, the window is charged the actual tokens instead of the estimate: the
   * usage `meterUsage` settles, else the usage the response reports. The correction is sent with
   * the settlement, in its round trip. An error response without usage generated nothing and is
   * charged nothing; a success without usage keeps the estimate.
   */
  private correctTokensAfterSettlement(billing: RequestBilling, res: Response, tpm: Consumed): void {
    const capture = captureResponse(res, billing.settings.maxJsonBytes);
    billing.onSettling((ended) => {
      const records = ended.settledUsage ?? usageRecordsOf(ended, capture, res);
      if (records.length === 0 && res.statusCode < 400) return;
      const actual = records.reduce((sum, usage) => sum + usage.inputTokens + usage.outputTokens, 0);
      const difference = actual - tpm.points;
      if (difference > 0) tpm.limit.window.limiter.penalty(ended.customerId, difference).catch(() => {});
      else giveBack(tpm, ended.customerId, -difference);
    });
  }

  private refuse(
    res: Response,
    req: Request,
    customerId: string,
    refused: Counted,
    tier: ResolvedTier,
  ): void {
    const wait = refused.msBeforeNext;
    const model = this.config.model(req);
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
  private tooLarge(res: Response, req: Request, customerId: string, tpm: Limit, requested: number): void {
    const model = this.config.model(req);
    const message =
      `Request too large for ${model ?? 'requests'} in organization ${customerId} on ${tpm.window.label}: ` +
      `Limit ${tpm.limit}, Requested ${requested}. The input or output tokens must be reduced in order to run successfully.`;
    // Retrying the same request cannot succeed: the `openai` SDK honours `x-should-retry`.
    sendOpenAIError(res, 429, openAIError(message, tpm.window.kind, 'rate_limit_exceeded'), {
      'x-should-retry': 'false',
    });
  }
}

/** A tier's limits on one of `instances` processes limiting on their own: its share, rounded up. */
function scaleTier(tier: ResolvedTier, instances: number): ResolvedTier {
  const share = (limit: number | undefined) =>
    limit === undefined ? undefined : Math.ceil(limit / instances);
  return { ...tier, rpm: share(tier.rpm)!, rpd: share(tier.rpd), tpm: share(tier.tpm) };
}

/** Gives back whatever the windows did count of a request refused before it was judged. */
function giveBackAll(windows: TierWindows, counts: TierCounts, customerId: string): void {
  const back = (window: Window | undefined, counted: Count | undefined) => {
    if (window && counted?.outcome === 'counted') {
      window.limiter.reward(customerId, counted.points).catch(() => {});
    }
  };
  back(windows.rpm, counts.rpm);
  back(windows.rpd, counts.rpd);
  back(windows.tpm, counts.tpm);
}

/**
 * A window's count judged against the tier's limit in it; a window the tier does not limit
 * (another tier does) still holds the request's count, so it is judged as unlimited.
 */
function judgeIfCounted(counted: Count | undefined, limit: Limit | undefined): Consumed | undefined {
  if (!counted) return undefined;
  return judge(counted, limit ?? { window: counted.window, limit: Number.POSITIVE_INFINITY });
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
