import type { DodoPayments } from 'dodopayments';
import { CREDIT_DECIMALS, type CreditUnits, formatCreditUnits, readCredits } from './amounts.js';
import { badRequest } from './errors.js';
import type { Runtime } from './runtime.js';
import type { WebhookSender } from './webhooks.js';

type TransactionType = DodoPayments.CreditEntitlements.CreditLedgerEntry['transaction_type'];
type GrantSource = DodoPayments.CreditEntitlements.BalanceListGrantsResponse['source_type'];
type CreditEntitlement = DodoPayments.CreditEntitlements.CreditEntitlement;
type Metadata = Record<string, string | number | boolean>;

/** One customer's balance in one credit entitlement. */
export interface BalanceRecord {
  id: string;
  customerId: string;
  entitlementId: string;
  /** Never below zero. */
  balance: CreditUnits;
  /** Usage charged beyond the balance while overage is enabled (its own `overage_charged` entries). */
  overage: CreditUnits;
  createdAt: number;
  updatedAt: number;
  lastTransactionAt: number | undefined;
}

export interface GrantRecord {
  id: string;
  customerId: string;
  entitlementId: string;
  initial: CreditUnits;
  remaining: CreditUnits;
  sourceType: GrantSource;
  sourceId: string | undefined;
  metadata: Metadata;
  createdAt: number;
  updatedAt: number;
}

export interface LedgerRecord {
  id: string;
  customerId: string;
  entitlementId: string;
  isCredit: boolean;
  amount: CreditUnits;
  balanceBefore: CreditUnits;
  balanceAfter: CreditUnits;
  overageBefore: CreditUnits;
  overageAfter: CreditUnits;
  transactionType: TransactionType;
  description: string | undefined;
  grantId: string | undefined;
  referenceId: string | undefined;
  referenceType: string | undefined;
  metadata: Metadata;
  createdAt: number;
}

/** Where an entry comes from, as its `reference_type` / `reference_id` say. */
export interface EntrySource {
  description?: string;
  referenceId?: string;
  referenceType?: string;
  metadata?: Metadata;
}

/** Credits to grant. */
export interface Grant extends EntrySource {
  customerId: string;
  entitlementId: string;
  amount: CreditUnits;
  transactionType: 'credit_added' | 'manual_adjustment';
  /** Where the grant comes from. Default `'api'`. */
  grantSource?: GrantSource;
  grantSourceId?: string;
}

/** Credits to take out of a balance. */
export interface Debit extends EntrySource {
  customerId: string;
  entitlementId: string;
  amount: CreditUnits;
  transactionType: 'credit_deducted' | 'manual_adjustment';
}

/** What a meter's usage did to a balance. */
export interface UsageOutcome {
  /** Taken from the balance (`credit.deducted`). */
  deducted: CreditUnits;
  /** Charged as overage (`credit.overage_charged`), when the entitlement allows overage. */
  overage: CreditUnits;
  /** Usage the balance could not cover and overage could not take: never deducted. */
  unbilled: CreditUnits;
  entryIds: string[];
}

/**
 * Which webhook announces a ledger movement. Dodo documents one `credit.*` event per ledger
 * transaction type, except `refund` (the claw-back of a refunded payment's credits): no webhook
 * is documented for it, so the emulator sends none, and an app must not wait for one.
 * https://docs.dodopayments.com/developer-resources/webhooks/intents/credit
 */
const WEBHOOK_TYPE: Partial<Record<TransactionType, string>> = {
  credit_added: 'credit.added',
  credit_deducted: 'credit.deducted',
  credit_expired: 'credit.expired',
  credit_rolled_over: 'credit.rolled_over',
  rollover_forfeited: 'credit.rollover_forfeited',
  overage_charged: 'credit.overage_charged',
  overage_reset: 'credit.overage_reset',
  auto_top_up: 'credit.added',
  manual_adjustment: 'credit.manual_adjustment',
};

/** A subscription whose product attaches an entitlement with a low-balance threshold. */
export interface LowBalanceWatch {
  subscriptionId: string;
  /** Credits the subscription issues per cycle (per unit × quantity). */
  creditsPerCycle: CreditUnits;
  /** `low_balance_threshold_percent` of the product's attachment. */
  percent: number;
}

/** What the ledger asks the rest of the emulator. */
export interface LedgerContext {
  entitlement(entitlementId: string): CreditEntitlement;
  /** The customer's active subscriptions that watch this entitlement's balance. */
  lowBalanceWatches(customerId: string, entitlementId: string): LowBalanceWatch[];
}

/** How Dodo writes amounts in webhooks: decimal strings (the SDK's types), or JSON numbers. */
export type AmountStyle = 'strings' | 'numbers';

/**
 * Balances, grants and the ledger, under Dodo's documented rules
 * (https://docs.dodopayments.com/features/credit-based-billing):
 * - every amount is a multiple of the entitlement's precision;
 * - a balance never goes below zero: usage beyond it is overage (its own `overage_charged`
 *   entry) when the entitlement allows overage, and is not deducted at all when it does not;
 * - debits consume grants oldest first (FIFO);
 * - each movement is one ledger entry and its `credit.*` webhook.
 */
export class CreditLedger {
  private readonly balances = new Map<string, BalanceRecord>();
  private readonly grants: GrantRecord[] = [];
  private readonly entries: LedgerRecord[] = [];
  private readonly idempotency = new Map<string, string>();

  constructor(
    private readonly runtime: Runtime,
    private readonly webhooks: WebhookSender,
    private readonly context: LedgerContext,
    private readonly amountStyle: AmountStyle,
  ) {}

  balance(customerId: string, entitlementId: string): BalanceRecord | undefined {
    return this.balances.get(key(customerId, entitlementId));
  }

  balancesOf(entitlementId: string): BalanceRecord[] {
    return [...this.balances.values()].filter((record) => record.entitlementId === entitlementId);
  }

  ledger(filter: { customerId?: string; entitlementId?: string } = {}): LedgerRecord[] {
    return this.entries.filter(
      (entry) =>
        (filter.customerId === undefined || entry.customerId === filter.customerId) &&
        (filter.entitlementId === undefined || entry.entitlementId === filter.entitlementId),
    );
  }

  grantsOf(customerId: string, entitlementId: string): GrantRecord[] {
    return this.grants.filter(
      (grant) => grant.customerId === customerId && grant.entitlementId === entitlementId,
    );
  }

  /** One step of the entitlement's precision, in credit units (0.01 credit at precision 2). */
  step(entitlementId: string): CreditUnits {
    return 10n ** BigInt(CREDIT_DECIMALS - this.context.entitlement(entitlementId).precision);
  }

  /** The entry already recorded under this idempotency key, if any. */
  idempotent(customerId: string, entitlementId: string, idempotencyKey: string): LedgerRecord | undefined {
    const id = this.idempotency.get(`${key(customerId, entitlementId)}\u0000${idempotencyKey}`);
    return id === undefined ? undefined : this.entries.find((entry) => entry.id === id);
  }

  /** Grants credits: a grant, an entry, `credit.added` (or `credit.manual_adjustment`). */
  grant(grant: Grant, idempotencyKey?: string): LedgerRecord {
    this.checkAmount(grant.entitlementId, grant.amount);
    const now = this.runtime.now();
    const record = this.balanceFor(grant.customerId, grant.entitlementId, now);
    const before = { balance: record.balance, overage: record.overage };
    // Only the `carry_deficit_auto_repay` preset lets new credits pay what overage owes (the
    // SDK's table of `CbbOverageBehavior`); under the others the overage waits for the reset.
    const repays =
      this.context.entitlement(grant.entitlementId).overage_behavior === 'carry_deficit_auto_repay';
    const repaid = repays ? smaller(grant.amount, record.overage) : 0n;
    record.overage -= repaid;
    record.balance += grant.amount - repaid;
    const created = this.newGrant(grant, now);
    return this.write(record, before, { ...grant, isCredit: true, grantId: created.id }, now, idempotencyKey);
  }

  /**
   * Takes credits out (an API debit or a manual adjustment). Refused with 400 beyond the balance:
   * a balance never goes below zero, and only usage may run into overage.
   */
  debit(debit: Debit, idempotencyKey?: string): LedgerRecord {
    this.checkAmount(debit.entitlementId, debit.amount);
    const now = this.runtime.now();
    const record = this.balanceFor(debit.customerId, debit.entitlementId, now);
    if (debit.amount > record.balance) {
      throw badRequest(
        'INSUFFICIENT_CREDIT_BALANCE',
        `Cannot debit ${formatCreditUnits(debit.amount)} credits: the balance is ${formatCreditUnits(record.balance)}.`,
      );
    }
    const before = { balance: record.balance, overage: record.overage };
    record.balance -= debit.amount;
    this.consumeGrants(debit.customerId, debit.entitlementId, debit.amount, now);
    const entry = this.write(record, before, { ...debit, isCredit: false }, now, idempotencyKey);
    this.checkLow(entry);
    return entry;
  }

  /**
   * Deducts a meter's usage: what the balance covers (`credit.deducted`), then — only when the
   * entitlement allows overage — the rest up to the overage limit (`credit.overage_charged`).
   * With overage disabled Dodo stops at zero: the customer "cannot use the service once their
   * credit balance reaches zero", and nothing beyond is deducted.
   */
  deductUsage(
    usage: { customerId: string; entitlementId: string; amount: CreditUnits } & EntrySource,
  ): UsageOutcome {
    this.checkAmount(usage.entitlementId, usage.amount);
    const entitlement = this.context.entitlement(usage.entitlementId);
    const now = this.runtime.now();
    const record = this.balanceFor(usage.customerId, usage.entitlementId, now);
    const outcome: UsageOutcome = { deducted: 0n, overage: 0n, unbilled: 0n, entryIds: [] };
    const covered = smaller(usage.amount, record.balance);
    if (covered > 0n) {
      outcome.entryIds.push(this.debit({ ...usage, amount: covered, transactionType: 'credit_deducted' }).id);
      outcome.deducted = covered;
    }
    let rest = usage.amount - covered;
    if (rest > 0n && entitlement.overage_enabled) {
      const limit =
        entitlement.overage_limit === null || entitlement.overage_limit === undefined
          ? undefined
          : (readCredits(entitlement.overage_limit) as CreditUnits);
      const room =
        limit === undefined ? rest : smaller(rest, limit > record.overage ? limit - record.overage : 0n);
      if (room > 0n) {
        const before = { balance: record.balance, overage: record.overage };
        record.overage += room;
        const entry = this.write(
          record,
          before,
          { ...usage, amount: room, isCredit: false, transactionType: 'overage_charged' },
          now,
        );
        outcome.entryIds.push(entry.id);
        outcome.overage = room;
        rest -= room;
      }
    }
    outcome.unbilled = rest;
    return outcome;
  }

  /**
   * Takes a refunded payment's credits back, as far as the balance holds them (never below zero):
   * one `refund` entry, for which Dodo documents no webhook.
   */
  clawBack(refund: { customerId: string; entitlementId: string; amount: CreditUnits } & EntrySource): void {
    const now = this.runtime.now();
    const record = this.balanceFor(refund.customerId, refund.entitlementId, now);
    const step = this.step(refund.entitlementId);
    const amount = smaller(refund.amount - (refund.amount % step), record.balance);
    if (amount <= 0n) return;
    const before = { balance: record.balance, overage: record.overage };
    record.balance -= amount;
    this.consumeGrants(refund.customerId, refund.entitlementId, amount, now);
    this.write(record, before, { ...refund, amount, isCredit: false, transactionType: 'refund' }, now);
  }

  /** Moves a balance to exactly `target` with one manual adjustment (none when already there). */
  setBalance(customerId: string, entitlementId: string, target: CreditUnits): LedgerRecord | undefined {
    const now = this.runtime.now();
    const record = this.balanceFor(customerId, entitlementId, now);
    const difference = target - record.balance;
    if (difference === 0n) return undefined;
    const source = {
      customerId,
      entitlementId,
      transactionType: 'manual_adjustment' as const,
      description: 'Balance set by the emulator admin API',
      referenceType: 'admin',
    };
    return difference > 0n
      ? this.grant({ ...source, amount: difference })
      : this.debit({ ...source, amount: -difference });
  }

  /** Refuses an amount that is not positive or is finer than the entitlement's precision. */
  private checkAmount(entitlementId: string, amount: CreditUnits): void {
    if (amount <= 0n) throw new RangeError('A ledger movement must be a positive amount.');
    const { precision } = this.context.entitlement(entitlementId);
    if (amount % this.step(entitlementId) !== 0n) {
      throw new RangeError(
        `${formatCreditUnits(amount)} credits is finer than the entitlement's precision (${precision} decimals).`,
      );
    }
  }

  private write(
    record: BalanceRecord,
    before: { balance: CreditUnits; overage: CreditUnits },
    movement: EntrySource & {
      amount: CreditUnits;
      isCredit: boolean;
      transactionType: TransactionType;
      grantId?: string;
    },
    now: number,
    idempotencyKey?: string,
  ): LedgerRecord {
    record.updatedAt = now;
    record.lastTransactionAt = now;
    const entry: LedgerRecord = {
      id: this.runtime.id('cle'),
      customerId: record.customerId,
      entitlementId: record.entitlementId,
      isCredit: movement.isCredit,
      amount: movement.amount,
      balanceBefore: before.balance,
      balanceAfter: record.balance,
      overageBefore: before.overage,
      overageAfter: record.overage,
      transactionType: movement.transactionType,
      description: movement.description,
      grantId: movement.grantId,
      referenceId: movement.referenceId,
      referenceType: movement.referenceType,
      metadata: movement.metadata ?? {},
      createdAt: now,
    };
    this.entries.push(entry);
    if (idempotencyKey !== undefined) {
      this.idempotency.set(
        `${key(record.customerId, record.entitlementId)}\u0000${idempotencyKey}`,
        entry.id,
      );
    }
    const type = WEBHOOK_TYPE[entry.transactionType];
    if (type) this.webhooks.emit(type, { payload_type: 'CreditLedgerEntry', ...this.webhookView(entry) });
    return entry;
  }

  private balanceFor(customerId: string, entitlementId: string, now: number): BalanceRecord {
    const id = key(customerId, entitlementId);
    let record = this.balances.get(id);
    if (!record) {
      record = {
        id: this.runtime.id('ccb'),
        customerId,
        entitlementId,
        balance: 0n,
        overage: 0n,
        createdAt: now,
        updatedAt: now,
        lastTransactionAt: undefined,
      };
      this.balances.set(id, record);
    }
    return record;
  }

  private newGrant(grant: Grant, now: number): GrantRecord {
    const record: GrantRecord = {
      id: this.runtime.id('cgr'),
      customerId: grant.customerId,
      entitlementId: grant.entitlementId,
      initial: grant.amount,
      remaining: grant.amount,
      sourceType: grant.grantSource ?? 'api',
      sourceId: grant.grantSourceId,
      metadata: grant.metadata ?? {},
      createdAt: now,
      updatedAt: now,
    };
    this.grants.push(record);
    return record;
  }

  /** Debits consume grants oldest first (FIFO), as Dodo documents. */
  private consumeGrants(customerId: string, entitlementId: string, amount: CreditUnits, now: number): void {
    let left = amount;
    for (const grant of this.grantsOf(customerId, entitlementId)) {
      if (left === 0n) break;
      const take = smaller(grant.remaining, left);
      if (take === 0n) continue;
      grant.remaining -= take;
      grant.updatedAt = now;
      left -= take;
    }
  }

  /**
   * `credit.balance_low`: Dodo's threshold belongs to a subscription's credit attachment
   * (`low_balance_threshold_percent` of the credits it issues per cycle), so it fires only for
   * customers with such a subscription, once per crossing from at-or-above to below.
   */
  private checkLow(entry: LedgerRecord): void {
    for (const watch of this.context.lowBalanceWatches(entry.customerId, entry.entitlementId)) {
      const threshold = (watch.creditsPerCycle * BigInt(watch.percent)) / 100n;
      if (!(entry.balanceBefore >= threshold && entry.balanceAfter < threshold)) continue;
      this.webhooks.emit('credit.balance_low', {
        payload_type: 'CreditBalanceLow',
        available_balance: formatCreditUnits(entry.balanceAfter),
        brand_id: this.runtime.brandId,
        credit_entitlement_id: entry.entitlementId,
        credit_entitlement_name: this.context.entitlement(entry.entitlementId).name,
        customer_id: entry.customerId,
        subscription_credits_amount: formatCreditUnits(watch.creditsPerCycle),
        subscription_id: watch.subscriptionId,
        threshold_amount: formatCreditUnits(threshold),
        threshold_percent: watch.percent,
      } satisfies DodoPayments.CreditBalanceLowWebhookEvent['data'] & { payload_type: string });
    }
  }

  /** An entry as the API returns it. */
  view(entry: LedgerRecord): DodoPayments.CreditEntitlements.CreditLedgerEntry {
    return {
      id: entry.id,
      amount: formatCreditUnits(entry.amount),
      balance_after: formatCreditUnits(entry.balanceAfter),
      balance_before: formatCreditUnits(entry.balanceBefore),
      brand_id: this.runtime.brandId,
      business_id: this.runtime.businessId,
      created_at: this.runtime.iso(entry.createdAt),
      credit_entitlement_id: entry.entitlementId,
      customer_id: entry.customerId,
      is_credit: entry.isCredit,
      metadata: entry.metadata,
      overage_after: formatCreditUnits(entry.overageAfter),
      overage_before: formatCreditUnits(entry.overageBefore),
      transaction_type: entry.transactionType,
      description: entry.description ?? null,
      grant_id: entry.grantId ?? null,
      reference_id: entry.referenceId ?? null,
      reference_type: entry.referenceType ?? null,
    };
  }

  /**
   * An entry as a webhook carries it. With `amountStyle: 'numbers'` its amounts are JSON numbers,
   * as Dodo has been seen sending them despite the SDK's string types.
   */
  private webhookView(entry: LedgerRecord): Record<string, unknown> {
    const view: Record<string, unknown> = { ...this.view(entry) };
    if (this.amountStyle === 'numbers') {
      for (const field of ['amount', 'balance_after', 'balance_before', 'overage_after', 'overage_before']) {
        view[field] = Number(view[field]);
      }
    }
    return view;
  }

  balanceView(record: BalanceRecord): DodoPayments.CreditEntitlements.CustomerCreditBalance {
    return {
      id: record.id,
      balance: formatCreditUnits(record.balance),
      created_at: this.runtime.iso(record.createdAt),
      credit_entitlement_id: record.entitlementId,
      customer_id: record.customerId,
      overage: formatCreditUnits(record.overage),
      updated_at: this.runtime.iso(record.updatedAt),
      last_transaction_at:
        record.lastTransactionAt === undefined ? null : this.runtime.iso(record.lastTransactionAt),
    };
  }

  grantView(grant: GrantRecord): DodoPayments.CreditEntitlements.BalanceListGrantsResponse {
    return {
      id: grant.id,
      created_at: this.runtime.iso(grant.createdAt),
      credit_entitlement_id: grant.entitlementId,
      customer_id: grant.customerId,
      initial_amount: formatCreditUnits(grant.initial),
      is_expired: false,
      is_rolled_over: false,
      remaining_amount: formatCreditUnits(grant.remaining),
      rollover_count: 0,
      source_type: grant.sourceType,
      updated_at: this.runtime.iso(grant.updatedAt),
      expires_at: null,
      metadata: grant.metadata,
      parent_grant_id: null,
      source_id: grant.sourceId ?? null,
    };
  }
}

/** The smaller of two amounts (`Math.min` does not take bigints). */
export function smaller(a: CreditUnits, b: CreditUnits): CreditUnits {
  if (a < b) return a;
  return b;
}

function key(customerId: string, entitlementId: string): string {
  return `${entitlementId}\u0000${customerId}`;
}
