import type { UsageRecord } from '../billing-context.js';
import { buildSettlement, USAGE_RETENTION_MS } from '../meter-usage/settlement.js';
import type { Settlement } from '../store/types.js';
import type { OutsideSettlementConfig } from './options.js';

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
 * The settlement of one call, shaped as `meterUsage` settles a request (the same builder):
 * exactly once per `settlementId`.
 */
export function outsideSettlement(config: OutsideSettlementConfig, usage: OutsideUsage): Settlement {
  return buildSettlement(
    { ...config, usageRetentionMs: USAGE_RETENTION_MS },
    {
      customerId: usage.customerId,
      settlementId: usage.settlementId,
      records: [usage.record],
      chargeCredits: usage.chargeCredits ?? true,
      usagePeriod: usage.usagePeriod,
      now: config.store.now(),
    },
  );
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
