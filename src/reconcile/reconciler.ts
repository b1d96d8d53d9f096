import type DodoPayments from 'dodopayments';
import { LRUCache } from 'lru-cache';
import { spendableBalance } from '../dodo-balance.js';
import { httpStatusOf, withDeadline } from '../dodo-call.js';
import { isUsageDeduction } from '../dodo-webhooks/effects/credits.js';
import { formatUsd, type Money, parseCredits } from '../money.js';
import type { BalanceSyncResult } from '../store/types.js';
import { BudgetAbortedError, CallBudget } from './call-budget.js';
import type { ResolvedReconcileOptions } from './options.js';

type LedgerEntry = DodoPayments.CreditEntitlements.CreditLedgerEntry;

/** Entries per ledger page: Dodo's maximum. */
const PAGE_SIZE = 100;
/**
 * The ledger is reread from this long before the last complete read: an entry Dodo writes with a
 * timestamp a little in the past (clock skew, a slow worker) is still seen. Replaying an entry
 * is harmless: its deduction is confirmed once per entry id, and its balance applies only if newer.
 */
const LEDGER_OVERLAP_MS = 5 * 60_000;
/** Customers whose last check the job remembers (least recently checked are forgotten first). */
const MAX_REMEMBERED = 100_000;

/** A correction the job made: what the view said, what Dodo says, and the difference. */
export interface ReconcileCorrection {
  customerId: string;
  /** The local balance view just before the correction (exact decimal USD). */
  localBalance: string;
  /** Dodo's balance (minus overage) the view was corrected to, before pending usage. */
  dodoBalance: string;
  /** Usage settled here that Dodo has not deducted yet, after the check. */
  pending: string;
  /** The view after the correction: `dodoBalance − pending` when nothing settled meanwhile. */
  correctedBalance: string;
  /** What the correction moved the view by (negative: the view was too high). */
  drift: string;
}

/** What one round did. */
export interface ReconcileReport {
  /** Customers compared with Dodo. */
  checked: number;
  /** Of which, views corrected (drift that pending usage does not explain). */
  corrections: ReconcileCorrection[];
  /** Checks that failed (Dodo or the store unavailable, no balance on Dodo); retried next round. */
  failed: number;
  /** Dodo calls made. */
  dodoCalls: number;
}

interface Remembered {
  /** When the customer was last checked (ms, the store's clock). */
  checkedAt: number;
  /** Everything in the ledger before this time has been read (ms). */
  ledgerReadTo: number;
}

/** A check that could not be completed; the customer is checked again next round. */
class CheckFailed extends Error {}

/**
 * Heals drift between the local balance views and Dodo's ledger, in the background (see
 * docs/reconciliation.md). It changes a view only through the store's atomic operations and the
 * same watermarks the webhooks and balance fetches use, so a settlement running at the same time
 * is neither lost nor counted twice, and several processes running it do harmless duplicate work.
 */
export class Reconciler {
  private readonly budget: CallBudget;
  private readonly remembered = new LRUCache<string, Remembered>({ max: MAX_REMEMBERED });
  private readonly stopped = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  /** The background round (or `run()` without ids), joined rather than doubled. */
  private round: Promise<ReconcileReport> | undefined;
  /** Every round running, awaited by `close()`. */
  private readonly running = new Set<Promise<ReconcileReport>>();

  constructor(private readonly options: ResolvedReconcileOptions) {
    this.budget = new CallBudget(options.maxDodoCallsPerMinute);
  }

  /** Starts the rounds, every `intervalMs` (the timer does not keep the process alive). */
  start(): void {
    if (this.timer || this.stopped.signal.aborted) return;
    const schedule = () => {
      this.timer = setTimeout(async () => {
        await this.run().catch(() => undefined);
        if (!this.stopped.signal.aborted) schedule();
      }, this.options.intervalMs);
      this.timer.unref?.();
    };
    schedule();
  }

  /**
   * One round now: the recently active customers (or `customerIds`), least recently checked
   * first. A round already running is joined, not doubled. Never rejects for Dodo's sake: a failed
   * check is counted and retried next round.
   */
  run(customerIds?: readonly string[]): Promise<ReconcileReport> {
    if (customerIds === undefined && this.round) return this.round;
    const round = this.reconcile(customerIds).finally(() => {
      this.running.delete(round);
      if (this.round === round) this.round = undefined;
    });
    this.running.add(round);
    if (customerIds === undefined) this.round = round;
    return round;
  }

  /** Stops the job: no new round or Dodo call starts; resolves once the running rounds end. */
  async close(): Promise<void> {
    this.stopped.abort();
    clearTimeout(this.timer);
    await Promise.allSettled([...this.running]);
  }

  private async reconcile(customerIds: readonly string[] | undefined): Promise<ReconcileReport> {
    const { logger } = this.options;
    const report: ReconcileReport = { checked: 0, corrections: [], failed: 0, dodoCalls: 0 };
    const candidates = customerIds ?? (await this.recentCustomers());
    let firstFailure: unknown;
    for (const customerId of candidates) {
      if (this.stopped.signal.aborted) break;
      try {
        const correction = await this.check(customerId, report);
        report.checked += 1;
        if (correction) report.corrections.push(correction);
      } catch (error) {
        if (error instanceof BudgetAbortedError) break;
        report.failed += 1;
        firstFailure ??= error;
      }
    }
    if (report.failed > 0) {
      logger.warn(
        `reconciliation: ${report.failed} of ${candidates.length} balance checks failed and will be retried next round: ${(firstFailure as Error)?.message}`,
        { failed: report.failed },
      );
    }
    return report;
  }

  /** The customers settled within `activeWithinMs`, least recently checked first. */
  private async recentCustomers(): Promise<string[]> {
    const { store, activeWithinMs, maxCustomersPerRound, logger } = this.options;
    try {
      const recent = await store.recentCustomers(store.now() - activeWithinMs, maxCustomersPerRound);
      // Least recently checked first, so a budget too small for one round still covers everyone.
      const checkedAt = (customerId: string) => this.remembered.get(customerId)?.checkedAt ?? 0;
      return recent.map(({ customerId }) => customerId).sort((a, b) => checkedAt(a) - checkedAt(b));
    } catch (error) {
      logger.warn(
        `reconciliation: the recently active customers could not be read: ${(error as Error).message}`,
      );
      throw error;
    }
  }

  /** Compares one customer's view with Dodo and corrects it; returns the correction, if any. */
  private async check(customerId: string, report: ReconcileReport): Promise<ReconcileCorrection | undefined> {
    const { store, retentionMs, activeWithinMs, perCredit } = this.options;
    const remembered = this.remembered.get(customerId);
    // Dodo's balance is stamped when the call starts: it reflects at least everything before.
    const observedAt = store.now();
    const dodoBalance = await this.balance(customerId, report);
    // Read after the balance, the ledger holds every deduction the balance reflects.
    const ledgerFrom = (remembered?.ledgerReadTo ?? observedAt - activeWithinMs) - LEDGER_OVERLAP_MS;
    const { entries, complete } = await this.deductions(customerId, ledgerFrom, report);

    const drift = new Drift();
    for (const entry of entries) {
      // A deduction of metered usage whose webhook was lost (or has not arrived yet) confirms the
      // usage it took, exactly as the webhook would: once per ledger entry id, whoever comes first.
      if (isUsageDeduction(entry.reference_type)) {
        const amount = parseCredits(String(entry.amount), perCredit);
        await store.confirmDeducted(customerId, entry.id, amount < 0n ? -amount : amount, retentionMs);
      }
      // Its balance is an observation at its own time, applied only if newer than the view's.
      const after =
        parseCredits(String(entry.balance_after), perCredit) -
        parseCredits(String(entry.overage_after ?? '0'), perCredit);
      drift.add(await store.syncBalance(customerId, after, Date.parse(entry.created_at)), after);
    }
    const synced = await store.syncBalance(customerId, dodoBalance, observedAt);
    drift.add(synced, dodoBalance);

    this.remembered.set(customerId, {
      checkedAt: store.now(),
      ledgerReadTo: complete ? observedAt : (remembered?.ledgerReadTo ?? ledgerFrom + LEDGER_OVERLAP_MS),
    });
    this.options.metrics?.reconciled(drift.total);
    if (drift.total === 0n || drift.localBalance === undefined) return undefined;
    const view = (await store.getBalance(customerId)) ?? synced.view;
    const correction: ReconcileCorrection = {
      customerId,
      localBalance: formatUsd(drift.localBalance),
      dodoBalance: formatUsd(drift.dodoBalance!),
      pending: formatUsd(view.pending),
      correctedBalance: formatUsd(view.balance),
      drift: formatUsd(drift.total),
    };
    this.options.logger.warn(
      `reconciliation: the balance view of customer ${JSON.stringify(customerId)} was ${correction.localBalance} USD; Dodo's balance is ${correction.dodoBalance} USD with ${correction.pending} USD of usage pending: corrected by ${correction.drift} USD to ${correction.correctedBalance} USD.`,
      { ...correction },
    );
    return correction;
  }

  /** Dodo's balance minus overage (what the view tracks), under the call budget. */
  private async balance(customerId: string, report: ReconcileReport): Promise<Money> {
    const { dodo, creditEntitlementId, perCredit } = this.options;
    try {
      const answer = await this.call(report, 'creditEntitlements.balances.retrieve', (options) =>
        dodo.creditEntitlements.balances.retrieve(
          customerId,
          { credit_entitlement_id: creditEntitlementId },
          options,
        ),
      );
      return spendableBalance(answer, perCredit);
    } catch (error) {
      if (error instanceof BudgetAbortedError) throw error;
      // 404 is "no balance" or "no such entitlement": not told apart here, so nothing is changed.
      const status = httpStatusOf(error);
      throw new CheckFailed(
        status === 404
          ? `Dodo has no balance of entitlement ${creditEntitlementId} for customer ${JSON.stringify(customerId)}`
          : `Dodo's balance of customer ${JSON.stringify(customerId)} could not be read: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /**
   * The `credit_deducted` entries created since `from`, oldest first, reading at most
   * `maxLedgerPages` pages; `complete` when nothing was left unread.
   */
  private async deductions(
    customerId: string,
    from: number,
    report: ReconcileReport,
  ): Promise<{ entries: LedgerEntry[]; complete: boolean }> {
    const { dodo, creditEntitlementId, maxLedgerPages } = this.options;
    const entries: LedgerEntry[] = [];
    for (let page = 0; page < maxLedgerPages; page += 1) {
      let items: LedgerEntry[];
      try {
        const answer = await this.call(report, 'creditEntitlements.balances.listLedger', (options) =>
          dodo.creditEntitlements.balances.listLedger(
            customerId,
            {
              credit_entitlement_id: creditEntitlementId,
              start_date: new Date(Math.max(0, from)).toISOString(),
              transaction_type: 'credit_deducted',
              page_size: PAGE_SIZE,
              page_number: page,
            },
            options,
          ),
        );
        items = answer.items;
      } catch (error) {
        if (error instanceof BudgetAbortedError) throw error;
        throw new CheckFailed(
          `Dodo's ledger of customer ${JSON.stringify(customerId)} could not be read: ${(error as Error).message}`,
          { cause: error },
        );
      }
      entries.push(...items.filter((entry) => entry.transaction_type === 'credit_deducted'));
      if (items.length < PAGE_SIZE) {
        return { entries: sortByTime(entries), complete: true };
      }
    }
    return { entries: sortByTime(entries), complete: false };
  }

  /** One Dodo call: a slot of the budget first, then the call under its own deadline. */
  private async call<T>(
    report: ReconcileReport,
    operation: string,
    call: (options: { timeout: number; maxRetries: 0; signal: AbortSignal }) => Promise<T>,
  ): Promise<T> {
    const { dodoTimeoutMs, metrics } = this.options;
    await this.budget.take(this.stopped.signal);
    report.dodoCalls += 1;
    return withDeadline(
      dodoTimeoutMs,
      () => new Error(`Dodo did not answer ${operation} within ${dodoTimeoutMs} ms`),
      call,
      { operation, observer: metrics },
    );
  }
}

function sortByTime(entries: LedgerEntry[]): LedgerEntry[] {
  return entries
    .map((entry) => ({ entry, at: Date.parse(entry.created_at) }))
    .filter(({ at }) => Number.isFinite(at))
    .sort((a, b) => a.at - b.at)
    .map(({ entry }) => entry);
}

/**
 * The corrections of one check, added up: each is measured by the store inside the atomic step
 * that applied it (`previousBalance`), so a settlement between two steps never reads as drift.
 */
class Drift {
  total = 0n;
  /** The view before the first correction. */
  localBalance: Money | undefined;
  /** The Dodo balance of the last correction. */
  dodoBalance: Money | undefined;

  add(result: BalanceSyncResult, dodoBalance: Money): void {
    if (!result.applied || result.previousBalance === undefined) return;
    const moved = result.view.balance - result.previousBalance;
    if (moved === 0n) return;
    this.localBalance ??= result.previousBalance;
    this.dodoBalance = dodoBalance;
    this.total += moved;
  }
}
