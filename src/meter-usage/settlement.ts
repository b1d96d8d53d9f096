import type { UsageRecord } from '../billing-context.js';
import type { Logger } from '../logger.js';
import type { ResolvedMetering } from '../metering.js';
import { costOfTokens, type Money } from '../money.js';
import { priceOf, type ResolvedPricing } from '../options.js';
import { SPEND_RETENTION_MS, spendDayPeriod, utcDate, utcMonth } from '../spend/day-period.js';
import type { Settlement, UsageIncrement } from '../store/types.js';
import { usageEvents } from './usage-events.js';

/**
 * A settlement id is remembered this long: far longer than any retry of it (retries of a
 * settlement happen within minutes of the store coming back).
 */
export const SETTLEMENT_RETENTION_MS = 24 * 60 * 60_000;
/** How long a billing period's counters are kept by default. */
export const USAGE_RETENTION_MS = 62 * 24 * 60 * 60_000;

/** What pricing a settlement needs. */
export interface SettlementPricing {
  pricing: ResolvedPricing;
  meters: ResolvedMetering;
  logger: Logger;
  usageRetentionMs: number;
  /** How long each day's spend counters are kept. @default SPEND_RETENTION_MS (400 days) */
  spendRetentionMs?: number | undefined;
}

/** Usage to settle: a request's, or one call's billed on its own. */
export interface UsageToSettle {
  customerId: string;
  /** Exactly-once key of the settlement, and the base of its event ids. */
  settlementId: string;
  /** The reservation the settlement releases. */
  reservationId?: string | undefined;
  records: readonly UsageRecord[];
  /** False when a subscription covers the usage: counted, not charged, no events for Dodo. */
  chargeCredits: boolean;
  /** Billing period of the counters. @default the UTC month */
  usagePeriod?: string | undefined;
  /** The usage period of the key's budget the request was admitted under, if any. */
  budgetPeriod?: string | undefined;
  now: number;
}

/** UTC calendar month, the default billing period of the usage counters. */
/** The last timestamp formatted: under load, several settlements share a millisecond. */
let lastTimestamp = { ms: Number.NaN, iso: '' };

/** RFC 3339 (UTC, milliseconds), as usage events carry it. */
function isoTimestamp(ms: number): string {
  if (ms !== lastTimestamp.ms) lastTimestamp = { ms, iso: new Date(ms).toISOString() };
  return lastTimestamp.iso;
}

function calendarMonth(now: number): string {
  return utcMonth(now);
}

/**
 * The billing period's counters; the UTC day's (what `billing.spend` reads: tokens always, cost
 * only when credits paid it, so a day's cost is what the balance lost that day); and the key
 * budget's spend when the request was admitted under one (only credit spend counts against a
 * budget, as only it was held against it).
 */
function periodsOf(
  config: SettlementPricing,
  usage: UsageToSettle,
  counters: Record<string, bigint>,
  cost: Money,
): UsageIncrement[] {
  const periods: UsageIncrement[] = [
    { period: usage.usagePeriod ?? calendarMonth(usage.now), counters, ttlMs: config.usageRetentionMs },
    {
      period: spendDayPeriod(utcDate(usage.now)),
      counters: usage.chargeCredits ? counters : tokenCounters(counters),
      ttlMs: config.spendRetentionMs ?? SPEND_RETENTION_MS,
    },
  ];
  if (usage.budgetPeriod !== undefined && usage.chargeCredits) {
    periods.push({
      period: usage.budgetPeriod,
      counters: { cost, tokens: counters.tokens ?? 0n },
      ttlMs: config.usageRetentionMs,
    });
  }
  return periods;
}

/** The counters without the cost ones: usage a subscription covered spent no credits. */
function tokenCounters(counters: Record<string, bigint>): Record<string, bigint> {
  return Object.fromEntries(
    Object.entries(counters).filter(([name]) => name !== 'cost' && !name.startsWith('cost:')),
  );
}

/**
 * The one shape every settlement has: the exact cost deducted from the balance view, the input
 * and output events queued for Dodo (ids `<settlementId>:input` / `:output`, `:<n>:…` for the
 * n-th record), counters added for the billing period and for the UTC day (`input_tokens`,
 * `output_tokens`, `tokens`, `cost`, and per model `tokens:<model>`, `cost:<model>`).
 */
export function buildSettlement(config: SettlementPricing, usage: UsageToSettle): Settlement {
  let cost: Money = 0n;
  const counters: Record<string, bigint> = {};
  const add = (name: string, amount: bigint) => {
    counters[name] = (counters[name] ?? 0n) + amount;
  };
  for (const record of usage.records) {
    const tokens = BigInt(record.inputTokens + record.outputTokens);
    add('input_tokens', BigInt(record.inputTokens));
    add('output_tokens', BigInt(record.outputTokens));
    add('tokens', tokens);
    add(`tokens:${record.model}`, tokens);
    const price = priceOf(config.pricing, record.model);
    if (!price) {
      // Dodo still prices the events with its meters; only the local view cannot.
      config.logger.warn(
        'usage of an unpriced model: its events are sent, the local balance is not charged',
        {
          model: record.model,
        },
      );
      continue;
    }
    const recordCost = costOfTokens(price, record.inputTokens, record.outputTokens).total;
    cost += recordCost;
    add('cost', recordCost);
    add(`cost:${record.model}`, recordCost);
  }
  return {
    customerId: usage.customerId,
    reservationId: usage.reservationId,
    settlementId: usage.settlementId,
    cost: usage.chargeCredits ? cost : 0n,
    events: usage.chargeCredits
      ? usageEvents(
          { customerId: usage.customerId, requestId: usage.settlementId },
          usage.records,
          config.meters,
          isoTimestamp(usage.now),
        )
      : [],
    usage: usage.records.length > 0 ? periodsOf(config, usage, counters, cost) : undefined,
    retentionMs: SETTLEMENT_RETENTION_MS,
  };
}
