import type { Request, Response } from 'express';
import type { RequestBilling } from '../billing-context.js';
import type { RequestEstimate } from '../estimate/index.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { captureResponse } from '../meter-usage/response-capture.js';
import { usageRecordsOf } from '../meter-usage/usage-records.js';
import { displayUsd } from '../money.js';
import { subscriptionPeriod } from '../store/subscription-period.js';
import type { AdmissionPlan, AdmissionPlans, AdmissionResult } from '../store/types.js';
import type { ResolvedCap, ResolvedPlan, ResolvedSoftCapRouterOptions } from './options.js';

function capLabel(cap: { unit: 'tokens' | 'cost' }, amount: bigint): string {
  return cap.unit === 'tokens' ? `${amount} tokens` : displayUsd(amount);
}

/**
 * The soft cap as a step of the billing chain: the admission finds the subscription that
 * covers the request and holds its estimate against the plan's hard cap, atomically; this step
 * then refuses past the hard cap, or rewrites the model past the soft cap.
 */
export class SoftCapStep {
  private readonly byProduct: ReadonlyMap<string, AdmissionPlan>;
  private warnedAboutUsd = false;

  constructor(private readonly config: ResolvedSoftCapRouterOptions) {
    this.byProduct = new Map(
      [...config.plans].map(([productId, plan]) => [
        productId,
        plan.hardCap
          ? {
              chargeCredits: config.chargeSubscribers,
              hardCap: { unit: plan.hardCap.unit, amount: plan.hardCap.amount, perSeat: plan.perSeat },
            }
          : { chargeCredits: config.chargeSubscribers },
      ]),
    );
  }

  /** What the admission needs to find the covering subscription and hold against its cap. */
  plans(estimate: RequestEstimate): AdmissionPlans {
    return {
      activeStatuses: [...this.config.activeStatuses],
      byProduct: this.byProduct,
      estimate: { tokens: BigInt(estimate.maxTokens), cost: estimate.maxCost() },
    };
  }

  /** Applies what the admission found; answers 429 itself past the hard cap (returns false). */
  decide(billing: RequestBilling, result: AdmissionResult, req: Request, res: Response): boolean {
    const subscription = result.subscription;
    if (!subscription) return true;
    const plan = this.config.plans.get(subscription.productId)!;
    billing.subscription = subscription;
    billing.usagePeriod = subscriptionPeriod(subscription);
    billing.chargeCredits = this.config.chargeSubscribers;
    if (result.capped) {
      const { capped } = result;
      sendOpenAIError(
        res,
        429,
        openAIError(
          `You have reached your plan's usage cap for this billing period (${capLabel(capped, capped.used)} of ${capLabel(capped, capped.limit)}). It resets on ${new Date(subscription.periodEnd).toISOString().slice(0, 10)}.`,
          'usage_cap_exceeded',
          'usage_cap_exceeded',
        ),
        { 'x-should-retry': 'false' },
      );
      return false;
    }
    this.countUsageWithoutMeter(billing, res, plan);
    const used = billing.profile?.periodUsage.get(subscription.subscriptionId)?.[plan.softCap.unit] ?? 0n;
    const seats = BigInt(plan.perSeat ? Math.max(1, subscription.quantity) : 1);
    if (used >= plan.softCap.amount * seats) this.downgrade(plan, billing, req, res);
    return true;
  }

  private downgrade(plan: ResolvedPlan, billing: RequestBilling, req: Request, res: Response): void {
    const body = req.body as { model?: unknown } | undefined;
    const requested = billing.model;
    const smaller = requested === undefined ? undefined : plan.downgrade.get(requested);
    if (!smaller || !body || typeof body !== 'object') return;
    body.model = smaller;
    billing.model = smaller;
    res.setHeader(this.config.header, requested!);
  }

  /**
   * Usage is counted by `meterUsage` when it settles the request; without it, the router counts
   * what the response reports itself, so caps work with the router alone.
   */
  private countUsageWithoutMeter(billing: RequestBilling, res: Response, plan: ResolvedPlan): void {
    const capture = captureResponse(res, billing.settings.maxJsonBytes);
    billing.onSettling((ended) => {
      if (ended.settledUsage) return;
      if (!this.warnedAboutUsd && isCostCap(plan)) {
        // Only `meterUsage` knows the prices: without it a USD cap would silently never apply.
        this.warnedAboutUsd = true;
        this.config.logger.warn(
          'softCapRouter: a USD cap is counted by meterUsage, which this route does not mount',
          {
            customerId: ended.customerId,
          },
        );
      }
      const records = usageRecordsOf(ended, capture, res);
      if (records.length === 0) return;
      const tokens = records.reduce((sum, usage) => sum + BigInt(usage.inputTokens + usage.outputTokens), 0n);
      this.config.store
        .addUsage(ended.customerId, {
          period: ended.usagePeriod!,
          counters: { tokens },
          ttlMs: this.config.usageRetentionMs,
        })
        .catch((error) =>
          this.config.logger.error('counting subscriber usage failed', {
            customerId: ended.customerId,
            error,
          }),
        );
    });
  }
}

function isCostCap(plan: ResolvedPlan): boolean {
  const costly = (cap: ResolvedCap | undefined) => cap?.unit === 'cost';
  return costly(plan.softCap) || costly(plan.hardCap);
}
