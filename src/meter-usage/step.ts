import { randomUUID } from 'node:crypto';
import type { Request, Response } from 'express';
import type { AutoRecharger } from '../auto-recharge/index.js';
import type { RequestBilling } from '../billing-context.js';
import { setBudgetHeaders } from '../budget-headers.js';
import type { BillingObserver } from '../metrics/observer.js';
import { formatUsd, type Money } from '../money.js';
import type { Settlement, SettleResult } from '../store/types.js';
import type { ResolvedMeterUsageOptions } from './options.js';
import type { OutboxFlusher } from './outbox-flusher.js';
import { captureResponse, type ResponseCapture } from './response-capture.js';
import { buildSettlement } from './settlement.js';
import { usageRecordsOf } from './usage-records.js';

/**
 * For a Chat Completions stream, makes sure the upstream sends its usage chunk — what it bills
 * — by asking for it in the request the handler forwards (`stream_options.include_usage`).
 * Returns whether the client itself asked for it, or `undefined` for a request that is not a
 * Chat Completions stream.
 */
function askUsageOfStream(req: Request): boolean | undefined {
  const body = req.body as Record<string, unknown> | undefined;
  if (!body || typeof body !== 'object' || body.stream !== true || !Array.isArray(body.messages))
    return undefined;
  const options = body.stream_options;
  const asked =
    typeof options === 'object' &&
    options !== null &&
    (options as { include_usage?: unknown }).include_usage === true;
  if (!asked)
    body.stream_options = {
      ...(typeof options === 'object' && options !== null ? options : {}),
      include_usage: true,
    };
  return asked;
}

/**
 * Tells the observer what a settled request spent, per model (from the settlement's own
 * `cost:<model>` counters: no second pricing), and how far its hold was from it.
 */
function reportSettled(
  metrics: Required<BillingObserver>,
  billing: RequestBilling,
  settlement: Settlement,
): void {
  if (!billing.chargeCredits) return;
  const estimated = billing.settledCost?.estimated ?? false;
  const counters = settlement.usage?.[0]?.counters ?? {};
  for (const name in counters) {
    if (name.startsWith('cost:')) metrics.settled(name.slice(5), counters[name]!, estimated);
  }
  const held = billing.reservation?.amount;
  if (held !== undefined && held > 0n) metrics.estimateError(billing.model, settlement.cost - held);
}

/**
 * Metering as a step of the billing chain: it captures the response and settles the request's
 * usage in its tail — before the response's last bytes leave, so a client that received a
 * complete answer has been billed even if the process dies the next instant. The settlement is
 * one atomic store write (holds released, cost deducted, events queued in the durable outbox);
 * the outbox flusher delivers the events to Dodo in the background.
 */
export class MeterStep {
  constructor(
    readonly config: ResolvedMeterUsageOptions,
    readonly flusher: OutboxFlusher,
    /** Told the available balance each settlement leaves, when auto-recharge is on. */
    readonly recharger?: AutoRecharger,
  ) {}

  install(billing: RequestBilling, req: Request, res: Response): void {
    const capture = captureResponse(res, billing.settings.maxJsonBytes, billing.settings.estimateTokens);
    billing.settler = {
      settle: (ended, response) => this.settle(ended, capture, response),
      abandonedResponseTimeoutMs: this.config.abandonedResponseTimeoutMs,
    };
    capture.tail = () => billing.end(res);
    const clientAskedUsage = askUsageOfStream(req);
    if (clientAskedUsage === undefined) return;
    capture.rewriteUsageEvent = (event) => {
      // The upstream's usage chunk was asked for billing only: the client never sees it.
      if (!clientAskedUsage) return undefined;
      const cost = billing.settledCost;
      if (!this.config.costHeaders || !cost || !billing.chargeCredits) return event;
      const usage = { ...(event.usage as Record<string, unknown>), cost: formatUsd(cost.cost) };
      if (cost.estimated) Object.assign(usage, { cost_estimated: true });
      return { ...event, usage };
    };
  }

  private async settle(billing: RequestBilling, capture: ResponseCapture, res: Response): Promise<void> {
    const { store, logger } = this.config;
    const { customerId } = billing;
    const requestId = billing.useRequestId();
    const records = usageRecordsOf(billing, capture, res);
    billing.settledUsage = records;
    if (records.length === 0) {
      // Nothing was generated: the request id stays free for a retry, and its holds go back.
      if (billing.reservation) {
        await store.release(customerId, billing.reservation.id).catch((error: unknown) =>
          logger.warn('releasing a request that used nothing failed: its hold expires on its own', {
            customerId,
            requestId,
            error,
          }),
        );
      }
      return;
    }
    const settlementOf = (settlementId: string) =>
      buildSettlement(this.config, {
        customerId,
        settlementId,
        reservationId: billing.reservation?.id,
        records,
        chargeCredits: billing.chargeCredits,
        usagePeriod: billing.usagePeriod,
        budgetPeriod: billing.budget?.period,
        now: store.now(),
      });
    let settlement = settlementOf(requestId);
    try {
      let result = await store.settle(settlement);
      if (!result.applied) {
        // Another request already settled under this id (no admission refused it: credits
        // are not mounted): this one is billed under an id of its own, never for free.
        logger.warn('a request id was already settled: billing this request under an id of its own', {
          customerId,
          requestId,
        });
        settlement = settlementOf(`${requestId}:${randomUUID()}`);
        result = await store.settle(settlement);
      }
      this.noteCost(billing, settlement, result.view?.balance, res);
      const budgetSpent = budgetSpentAfter(billing, settlement, result);
      // A JSON answer's budget headers say what the key's budget leaves after its settled cost
      // (the admission set them from its hold; other requests in flight may still hold part).
      if (budgetSpent !== undefined && !res.headersSent) setBudgetHeaders(res, billing.budget!, budgetSpent);
      if (result.applied) this.alert(customerId, billing, settlement, result, budgetSpent);
      if (result.applied && this.config.metrics) reportSettled(this.config.metrics, billing, settlement);
      if (result.applied) this.recharger?.watch(customerId, result.view?.available);
    } catch (error) {
      logger.error('settling a request failed: it will be retried in the background', {
        customerId,
        requestId,
        error,
      });
      this.flusher.retryLater(settlement);
    }
  }

  /** Alerts the settlement fired: the balance it lowered, the key budget it added to. */
  private alert(
    customerId: string,
    billing: RequestBilling,
    settlement: Settlement,
    result: SettleResult,
    budgetSpent: Money | undefined,
  ): void {
    const alerts = this.config.alerts;
    if (!alerts) return;
    alerts.settled(customerId, settlement.cost, result.view);
    if (budgetSpent !== undefined)
      alerts.budgetSettled(customerId, billing.budget!, settlement.cost, budgetSpent);
  }

  /** Keeps what the request cost and, for a JSON answer whose headers are not sent, says it. */
  private noteCost(
    billing: RequestBilling,
    settlement: Settlement,
    balance: bigint | undefined,
    res: Response,
  ): void {
    const estimated = billing.settledUsage?.some((usage) => usage.estimated === true) ?? false;
    billing.settledCost = { cost: settlement.cost, balance, estimated };
    if (!this.config.costHeaders || res.headersSent || !billing.chargeCredits) return;
    res.setHeader('x-billing-cost', formatUsd(settlement.cost));
    if (balance !== undefined) res.setHeader('x-billing-balance', formatUsd(balance));
    if (estimated) res.setHeader('x-billing-estimated', 'true');
  }
}

/** The key budget's spend this period after the settlement, when the request was billed to one. */
function budgetSpentAfter(
  billing: RequestBilling,
  settlement: Settlement,
  result: SettleResult,
): Money | undefined {
  const period = billing.budget?.period;
  if (period === undefined) return undefined;
  // The budget's period is one of the settlement's, as `buildSettlement` lists them.
  const position = settlement.usage?.findIndex((usage) => usage.period === period) ?? -1;
  return position < 0 ? undefined : result.costAfter?.[position];
}
