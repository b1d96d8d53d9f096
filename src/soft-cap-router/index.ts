import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { billingOf, openBilling, type RequestBilling } from '../billing-context.js';
import { sendReservationAhead } from '../early-reservation.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { captureResponse } from '../meter-usage/response-capture.js';
import { usageRecordsOf } from '../meter-usage/usage-records.js';
import { displayUsd } from '../money.js';
import { subscriptionPeriod } from '../store/subscription-period.js';
import type { CustomerProfile, SubscriptionState } from '../store/types.js';
import {
  type ResolvedCap,
  type ResolvedPlan,
  type ResolvedSoftCapRouterOptions,
  resolveSoftCapRouterOptions,
  type SoftCapRouterOptions,
} from './options.js';

export type { SoftCapPlan, SoftCapRouterOptions, UsageCap } from './options.js';

/** Largest JSON response read for usage when `meterUsage` is not mounted. */
const MAX_JSON_BYTES = 8 * 1024 * 1024;

function capLabel(cap: ResolvedCap, amount: bigint): string {
  return cap.unit === 'tokens' ? `${amount} tokens` : displayUsd(amount);
}

/**
 * ChatGPT-style soft caps for subscribers: usage in the subscription's current period is
 * counted; past the plan's soft cap the request's model is rewritten to the smaller one (and
 * the response says so in a header) instead of being refused; past an optional hard cap, 429.
 * Customers without an active subscription to a listed plan pass through untouched.
 */
export function softCapRouter(options: Readonly<SoftCapRouterOptions>): RequestHandler {
  const config = resolveSoftCapRouterOptions(options);
  const warnedAboutUsd = { done: false };

  return async function softCapRouterMiddleware(req: Request, res: Response, next: NextFunction) {
    let billing: RequestBilling | undefined;
    let profile: CustomerProfile;
    try {
      billing = billingOf(res) ?? (await openBilling(req, res, config));
      if (!billing) return next();
      // `requireCredits`' reservation travels with the profile read (no-op if already sent).
      sendReservationAhead(req, billing);
      profile = await billing.profile(config.store);
    } catch (error) {
      config.logger.warn('soft caps unavailable: request passes unrouted', { error });
      return next();
    }
    const subscription = pickSubscription(config, profile.subscriptions);
    if (!subscription) return next();
    const used = profile.periodUsage.get(subscription.subscriptionId) ?? {};
    const plan = config.plans.get(subscription.productId)!;
    billing.usagePeriod = subscriptionPeriod(subscription);
    billing.chargeCredits = config.chargeSubscribers;
    countUsageWithoutMeter(config, billing, res, plan, warnedAboutUsd);

    const seats = BigInt(plan.perSeat ? Math.max(1, subscription.quantity) : 1);
    const usage = (cap: ResolvedCap) => used[cap.unit] ?? 0n;
    if (plan.hardCap && usage(plan.hardCap) >= plan.hardCap.amount * seats) {
      const cap = plan.hardCap;
      return sendOpenAIError(
        res,
        429,
        openAIError(
          `You have reached your plan's usage cap for this billing period (${capLabel(cap, usage(cap))} of ${capLabel(cap, cap.amount * seats)}). It resets on ${new Date(subscription.periodEnd).toISOString().slice(0, 10)}.`,
          'usage_cap_exceeded',
          'usage_cap_exceeded',
        ),
        { 'x-should-retry': 'false' },
      );
    }
    if (usage(plan.softCap) >= plan.softCap.amount * seats) downgrade(config, plan, billing, req, res);
    return next();
  };
}

/** The newest active subscription to one of the configured plans (a grace period counts until it ends). */
function pickSubscription(
  config: ResolvedSoftCapRouterOptions,
  subscriptions: SubscriptionState[],
): SubscriptionState | undefined {
  const now = config.store.now();
  return subscriptions
    .filter(
      (subscription) =>
        config.activeStatuses.has(subscription.status) &&
        config.plans.has(subscription.productId) &&
        !(subscription.graceEndsAt !== undefined && subscription.graceEndsAt <= now),
    )
    .sort((a, b) => b.updatedAt - a.updatedAt)[0];
}

function downgrade(
  config: ResolvedSoftCapRouterOptions,
  plan: ResolvedPlan,
  billing: RequestBilling,
  req: Request,
  res: Response,
): void {
  const body = req.body as { model?: unknown } | undefined;
  const requested = billing.model ?? (typeof body?.model === 'string' ? body.model : undefined);
  const smaller = requested === undefined ? undefined : plan.downgrade.get(requested);
  if (!smaller || !body) return;
  body.model = smaller;
  billing.model = smaller;
  res.setHeader(config.header, requested!);
}

/**
 * Usage is counted by `meterUsage` when it settles the request; without it, the router counts
 * what the response reports itself, so caps work with the router alone.
 */
function countUsageWithoutMeter(
  config: ResolvedSoftCapRouterOptions,
  billing: RequestBilling,
  res: Response,
  plan: ResolvedPlan,
  warnedAboutUsd: { done: boolean },
): void {
  const capture = captureResponse(res, MAX_JSON_BYTES);
  billing.onSettling((ended) => {
    if (ended.settledUsage) return;
    if (!warnedAboutUsd.done && (plan.softCap.unit === 'cost' || plan.hardCap?.unit === 'cost')) {
      // Only `meterUsage` knows the prices: without it a USD cap would silently never apply.
      warnedAboutUsd.done = true;
      config.logger.warn(
        'softCapRouter: a USD cap is counted by meterUsage, which this route does not mount',
        {
          customerId: ended.customerId,
        },
      );
    }
    const records = usageRecordsOf(ended, capture, res);
    if (records.length === 0) return;
    const tokens = records.reduce((sum, usage) => sum + BigInt(usage.inputTokens + usage.outputTokens), 0n);
    config.store
      .addUsage(ended.customerId, {
        period: ended.usagePeriod!,
        counters: { tokens },
        ttlMs: config.usageRetentionMs,
      })
      .catch((error) =>
        config.logger.error('counting subscriber usage failed', { customerId: ended.customerId, error }),
      );
  });
}
