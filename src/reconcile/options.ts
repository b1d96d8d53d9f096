import type DodoPayments from 'dodopayments';
import type { Logger } from '../logger.js';
import type { BillingObserver } from '../metrics/observer.js';
import type { Money } from '../money.js';
import {
  positiveInteger,
  requireOption,
  resolveLogger,
  resolveStore,
  resolveUnitsPerCredit,
  type SharedOptions,
} from '../options.js';
import type { BillingStore } from '../store/types.js';

const NAME = 'reconcile';

/**
 * The reconciliation job (`createBilling({ reconcile: {…} })`): every `intervalMs`, the customers
 * whose usage was settled within `activeWithinMs` are checked against Dodo's balance and ledger,
 * and drift that pending usage does not explain is corrected and reported
 * (docs/reconciliation.md). Each check costs two Dodo calls (the balance, one ledger page).
 * @example reconcile: { intervalMs: 60_000, maxDodoCallsPerMinute: 60 }
 */
export interface ReconcileOptions {
  /** How often a round starts, in ms (a round still running is not overlapped). @default 60_000 */
  intervalMs?: number;
  /**
   * Dodo calls the job makes per minute at most, in any sliding minute; past it the round waits.
   * A check costs 2 (more when the ledger since the last check spans several pages).
   * @default 60
   */
  maxDodoCallsPerMinute?: number;
  /** Customers whose usage was settled within this window (ms) are checked. @default 3_600_000 */
  activeWithinMs?: number;
  /** Customers checked per round at most (least recently checked first). @default 1_000 */
  maxCustomersPerRound?: number;
  /** Deadline of each Dodo call, in ms. @default 5_000 */
  dodoTimeoutMs?: number;
  /** Ledger pages (100 entries each) read per check at most. @default 5 */
  maxLedgerPages?: number;
  /**
   * How long a deduction confirmed from the ledger is remembered (ms), so its webhook arriving
   * later cannot confirm it again; the same as `dodoWebhooks`' `retentionMs`. @default 7 days
   */
  retentionMs?: number;
}

export interface ResolvedReconcileOptions {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  perCredit: Money;
  logger: Logger;
  metrics: Required<BillingObserver> | undefined;
  intervalMs: number;
  maxDodoCallsPerMinute: number;
  activeWithinMs: number;
  maxCustomersPerRound: number;
  dodoTimeoutMs: number;
  maxLedgerPages: number;
  retentionMs: number;
}

/** Checks the job's options at startup; a missing `dodo` or `creditEntitlementId` names the fix. */
export function resolveReconcileOptions(
  shared: Readonly<SharedOptions>,
  options: Readonly<ReconcileOptions>,
  metrics: Required<BillingObserver> | undefined,
): ResolvedReconcileOptions {
  return {
    store: resolveStore(shared, NAME),
    dodo: requireOption(
      shared.dodo,
      'dodo',
      NAME,
      "a DodoPayments client, to read Dodo's balances and ledger",
    ),
    creditEntitlementId: requireOption(
      shared.creditEntitlementId,
      'creditEntitlementId',
      NAME,
      'the id of the fiat credit entitlement whose balances are reconciled (cde_…)',
    ),
    perCredit: resolveUnitsPerCredit(shared.creditsPerDollar),
    logger: resolveLogger(shared.logger),
    metrics,
    intervalMs: positiveInteger(options.intervalMs, 'reconcile.intervalMs', NAME, 60_000),
    maxDodoCallsPerMinute: positiveInteger(
      options.maxDodoCallsPerMinute,
      'reconcile.maxDodoCallsPerMinute',
      NAME,
      60,
    ),
    activeWithinMs: positiveInteger(options.activeWithinMs, 'reconcile.activeWithinMs', NAME, 3_600_000),
    maxCustomersPerRound: positiveInteger(
      options.maxCustomersPerRound,
      'reconcile.maxCustomersPerRound',
      NAME,
      1_000,
    ),
    dodoTimeoutMs: positiveInteger(options.dodoTimeoutMs, 'reconcile.dodoTimeoutMs', NAME, 5_000),
    maxLedgerPages: positiveInteger(options.maxLedgerPages, 'reconcile.maxLedgerPages', NAME, 5),
    retentionMs: positiveInteger(options.retentionMs, 'reconcile.retentionMs', NAME, 7 * 24 * 60 * 60_000),
  };
}
