import { RequestBilling, type UsageRecord } from '../billing-context.js';
import { usageEvents } from '../meter-usage/usage-events.js';
import { costOfTokens, type Money } from '../money.js';
import { priceOf } from '../options.js';
import type { Settlement } from '../store/types.js';
import type { OutsideSettlementConfig } from './options.js';

/** As long as `meterUsage` remembers a settlement id: far longer than any retry of it. */
const SETTLEMENT_RETENTION_MS = 24 * 60 * 60_000;
/** As long as `meterUsage` keeps a billing period's counters. */
const USAGE_RETENTION_MS = 62 * 24 * 60 * 60_000;
/** Pauses before the retries of a settlement the store refused (it is down). */
const RETRY_DELAYS_MS = [1_000, 5_000, 30_000];

/** One tracked call billed on its own, outside a request's settlement. */
export interface OutsideUsage {
  customerId: string;
  /** Exactly-once key of the settlement, and the base of its event ids. */
  settlementId: string;
  record: UsageRecord;
  /** The request's billing period, when the call belonged to one. @default the UTC month */
  usagePeriod?: string | undefined;
  /** False when a subscription covers the request: counted, not charged. @default true */
  chargeCredits?: boolean;
}

/**
 * The settlement of one call, shaped as `meterUsage` settles a request: cost deducted from the
 * balance view, the input and output events queued in the outbox (ids `<settlementId>:input`
 * and `:output`), counters added for the period. Exactly once per `settlementId`.
 */
export function outsideSettlement(config: OutsideSettlementConfig, usage: OutsideUsage): Settlement {
  const { store, pricing, meters, logger } = config;
  const { record } = usage;
  const now = store.now();
  const chargeCredits = usage.chargeCredits ?? true;
  const tokens = BigInt(record.inputTokens + record.outputTokens);
  const counters: Record<string, bigint> = {
    input_tokens: BigInt(record.inputTokens),
    output_tokens: BigInt(record.outputTokens),
    tokens,
    [`tokens:${record.model}`]: tokens,
  };
  let cost: Money = 0n;
  const price = priceOf(pricing, record.model);
  if (price) {
    cost = costOfTokens(price, record.inputTokens, record.outputTokens).total;
    counters.cost = cost;
    counters[`cost:${record.model}`] = cost;
  } else {
    logger.warn('usage of an unpriced model: its events are sent, the local balance is not charged', {
      model: record.model,
    });
  }
  // usageEvents reads only the customer and the id base of the billing it is given.
  const owner = new RequestBilling(usage.customerId, usage.settlementId, async () => {});
  return {
    customerId: usage.customerId,
    settlementId: usage.settlementId,
    cost: chargeCredits ? cost : 0n,
    events: chargeCredits ? usageEvents(owner, [record], meters, new Date(now).toISOString()) : [],
    usage: {
      period: usage.usagePeriod ?? new Date(now).toISOString().slice(0, 7),
      counters,
      ttlMs: USAGE_RETENTION_MS,
    },
    retentionMs: SETTLEMENT_RETENTION_MS,
  };
}

/**
 * Settles one call in the background: never awaited by the LLM call, retried a few times when
 * the store is down (the settlement id makes retries safe), then logged with its usage.
 */
export function settleOutside(config: OutsideSettlementConfig, usage: OutsideUsage): void {
  const settlement = outsideSettlement(config, usage);
  const attempt = (retry: number) => {
    config.store.settle(settlement).catch((error: unknown) => {
      const delay = RETRY_DELAYS_MS[retry];
      if (delay === undefined) {
        config.logger.error('settling a tracked OpenAI call failed: its usage is not billed', {
          customerId: usage.customerId,
          settlementId: usage.settlementId,
          usage: usage.record,
          error,
        });
        return;
      }
      setTimeout(() => attempt(retry + 1), delay).unref();
    });
  };
  attempt(0);
}
