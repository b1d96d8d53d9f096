import type DodoPayments from 'dodopayments';
import { BalanceAlerts } from '../alerts/index.js';
import { ConfigError } from '../errors.js';
import { type Logger, warnOnce } from '../logger.js';
import { defaultMetersProblem, type ResolvedMetering } from '../metering.js';
import { type BillingObserver, resolveObserver } from '../metrics/observer.js';
import {
  positiveInteger,
  type ResolvedPricing,
  requireFunction,
  requireOption,
  resolveLogger,
  resolveMeters,
  resolveModelPricing,
  resolveStore,
  type SharedOptions,
} from '../options.js';
import { SPEND_RETENTION_MS } from '../spend/day-period.js';
import type { BillingStore, DeadLetter } from '../store/types.js';

export interface MeterUsageOptions extends SharedOptions {
  /**
   * How long, after a client leaves before its response ended, to wait for the handler's own
   * answer (its usage is what the upstream bills) before billing an estimate instead.
   * @default 60_000
   */
  abandonedResponseTimeoutMs?: number;
  /**
   * Add `x-billing-cost` and `x-billing-balance` (exact decimal USD) to each billed JSON
   * answer, and `usage.cost` to a stream's usage chunk when the client asked for usage.
   * @default true
   */
  costHeaders?: boolean;
  /** Pause between outbox flushes. @default 1_000 */
  flushIntervalMs?: number;
  /** Events per ingest call (Dodo accepts at most 1000). @default 1000 */
  batchSize?: number;
  /** Deadline of one ingest call to Dodo. @default 10_000 */
  ingestTimeoutMs?: number;
  /** Longest pause before a failed batch is retried. @default 60_000 */
  maxBackoffMs?: number;
  /** How long a claimed batch is this process's before another may take it over. @default 60_000 */
  leaseMs?: number;
  /** How long the counters of a billing period are kept. @default 62 days */
  usageRetentionMs?: number;
  /**
   * How long each UTC day's spend (what `billing.spend` reads) is kept after its last request.
   * @default 400 days
   */
  spendRetentionMs?: number;
  /** Called for each event Dodo refuses as invalid; it stays in the store's dead letters. */
  onDeadLetter?: (deadLetter: DeadLetter) => void;
}

export interface ResolvedMeterUsageOptions {
  store: BillingStore;
  dodo: DodoPayments;
  pricing: ResolvedPricing;
  meters: ResolvedMetering;
  abandonedResponseTimeoutMs: number;
  costHeaders: boolean;
  alerts: BalanceAlerts | undefined;
  flushIntervalMs: number;
  batchSize: number;
  ingestTimeoutMs: number;
  maxBackoffMs: number;
  leaseMs: number;
  usageRetentionMs: number;
  spendRetentionMs: number;
  onDeadLetter: ((deadLetter: DeadLetter) => void) | undefined;
  logger: Logger;
  metrics: Required<BillingObserver> | undefined;
}

const NAME = 'meterUsage';

export function resolveMeterUsageOptions(options: Readonly<MeterUsageOptions>): ResolvedMeterUsageOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: options must be an object.`);
  }
  const batchSize = positiveInteger(options.batchSize, 'batchSize', NAME, 1000);
  if (batchSize > 1000) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${NAME}: \`batchSize\` must be at most 1000, Dodo's limit per ingest call (got ${batchSize}).`,
    );
  }
  const pricing = resolveModelPricing(options.pricing, options.defaultPrice, NAME);
  const logger = resolveLogger(options.logger);
  const oneRate = defaultMetersProblem(options.meters, pricing.table);
  if (oneRate) warnOnce(logger, `${NAME}: ${oneRate}`);
  return {
    store: resolveStore(options, NAME),
    dodo: requireOption(options.dodo, 'dodo', NAME, 'a DodoPayments client, to send usage events'),
    pricing,
    meters: resolveMeters(options, pricing, NAME),
    abandonedResponseTimeoutMs: positiveInteger(
      options.abandonedResponseTimeoutMs,
      'abandonedResponseTimeoutMs',
      NAME,
      60_000,
    ),
    costHeaders: options.costHeaders ?? true,
    alerts:
      options.alerts === undefined
        ? undefined
        : new BalanceAlerts(options.alerts, resolveLogger(options.logger)),
    flushIntervalMs: positiveInteger(options.flushIntervalMs, 'flushIntervalMs', NAME, 1_000),
    batchSize,
    ingestTimeoutMs: positiveInteger(options.ingestTimeoutMs, 'ingestTimeoutMs', NAME, 10_000),
    maxBackoffMs: positiveInteger(options.maxBackoffMs, 'maxBackoffMs', NAME, 60_000),
    leaseMs: positiveInteger(options.leaseMs, 'leaseMs', NAME, 60_000),
    usageRetentionMs: positiveInteger(
      options.usageRetentionMs,
      'usageRetentionMs',
      NAME,
      62 * 24 * 60 * 60_000,
    ),
    spendRetentionMs: positiveInteger(options.spendRetentionMs, 'spendRetentionMs', NAME, SPEND_RETENTION_MS),
    onDeadLetter:
      options.onDeadLetter === undefined
        ? undefined
        : requireFunction(
            options.onDeadLetter,
            'onDeadLetter',
            NAME,
            'a function called with each dead-lettered event',
          ),
    logger: resolveLogger(options.logger),
    metrics: resolveObserver(options, resolveLogger(options.logger), NAME),
  };
}
