import type { DodoPayments } from 'dodopayments';
import { type CreditUnits, formatCreditUnits } from './amounts.js';
import { badRequest } from './errors.js';
import type { Runtime } from './runtime.js';
import type { WebhookSender } from './webhooks.js';

type TransactionType = DodoPayments.CreditEntitlements.CreditLedgerEntry['transaction_type'];
type GrantSource = DodoPayments.CreditEntitlements.BalanceListGrantsResponse['source_type'];
type Metadata = Record<string, string | number | boolean>;

/** One customer's balance in one credit entitlement. */
export interface BalanceRecord {
  id: string;
  customerId: string;
  entitlementId: string;
  balance: CreditUnits;
  /** Usage deducted beyond the balance (the balance never goes below zero; the rest is owed here). */
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

/** A movement to record in the ledger. */
export interface Movement {
  customerId: string;
  entitlementId: string;
  direction: 'credit' | 'debit';
  amount: CreditUnits;
  transactionType: TransactionType;
  description?: string;
  referenceId?: string;
  referenceType?: string;
  metadata?: Metadata;
  /** For credits: where the grant comes from. Default `'api'`. */
  grantSource?: GrantSource;
  grantSourceId?: string;
  /**
   * For debits: when the balance cannot cover the amount, deduct what there is and record the
   * rest as overage (meters and refunds do); otherwise refuse with 400 (API debits do).
   */
  allowOverage?: boolean;
}

/** Which webhook announces which ledger movement. */
const WEBHOOK_TYPE: Record<TransactionType, string> = {
  credit_added: 'credit.added',
  credit_deducted: 'credit.deducted',
  credit_expired: 'credit.expired',
  credit_rolled_over: 'credit.rolled_over',
  rollover_forfeited: 'credit.rollover_forfeited',
  overage_charged: 'credit.overage_charged',
  overage_reset: 'credit.overage_reset',
  auto_top_up: 'credit.added',
  manual_adjustment: 'credit.manual_adjustment',
  refund: 'credit.manual_adjustment',
};

/** Information `credit.balance_low` carries about the entitlement. */
export interface LowBalanceContext {
  entitlementName(entitlementId: string): string;
  /** The customer's active subscription granting this entitlement, if any. */
  subscriptionCredits(
    customerId: string,
    entitlementId: string,
  ): { subscriptionId: string; credits: CreditUnits } | undefined;
}

/**
 * Balances, grants and the ledger. Every movement is one ledger entry and one `credit.*`
 * webhook; a debit that takes the balance from at-or-above the low-balance threshold to below
 * it also sends `credit.balance_low`.
 */
export class CreditLedger {
  private readonly balances = new Map<string, BalanceRecord>();
  private readonly grants: GrantRecord[] = [];
  private readonly entries: LedgerRecord[] = [];
  private readonly idempotency = new Map<string, string>();

  constructor(
    private readonly runtime: Runtime,
    private readonly webhooks: WebhookSender,
    private readonly lowThreshold: CreditUnits | undefined,
    private readonly context: LowBalanceContext,
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

  grantsFrom(sourceId: string): GrantRecord[] {
    return this.grants.filter((grant) => grant.sourceId === sourceId);
  }

  /** The entry already recorded under this idempotency key, if any. */
  idempotent(customerId: string, entitlementId: string, idempotencyKey: string): LedgerRecord | undefined {
    const id = this.idempotency.get(`${key(customerId, entitlementId)}\u0000${idempotencyKey}`);
    return id === undefined ? undefined : this.entries.find((entry) => entry.id === id);
  }

  /** Records a movement, applies it, and sends its webhooks. */
  record(movement: Movement, idempotencyKey?: string): LedgerRecord {
    if (movement.amount <= 0n) throw new RangeError('A ledger movement must be a positive amount.');
    const now = this.runtime.now();
    const record = this.balanceFor(movement.customerId, movement.entitlementId, now);
    const balanceBefore = record.balance;
    const overageBefore = record.overage;
    let grantId: string | undefined;
    if (movement.direction === 'credit') {
      // Credits first repay what usage owes (overage), then raise the balance.
      const repaid = smaller(movement.amount, record.overage);
      record.overage -= repaid;
      record.balance += movement.amount - repaid;
      grantId = this.grant(movement, now).id;
    } else {
      if (movement.amount > record.balance && !movement.allowOverage) {
        throw badRequest(
          'INSUFFICIENT_CREDIT_BALANCE',
          `Cannot debit ${formatCreditUnits(movement.amount)} credits: the balance is ${formatCreditUnits(record.balance)}.`,
        );
      }
      const covered = smaller(movement.amount, record.balance);
      record.balance -= covered;
      record.overage += movement.amount - covered;
      this.consumeGrants(movement.customerId, movement.entitlementId, covered, now);
    }
    record.updatedAt = now;
    record.lastTransactionAt = now;
    const entry: LedgerRecord = {
      id: this.runtime.id('cle'),
      customerId: movement.customerId,
      entitlementId: movement.entitlementId,
      isCredit: movement.direction === 'credit',
      amount: movement.amount,
      balanceBefore,
      balanceAfter: record.balance,
      overageBefore,
      overageAfter: record.overage,
      transactionType: movement.transactionType,
      description: movement.description,
      grantId,
      referenceId: movement.referenceId,
      referenceType: movement.referenceType,
      metadata: movement.metadata ?? {},
      createdAt: now,
    };
    this.entries.push(entry);
    if (idempotencyKey !== undefined) {
      this.idempotency.set(
        `${key(movement.customerId, movement.entitlementId)}\u0000${idempotencyKey}`,
        entry.id,
      );
    }
    this.webhooks.emit(WEBHOOK_TYPE[entry.transactionType], {
      payload_type: 'CreditLedgerEntry',
      ...this.view(entry),
    });
    this.checkLow(entry);
    return entry;
  }

  /** Moves a balance to exactly `target` with one manual adjustment (none when already there). */
  setBalance(customerId: string, entitlementId: string, target: CreditUnits): LedgerRecord | undefined {
    const now = this.runtime.now();
    const record = this.balanceFor(customerId, entitlementId, now);
    const difference = target - record.balance;
    if (difference === 0n) return undefined;
    return this.record({
      customerId,
      entitlementId,
      direction: difference > 0n ? 'credit' : 'debit',
      amount: difference > 0n ? difference : -difference,
      transactionType: 'manual_adjustment',
      description: 'Balance set by the emulator admin API',
      referenceType: 'admin',
    });
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

  private grant(movement: Movement, now: number): GrantRecord {
    const grant: GrantRecord = {
      id: this.runtime.id('cgr'),
      customerId: movement.customerId,
      entitlementId: movement.entitlementId,
      initial: movement.amount,
      remaining: movement.amount,
      sourceType: movement.grantSource ?? 'api',
      sourceId: movement.grantSourceId,
      metadata: movement.metadata ?? {},
      createdAt: now,
      updatedAt: now,
    };
    this.grants.push(grant);
    return grant;
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

  private checkLow(entry: LedgerRecord): void {
    const threshold = this.lowThreshold;
    if (threshold === undefined || entry.isCredit) return;
    if (!(entry.balanceBefore >= threshold && entry.balanceAfter < threshold)) return;
    const subscription = this.context.subscriptionCredits(entry.customerId, entry.entitlementId);
    const percent =
      subscription && subscription.credits > 0n ? Number((threshold * 100n) / subscription.credits) : 0;
    this.webhooks.emit('credit.balance_low', {
      available_balance: formatCreditUnits(entry.balanceAfter),
      brand_id: this.runtime.brandId,
      credit_entitlement_id: entry.entitlementId,
      credit_entitlement_name: this.context.entitlementName(entry.entitlementId),
      customer_id: entry.customerId,
      subscription_credits_amount: formatCreditUnits(subscription?.credits ?? 0n),
      subscription_id: subscription?.subscriptionId ?? '',
      threshold_amount: formatCreditUnits(threshold),
      threshold_percent: percent,
    } satisfies DodoPayments.CreditBalanceLowWebhookEvent['data']);
  }

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
function smaller(a: CreditUnits, b: CreditUnits): CreditUnits {
  if (a < b) return a;
  return b;
}

function key(customerId: string, entitlementId: string): string {
  return `${entitlementId}\u0000${customerId}`;
}
