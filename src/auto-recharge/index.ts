import { randomUUID } from 'node:crypto';
import type DodoPayments from 'dodopayments';
import { LRUCache } from 'lru-cache';
import { httpStatusOf } from '../dodo-call.js';
import type { Logger } from '../logger.js';
import type { BillingObserver } from '../metrics/observer.js';
import { formatUsd, type Money, parseCredits, parseUsd } from '../money.js';
import { budgetPeriods } from '../store/budget-period.js';
import type { BillingStore, RechargeFinish } from '../store/types.js';
import { AMOUNT_KEY, ATTEMPT_KEY, RechargeDodo, type RechargePayment } from './dodo.js';
import type { RechargeCallbacks, RechargeReport, ResolvedAutoRechargeOptions } from './options.js';

/** What this process knows of a customer's auto-recharge, between store reads. */
interface Known {
  /** Undefined: off or disabled. */
  threshold: Money | undefined;
  /** Until when it is trusted (ms). */
  until: number;
  /** No store call before this (another process's attempt in flight, the month's limit reached). */
  quietUntil: number;
}

/** Payment statuses that end a charge, and what they mean for the recharge. */
const OUTCOMES: Readonly<Record<string, RechargeFinish['outcome']>> = {
  succeeded: 'succeeded',
  failed: 'failed',
  cancelled: 'failed',
  requires_customer_action: 'requires_action',
  requires_payment_method: 'requires_action',
  requires_confirmation: 'requires_action',
  requires_merchant_action: 'requires_action',
};

export interface AutoRechargerDeps {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  perCredit: Money;
  logger: Logger;
  /** Told each recharge's outcome, when `metrics` is set. */
  metrics?: Required<BillingObserver> | undefined;
}

/**
 * Recharges customers whose available balance falls below their threshold, off the request
 * path: admissions and settlements report the balance they leave (`watch`, never awaited),
 * the store lets one attempt per customer start across every process (a lease, the monthly
 * limit counted in the same step), and the attempt charges the customer's on-demand mandate on
 * Dodo, then grants the credits through the ledger once the payment succeeded. The outcome is
 * finished once — by this process reading the payment, or by the `payment.*` webhook in any
 * process — and reported to the app's callbacks by whichever finished it.
 */
export class AutoRecharger {
  private readonly known = new LRUCache<string, Known>({ max: 10_000 });
  /** Customers this process is reading or recharging: at most one task each. */
  private readonly busy = new Set<string>();
  private readonly tasks = new Set<Promise<void>>();
  private readonly calls: RechargeDodo;

  constructor(
    private readonly deps: AutoRechargerDeps,
    readonly config: ResolvedAutoRechargeOptions,
  ) {
    this.calls = new RechargeDodo(
      deps.dodo,
      deps.creditEntitlementId,
      deps.perCredit,
      config.usagePlanProductId,
      config.dodoTimeoutMs,
    );
  }

  /**
   * A request was admitted or settled, leaving the customer `available` (balance − holds).
   * Returns at once: whatever follows runs in the background, and never fails a request.
   */
  watch(customerId: string, available: Money | undefined): void {
    if (available === undefined || this.busy.has(customerId)) return;
    const now = Date.now();
    const known = this.known.get(customerId);
    if (known && known.until > now) {
      if (known.threshold === undefined || available >= known.threshold || known.quietUntil > now) return;
    }
    this.busy.add(customerId);
    const task = this.consider(customerId, available, known && known.until > now ? known : undefined)
      .catch((error: unknown) =>
        this.deps.logger.error('auto-recharge failed to run: it is tried again on a later request', {
          customerId,
          error,
        }),
      )
      .finally(() => {
        this.busy.delete(customerId);
        this.tasks.delete(task);
      });
    this.tasks.add(task);
  }

  /** Forgets what this process cached of a customer (their settings changed). */
  forget(customerId: string): void {
    this.known.delete(customerId);
  }

  /** Resolves once every recharge this process started has done what it can. */
  async idle(): Promise<void> {
    while (this.tasks.size > 0) await Promise.allSettled([...this.tasks]);
  }

  private async consider(customerId: string, available: Money, known: Known | undefined): Promise<void> {
    const { store } = this.deps;
    const month = budgetPeriods(store.now()).month;
    const now = Date.now();
    let threshold = known?.threshold;
    if (!known) {
      const state = await store.getAutoRecharge(customerId, month);
      threshold = state && !state.disabled ? state.threshold : undefined;
      this.remember(customerId, threshold);
    }
    if (threshold === undefined || available >= threshold) return;
    const begun = await store.beginRecharge(customerId, {
      attemptId: randomUUID(),
      available,
      month,
      leaseMs: this.config.leaseMs,
    });
    switch (begun.status) {
      case 'started':
        return this.charge(customerId, begun.attemptId, begun.amount);
      case 'resume':
        return this.resume(customerId, begun.attemptId, begun.amount);
      case 'in_flight':
      case 'cooling':
        // Another attempt is running, or just succeeded: its credits are arriving.
        this.quiet(customerId, now + 1_000);
        return;
      case 'monthly_limit':
        this.quiet(customerId, now + 60_000);
        if (begun.first) {
          const amount = (await store.getAutoRecharge(customerId, month))?.amount ?? 0n;
          this.deps.metrics?.recharge('monthly_limit', amount);
          this.report('monthlyLimit', {
            customerId,
            recharged: formatUsd(begun.recharged),
            monthlyLimit: formatUsd(begun.monthlyLimit),
            amount: formatUsd(amount),
          });
        }
        return;
      case 'off':
      case 'disabled':
        this.remember(customerId, undefined);
        return;
      case 'above_threshold':
        this.forget(customerId);
        return;
    }
  }

  private remember(customerId: string, threshold: Money | undefined): void {
    this.known.set(customerId, { threshold, until: Date.now() + this.config.settingsCacheMs, quietUntil: 0 });
  }

  private quiet(customerId: string, until: number): void {
    const known = this.known.get(customerId);
    if (known) known.quietUntil = until;
  }

  /** A new attempt: charge the customer's mandate, then follow the payment. */
  private async charge(customerId: string, attemptId: string, amount: Money): Promise<void> {
    const mandate = await this.calls.mandate(customerId).catch((error: unknown) => error as Error);
    if (mandate instanceof Error) {
      // Nothing was charged yet, and nothing is known about the mandate: not the customer's failure.
      this.deps.logger.warn('auto-recharge could not find the API account: retried after the lease', {
        customerId,
        error: mandate,
      });
      return;
    }
    if ('missing' in mandate) {
      await this.finish(customerId, attemptId, amount, 'failed', { reason: mandate.missing });
      return;
    }
    let paymentId: string;
    try {
      paymentId = await this.calls.charge(mandate.subscriptionId, attemptId, amount);
    } catch (error) {
      const status = httpStatusOf(error);
      if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) {
        // Dodo refused the charge: nothing was charged.
        await this.finish(customerId, attemptId, amount, 'failed', { reason: (error as Error).message });
        return;
      }
      // Unanswered (deadline, 5xx, connection): Dodo may have taken it. The lease stays; once it
      // lapses the attempt is looked up on Dodo by its id, never charged again blindly.
      this.deps.logger.warn('auto-recharge charge unanswered: its outcome is looked up after the lease', {
        customerId,
        attemptId,
        error,
      });
      return;
    }
    await this.follow(customerId, attemptId, amount, paymentId);
  }

  /** An attempt whose lease lapsed unfinished: its charge, if Dodo has it, decides. */
  private async resume(customerId: string, attemptId: string, amount: Money): Promise<void> {
    const payment = await this.calls.findAttempt(customerId, attemptId);
    if (!payment) return this.charge(customerId, attemptId, amount);
    await this.settle(payment);
  }

  /** Reads the payment until it ends, or leaves it to its webhook after `confirmWithinMs`. */
  private async follow(
    customerId: string,
    attemptId: string,
    amount: Money,
    paymentId: string,
  ): Promise<void> {
    const deadline = Date.now() + this.config.confirmWithinMs;
    let pause = 200;
    for (;;) {
      const payment = await this.calls.retrieve(paymentId).catch((error: unknown) => {
        this.deps.logger.warn('auto-recharge could not read its payment', { customerId, paymentId, error });
        return undefined;
      });
      if (payment && OUTCOMES[payment.status ?? ''] !== undefined) {
        await this.settle(payment, { attemptId, amount });
        return;
      }
      if (Date.now() + pause > deadline) return;
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 2_000);
    }
  }

  /**
   * A recharge payment's outcome, from the API or a `payment.*` webhook: a success grants the
   * credits (once per attempt, whoever gets here first) and the view takes the ledger's balance;
   * then the attempt is finished once and reported. Throws when Dodo or the store fails, so a
   * webhook is retried.
   */
  async settle(payment: RechargePayment, expected?: { attemptId: string; amount: Money }): Promise<void> {
    const attemptId = payment.metadata?.[ATTEMPT_KEY];
    if (typeof attemptId !== 'string' || attemptId === '') return;
    const outcome = OUTCOMES[payment.status ?? ''];
    if (!outcome) return;
    const customerId = payment.customer.customer_id;
    const amount = expected?.amount ?? amountOf(payment.metadata?.[AMOUNT_KEY]);
    if (amount === undefined || amount <= 0n) {
      this.deps.logger.error('a recharge payment without its amount: no credits granted', {
        customerId,
        paymentId: payment.payment_id,
      });
      return;
    }
    if (outcome === 'succeeded') await this.grant(customerId, attemptId, amount, payment.payment_id);
    const reason =
      outcome === 'succeeded' ? undefined : (payment.error_message ?? payment.status ?? undefined);
    await this.finish(customerId, attemptId, amount, outcome, {
      paymentId: payment.payment_id,
      ...(reason ? { reason } : {}),
    });
  }

  private async grant(
    customerId: string,
    attemptId: string,
    amount: Money,
    paymentId: string,
  ): Promise<void> {
    const { store, perCredit } = this.deps;
    try {
      const entry = await this.calls.grant(customerId, attemptId, amount, paymentId);
      // The ledger's balance after the grant, as the `credit.added` webhook will report it: the
      // view rises now, so the next request does not see the old balance and recharge again.
      const balance =
        parseCredits(entry.balance_after, perCredit) - parseCredits(entry.overage_after, perCredit);
      const created = Date.parse(entry.created_at);
      const observedAt = Number.isFinite(created) ? created : store.now();
      // The same top-up the `credit.added` webhook records (same entry id and time): recorded
      // twice, it is the same last top-up.
      await store.recordTopUp(customerId, { topUpId: entry.id, amount, at: observedAt });
      await store.syncBalance(customerId, balance, observedAt);
    } catch (error) {
      if (httpStatusOf(error) !== 409) throw error;
      // Already granted (the other path got here first): the next request rereads the balance.
      await store.markBalanceStale(customerId);
    }
  }

  private async finish(
    customerId: string,
    attemptId: string,
    amount: Money,
    outcome: RechargeFinish['outcome'],
    details: { paymentId?: string; reason?: string },
  ): Promise<void> {
    const finished = await this.deps.store.finishRecharge(customerId, {
      attemptId,
      outcome,
      maxFailures: this.config.maxFailures,
      cooldownMs: this.config.cooldownMs,
    });
    if (outcome === 'succeeded') this.forget(customerId);
    else {
      // Not again from this process before the pause: a declined card stays declined a while.
      const until = Date.now() + this.config.failurePauseMs;
      this.known.set(customerId, { threshold: undefined, until, quietUntil: until });
    }
    if (!finished.applied) return;
    this.deps.metrics?.recharge(outcome, amount);
    const report: RechargeReport = {
      customerId,
      attemptId,
      amount: formatUsd(amount),
      ...details,
      failures: finished.failures,
      disabled: finished.disabled,
    };
    if (outcome !== 'succeeded') {
      this.deps.logger.warn(`auto-recharge ${outcome === 'failed' ? 'failed' : 'needs the customer'}`, {
        ...report,
      });
    }
    this.report(outcome === 'requires_action' ? 'requiresAction' : outcome, report);
  }

  private report<K extends keyof RechargeCallbacks>(
    kind: K,
    report: Parameters<NonNullable<RechargeCallbacks[K]>>[0],
  ): void {
    const callback = this.config.on[kind] as ((value: typeof report) => unknown) | undefined;
    if (!callback) return;
    Promise.resolve()
      .then(() => callback(report))
      .catch((error: unknown) =>
        this.deps.logger.error(`the auto-recharge ${kind} callback failed`, { report, error }),
      );
  }
}

/** The amount a recharge's charge wrote in its metadata, or undefined when unreadable. */
function amountOf(written: unknown): Money | undefined {
  if (typeof written !== 'string') return undefined;
  try {
    return parseUsd(written, AMOUNT_KEY);
  } catch {
    return undefined;
  }
}
