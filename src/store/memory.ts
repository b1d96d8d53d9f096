import { randomUUID } from 'node:crypto';
import { getHeapStatistics } from 'node:v8';
import { LRUCache } from 'lru-cache';
import { type RateLimiterAbstract, RateLimiterMemory } from 'rate-limiter-flexible';
import { ConfigError, StoreError } from '../errors.js';
import type { Money } from '../money.js';
import { coveringSubscription, hardCapLimit } from './admission.js';
import { budgetPeriod } from './budget-period.js';
import {
  budgetBytes,
  counterBytes,
  customerBytes,
  deadLetterBytes,
  idBytes,
  lruCacheBytes,
  outboxEntryBytes,
  periodBytes,
  RECHARGE_BYTES,
  RESERVATION_BYTES,
  RESTAMP_ROOM_BYTES,
  SETTLEMENT_ALLOWANCE_BYTES,
  subscriptionBytes,
  topUpBytes,
  webhookBytes,
} from './memory-bytes.js';
import {
  beginRecharge,
  finishRecharge,
  newRechargeRecord,
  type RechargeRecord,
  rechargeState,
  setRecharge,
} from './memory-recharge.js';
import { type LimitHold, Reservations } from './memory-reservations.js';
import { subscriptionPeriod } from './subscription-period.js';
import type {
  Admission,
  AdmissionResult,
  AutoRechargeSettings,
  AutoRechargeState,
  BalanceSyncResult,
  BalanceView,
  BillingStore,
  BudgetLimits,
  BudgetPeriods,
  BudgetView,
  ClaimedEvent,
  CreditOutcome,
  CustomerProfile,
  DeadLetter,
  OutboxBatch,
  OutboxEvent,
  OutboxStats,
  RateLimiterOptions,
  RecentCustomer,
  RechargeBegin,
  RechargeFinish,
  RechargeFinished,
  RechargeStart,
  ReserveResult,
  Settlement,
  SettleResult,
  Spend,
  SpendChange,
  SubscriptionState,
  TopUp,
  UsageIncrement,
  WebhookClaim,
} from './types.js';

export interface MemoryStoreOptions {
  /**
   * Most customers kept. Beyond it the least recently used customer with nothing live and
   * nothing pending is forgotten (its balance is then refetched from Dodo). A customer with a
   * live reservation, or usage settled here that Dodo has not confirmed deducting, is never
   * forgotten: Dodo's balance does not include that usage yet, and refetching it would let the
   * customer spend it again. When every customer is so pinned, this count is exceeded rather
   * than money forgotten, and `maxBytes` bounds them.
   * @default 100_000
   */
  maxCustomers?: number;
  /**
   * Most webhook ids remembered for deduplication (each also expires after its retention).
   * @default 100_000
   */
  maxWebhookIds?: number;
  /**
   * Approximate bytes of heap the store may hold: customers, reservations, applied ids,
   * counters, subscriptions, webhook ids, the outbox (usage events waiting for Dodo, dead
   * letters), and what its caches allocate up front (32 bytes × `maxCustomers` and ×
   * `maxWebhookIds`). At the bound, `reserve` throws a `StoreError` (so new paid requests are answered
   * 503) until the outbox drains; `settle` always accepts, so usage that was served is never
   * dropped. Each live reservation counts the settlement it will add, so requests admitted under
   * the bound settle within it. Size it as (the Dodo ingest outage to ride out) × (requests per
   * second) × about 3 kB, within the process's heap (`--max-old-space-size`).
   * @default a quarter of V8's heap limit (`v8.getHeapStatistics().heap_size_limit / 4`)
   */
  maxBytes?: number;
  /** Clock in ms since the epoch; tests inject a fake one. @default Date.now */
  now?: () => number;
}

interface BalanceRecord {
  balance: Money;
  /** Observation time of the newest Dodo balance applied: older ones are ignored. */
  syncedAt: number;
  /** Set by `markBalanceStale`: the view is reported with `syncedAt: 0` until the next sync. */
  stale: boolean;
}

interface UsagePeriod {
  counters: Map<string, bigint>;
  expiresAt: number;
  /** Accounted bytes of the period and its counters. */
  bytes: number;
}

/** Everything kept for one customer: evicted together, so one bound covers it all. */
interface CustomerState {
  id: string;
  balance: BalanceRecord | undefined;
  /** Usage settled here that Dodo has not confirmed deducting; kept even before a first sync. */
  pending: Money;
  reservations: Reservations;
  /** Adjustment and settlement ids applied, with when they may be forgotten. */
  appliedIds: Map<string, number>;
  spend: Money;
  firstPaymentAt: number | undefined;
  paymentIds: Set<string>;
  refundIds: Set<string>;
  subscriptions: Map<string, SubscriptionState>;
  /** Budgets set per API key. */
  budgets: Map<string, BudgetLimits>;
  /** Auto-recharge settings and state, once set. */
  autoRecharge: RechargeRecord | undefined;
  /** The newest top-up recorded (`recordTopUp`). */
  lastTopUp: TopUp | undefined;
  usage: Map<string, UsagePeriod>;
  /** When a settlement was last applied (0: never), for `recentCustomers`. */
  activeAt: number;
  /** Accounted bytes of the ids, periods and subscriptions kept (reservations are counted apart). */
  keptBytes: number;
  /** Accounted bytes of the whole customer, as last added to the store's total. */
  bytes: number;
}

/**
 * An event in the outbox, kept as its JSON: one flat string takes a fraction of the memory of
 * the object graph (and of the strings a request id built by concatenation keeps alive), and the
 * caller's object can no longer change what is delivered — as in RedisStore.
 */
interface OutboxEntry {
  eventId: string;
  json: string;
  attempts: number;
  enqueuedAt: number;
  availableAt: number;
  /** Set while leased. */
  leaseId: string | undefined;
  leaseExpiresAt: number;
  /** Accounted bytes of the entry and its event. */
  bytes: number;
}

interface WebhookRecord {
  state: 'processing' | 'done';
  expiresAt: number;
}

interface StoredDeadLetter {
  json: string;
  reason: string;
  attempts: number;
  deadAt: number;
  bytes: number;
}

/**
 * A flat copy of a string kept for long. V8 keeps a string built by concatenation (a template
 * literal, `crypto.randomUUID()`'s) as a tree of its parts: about 500 bytes for a UUID, against
 * about 60 for the copy.
 */
function flat(text: string): string {
  return JSON.parse(JSON.stringify(text)) as string;
}

/** Settlement and adjustment ids remembered per customer, at most (the oldest go first). */
const MAX_APPLIED_IDS_PER_CUSTOMER = 1_000_000;
/**
 * Dead letters kept, at most: the oldest go first. Each was reported when Dodo refused it (the
 * flusher logs it and calls `onDeadLetter`); an endless trickle of them must not take the
 * memory that paid requests need.
 */
const MAX_DEAD_LETTERS = 10_000;
/** Pinned customers re-examined per new customer, so those whose holds lapsed become evictable. */
const PINNED_SWEEP = 2;

function positiveInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`${name}\` must be a positive integer (got ${String(value)}).`,
    );
  }
  return value;
}

function mebibytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Approximate heap use of the store, by what holds it. */
export interface MemoryStoreUsage {
  /** Everything accounted: customers, webhook ids, the outbox and dead letters. */
  bytes: number;
  /** The bound (`maxBytes`). */
  maxBytes: number;
  /** Customers kept, and how many of them are pinned (live reservations or pending usage). */
  customers: number;
  pinnedCustomers: number;
}

/**
 * A `BillingStore` in this process's memory, bounded in memory (`maxBytes`) and in customers
 * (`maxCustomers`, with `lru-cache`). For one process and for tests; several processes or
 * machines need `RedisStore`. Each operation runs synchronously inside one call, so it is atomic
 * with respect to every other request of the process.
 */
export class MemoryStore implements BillingStore {
  readonly now: () => number;
  private readonly maxCustomers: number;
  private readonly maxBytes: number;
  /** Customers with nothing live and nothing pending, least recently used first out. */
  private readonly idle: LRUCache<string, CustomerState>;
  /** Customers with live reservations or pending usage: never evicted (see `maxCustomers`). */
  private readonly pinned = new Map<string, CustomerState>();
  private readonly webhooks: LRUCache<string, WebhookRecord>;
  /**
   * Every event still to deliver, in enqueue order (the first is the oldest), never reordered:
   * an event goes back to its place when its lease ends, and a claim takes the oldest due.
   */
  private readonly outbox = new Map<string, OutboxEntry>();
  /** The events leased to a flusher (a batch or a few): a claim walks them for lapsed leases. */
  private readonly leased = new Map<string, OutboxEntry>();
  private readonly deadLetters = new Map<string, StoredDeadLetter>();
  /** Accounted bytes of everything kept, and of the outbox (dead letters included) alone. */
  private bytes = 0;
  private outboxBytes = 0;
  /** What the caches allocate up front, whatever they hold. */
  private readonly fixedBytes: number;

  constructor(options: Readonly<MemoryStoreOptions> = {}) {
    this.now = options.now ?? Date.now;
    this.maxCustomers = positiveInteger(options.maxCustomers, 'maxCustomers', 100_000);
    const maxWebhookIds = positiveInteger(options.maxWebhookIds, 'maxWebhookIds', 100_000);
    this.maxBytes = positiveInteger(
      options.maxBytes,
      'maxBytes',
      Math.floor(getHeapStatistics().heap_size_limit / 4),
    );
    // The customer and webhook caches allocate their index up front.
    this.fixedBytes = lruCacheBytes(this.maxCustomers) + lruCacheBytes(maxWebhookIds);
    this.bytes = this.fixedBytes;
    if (this.bytes * 2 > this.maxBytes) {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        `\`maxBytes\` (${this.maxBytes}) leaves too little room: the caches of \`maxCustomers\` and \`maxWebhookIds\` take ${this.bytes} bytes up front. Raise \`maxBytes\` to at least ${this.bytes * 2}, or lower them.`,
      );
    }
    this.idle = new LRUCache({
      max: this.maxCustomers,
      dispose: (state, _id, reason) => {
        if (reason === 'evict') this.bytes -= state.bytes;
      },
    });
    this.webhooks = new LRUCache({
      max: maxWebhookIds,
      dispose: (_record, webhookId, reason) => {
        if (reason !== 'set') this.bytes -= webhookBytes(webhookId);
      },
    });
  }

  /** Approximate heap use of the store (see `maxBytes`). */
  usage(): MemoryStoreUsage {
    return {
      bytes: this.bytes,
      maxBytes: this.maxBytes,
      customers: this.idle.size + this.pinned.size,
      pinnedCustomers: this.pinned.size,
    };
  }

  /** A customer's state if kept (marking it recently used), else `undefined`. */
  private find(customerId: string): CustomerState | undefined {
    return this.pinned.get(customerId) ?? this.idle.get(customerId);
  }

  private customer(customerId: string): CustomerState {
    const found = this.find(customerId);
    if (found) return found;
    const state: CustomerState = {
      id: customerId,
      balance: undefined,
      pending: 0n,
      reservations: new Reservations(),
      appliedIds: new Map(),
      spend: 0n,
      firstPaymentAt: undefined,
      paymentIds: new Set(),
      refundIds: new Set(),
      subscriptions: new Map(),
      budgets: new Map(),
      autoRecharge: undefined,
      lastTopUp: undefined,
      usage: new Map(),
      activeAt: 0,
      keptBytes: 0,
      bytes: 0,
    };
    this.sweepPinned();
    this.idle.set(customerId, state);
    this.settled(state);
    return state;
  }

  /**
   * Whether forgetting the customer would forget money: a live hold (credits, or a request's
   * share of a hard cap), or usage Dodo may not have deducted.
   */
  private mustKeep(state: CustomerState): boolean {
    return (
      state.pending > 0n ||
      state.reservations.count(this.now()).reservations > 0 ||
      // A recharge in flight: its outcome must find the attempt it ends.
      state.autoRecharge?.attempt !== undefined
    );
  }

  /**
   * After every change to a customer: recounts its bytes, pins or unpins it, and forgets the
   * least recently used idle customers beyond `maxCustomers`.
   */
  private settled(state: CustomerState): void {
    const { reservations, idChars } = state.reservations.count(this.now());
    const bytes =
      customerBytes(state.id) +
      state.keptBytes +
      reservations * (RESERVATION_BYTES + SETTLEMENT_ALLOWANCE_BYTES) +
      2 * idChars;
    this.bytes += bytes - state.bytes;
    state.bytes = bytes;
    const keep = this.mustKeep(state);
    if (keep && !this.pinned.has(state.id)) {
      this.idle.delete(state.id);
      this.pinned.set(state.id, state);
    } else if (!keep && this.pinned.has(state.id)) {
      this.pinned.delete(state.id);
      this.idle.set(state.id, state);
    }
    // The customer being changed is the most recently used: never the one forgotten.
    const spare = keep ? 0 : 1;
    while (this.idle.size > spare && this.idle.size + this.pinned.size > this.maxCustomers) this.idle.pop();
  }

  /**
   * Reservations lapse without a call: re-examines the longest-pinned customers, unpinning those
   * that hold nothing any more, and moves the others to the back of the line.
   */
  private sweepPinned(): void {
    let examined = 0;
    for (const state of this.pinned.values()) {
      if (examined++ >= PINNED_SWEEP) break;
      this.pinned.delete(state.id);
      this.pinned.set(state.id, state);
      this.settled(state);
    }
  }

  /** Applies `id` once: true the first time, false while it is remembered. */
  private applyOnce(state: CustomerState, id: string, retentionMs: number): boolean {
    const now = this.now();
    const forgetAt = state.appliedIds.get(id);
    if (forgetAt !== undefined && forgetAt > now) return false;
    if (forgetAt === undefined) state.keptBytes += idBytes(id);
    state.appliedIds.delete(id);
    state.appliedIds.set(flat(id), now + retentionMs);
    // Ids are kept in insertion order with (mostly) one retention, so the expired ones are at
    // the front: dropping them from there keeps this O(1) per call.
    for (const [oldest, at] of state.appliedIds) {
      if (at > now && state.appliedIds.size <= MAX_APPLIED_IDS_PER_CUSTOMER) break;
      state.appliedIds.delete(oldest);
      state.keptBytes -= idBytes(oldest);
    }
    return true;
  }

  private view(state: CustomerState): BalanceView | undefined {
    if (!state.balance) return undefined;
    const reserved = state.reservations.live(this.now());
    const { balance, syncedAt, stale } = state.balance;
    const view: BalanceView = {
      balance,
      reserved,
      available: balance - reserved,
      pending: state.pending,
      syncedAt: stale ? 0 : syncedAt,
    };
    if (state.lastTopUp) view.lastTopUp = state.lastTopUp.amount;
    return view;
  }

  async getBalance(customerId: string): Promise<BalanceView | undefined> {
    const state = this.find(customerId);
    return state && this.view(state);
  }

  async syncBalance(customerId: string, dodoBalance: Money, observedAt: number): Promise<BalanceSyncResult> {
    const state = this.customer(customerId);
    const current = state.balance;
    // A fetch that started before the last applied one must not overwrite it.
    const applied = !current || observedAt >= current.syncedAt;
    if (applied) {
      state.balance = { balance: dodoBalance - state.pending, syncedAt: observedAt, stale: false };
    }
    this.settled(state);
    const result: BalanceSyncResult = { applied, view: this.view(state)! };
    if (applied && current) result.previousBalance = current.balance;
    return result;
  }

  /**
   * Walks the customers kept: a customer with pending usage is never evicted, and one evicted held
   * no money (its view is rebuilt from Dodo on its next request), so nothing worth checking is lost.
   */
  async recentCustomers(since: number, limit: number): Promise<RecentCustomer[]> {
    const found: RecentCustomer[] = [];
    const visit = (state: CustomerState) => {
      if (state.activeAt > 0 && state.activeAt >= since)
        found.push({ customerId: state.id, activeAt: state.activeAt });
    };
    for (const state of this.pinned.values()) visit(state);
    // Iterating does not mark the idle customers recently used, unlike `get`.
    for (const state of this.idle.values()) visit(state);
    found.sort((a, b) => b.activeAt - a.activeAt);
    return found.slice(0, Math.max(0, limit));
  }

  async adjustBalance(
    customerId: string,
    adjustmentId: string,
    delta: Money,
    retentionMs: number,
  ): Promise<BalanceView | undefined> {
    const state = this.customer(customerId);
    // The id is remembered even without a view, so a replay after the next sync adds nothing.
    if (this.applyOnce(state, `adjust:${adjustmentId}`, retentionMs) && state.balance)
      state.balance.balance += delta;
    this.settled(state);
    return this.view(state);
  }

  async markBalanceStale(customerId: string): Promise<void> {
    const balance = this.find(customerId)?.balance;
    if (balance) balance.stale = true;
  }

  async confirmDeducted(
    customerId: string,
    deductionId: string,
    amount: Money,
    retentionMs: number,
  ): Promise<void> {
    const state = this.customer(customerId);
    // Remembered even with nothing pending: usage settled later is not what this confirmed.
    if (this.applyOnce(state, `deducted:${deductionId}`, retentionMs)) {
      state.pending = state.pending > amount ? state.pending - amount : 0n;
    }
    this.settled(state);
  }

  async recordTopUp(customerId: string, topUp: TopUp): Promise<boolean> {
    const state = this.customer(customerId);
    const last = state.lastTopUp;
    // Ids compared as UTF-8 bytes, as RedisStore does (JS compares UTF-16 code units).
    const newer =
      !last ||
      topUp.at > last.at ||
      (topUp.at === last.at && Buffer.compare(Buffer.from(topUp.topUpId), Buffer.from(last.topUpId)) > 0);
    if (newer) {
      state.keptBytes += topUpBytes(topUp.topUpId) - (last ? topUpBytes(last.topUpId) : 0);
      state.lastTopUp = { topUpId: flat(topUp.topUpId), amount: topUp.amount, at: topUp.at };
    }
    this.settled(state);
    return newer;
  }

  /**
   * Refuses a new request (not a re-admission) with a `StoreError` at the memory bound (see
   * `maxBytes`), before holding anything: it is answered 503 rather than admitted into usage
   * the store could not keep.
   */
  async admit(admission: Admission): Promise<AdmissionResult> {
    const { customerId, requestId } = admission;
    const now = this.now();
    const existing = this.find(customerId);
    // A re-admission replaces what the request held; refused, it then holds nothing.
    if (existing && admission.replace) {
      existing.reservations.remove(requestId);
      this.settled(existing);
    } else if (existing) {
      if (existing.reservations.has(requestId, now)) return { duplicate: 'in_flight', credits: undefined };
      const forgetAt = existing.appliedIds.get(`settle:${requestId}`);
      if (forgetAt !== undefined && forgetAt > now) return { duplicate: 'settled', credits: undefined };
    }
    if (!admission.replace) this.refuseAtBound();
    const result: AdmissionResult = { credits: undefined };
    if (admission.readProfile) result.profile = this.profileOf(existing);
    let chargeCredits = true;
    const limits: LimitHold[] = [];
    const covering =
      admission.plans &&
      existing &&
      coveringSubscription(existing.subscriptions.values(), admission.plans, this.now());
    if (covering) {
      const { subscription, plan } = covering;
      result.subscription = { ...subscription };
      chargeCredits = plan.chargeCredits;
      if (plan.hardCap) {
        const { unit } = plan.hardCap;
        const period = subscriptionPeriod(subscription);
        const limit = hardCapLimit(plan.hardCap, subscription);
        const used = this.limitUsed(existing!, period, unit, now);
        // Refused once used and held reach the cap: passed by no more than one request's estimate.
        if (used >= limit) return { ...result, capped: { unit, used, limit } };
        limits.push({ period, unit, amount: admission.plans!.estimate[unit] });
      }
    }
    const budget =
      admission.budget && chargeCredits ? existing?.budgets.get(admission.budget.key) : undefined;
    if (budget) {
      const { key, periods, amount } = admission.budget!;
      const period = budgetPeriod(key, periods[budget.period]);
      const used = this.limitUsed(existing!, period, 'cost', now);
      result.budget = {
        used,
        period,
        ...(budget.hard === undefined ? {} : { hard: budget.hard }),
        ...(budget.soft === undefined ? {} : { soft: budget.soft }),
      };
      // Refused once spent and held reach the hard limit: passed by no more than one request.
      if (budget.hard !== undefined && used >= budget.hard) return { ...result, budgetExceeded: true };
      limits.push({ period, unit: 'cost', amount });
    }
    let credit: Money = 0n;
    if (admission.credits && chargeCredits) {
      const outcome = this.creditOutcome(existing, admission, now);
      result.credits = outcome;
      if (!outcome.ok) return result;
      credit = outcome.reserved;
    }
    if (credit > 0n || limits.length > 0) {
      const state = this.customer(customerId);
      state.reservations.hold(requestId, credit, now + admission.ttlMs, limits);
      this.settled(state);
    }
    return result;
  }

  /** What a limit's period has used (settled) and what requests in flight hold against it. */
  private limitUsed(state: CustomerState, period: string, unit: LimitHold['unit'], now: number): bigint {
    return (this.usageOf(state, period)[unit] ?? 0n) + state.reservations.limitHeld(period, unit, now);
  }

  async setBudget(customerId: string, key: string, limits: BudgetLimits | undefined): Promise<void> {
    const state = this.customer(customerId);
    const had = state.budgets.has(key);
    if (limits) state.budgets.set(key, { ...limits });
    else state.budgets.delete(key);
    state.keptBytes += (state.budgets.has(key) ? 1 : 0) * budgetBytes(key) - (had ? budgetBytes(key) : 0);
    this.settled(state);
  }

  async setAutoRecharge(customerId: string, settings: AutoRechargeSettings | undefined): Promise<void> {
    const state = this.customer(customerId);
    if (!state.autoRecharge) {
      if (!settings) return;
      state.autoRecharge = newRechargeRecord();
      state.keptBytes += RECHARGE_BYTES;
    }
    setRecharge(state.autoRecharge, settings);
    this.settled(state);
  }

  async getAutoRecharge(customerId: string, month: string): Promise<AutoRechargeState | undefined> {
    return rechargeState(this.find(customerId)?.autoRecharge, month);
  }

  async beginRecharge(customerId: string, start: RechargeStart): Promise<RechargeBegin> {
    const state = this.find(customerId);
    const begun = beginRecharge(state?.autoRecharge, start, this.now());
    if (state) this.settled(state);
    return begun;
  }

  async finishRecharge(customerId: string, finish: RechargeFinish): Promise<RechargeFinished> {
    const state = this.find(customerId);
    const finished = finishRecharge(state?.autoRecharge, finish, this.now());
    if (state) this.settled(state);
    return finished;
  }

  async getBudget(customerId: string, key: string, periods: BudgetPeriods): Promise<BudgetView | undefined> {
    const state = this.find(customerId);
    const limits = state?.budgets.get(key);
    if (!state || !limits) return undefined;
    const periodId = periods[limits.period];
    const period = budgetPeriod(key, periodId);
    const now = this.now();
    return {
      key,
      ...limits,
      periodId,
      spent: this.usageOf(state, period).cost ?? 0n,
      held: state.reservations.limitHeld(period, 'cost', now),
    };
  }

  /** How much of `admission.credits` the balance covers, without holding it yet. */
  private creditOutcome(state: CustomerState | undefined, admission: Admission, now: number): CreditOutcome {
    if (!state?.balance) return { ok: false, reason: 'no_balance' };
    const { min, max, overdraft } = admission.credits!;
    const available = state.balance.balance - state.reservations.live(now);
    const syncedAt = state.balance.stale ? 0 : state.balance.syncedAt;
    const spendable = available + overdraft;
    if (spendable <= 0n || spendable < min) return { ok: false, reason: 'insufficient', available, syncedAt };
    // biome-ignore lint/complexity/useMathMinMax: bigints, which Math.min does not take.
    const reserved = spendable < max ? spendable : max;
    return { ok: true, reserved, available: available - reserved, syncedAt };
  }

  /**
   * Refuses with a `StoreError` at the memory bound (see `maxBytes`): a new paid request is
   * answered 503 rather than admitted into usage the store could not keep.
   */
  async reserve(
    customerId: string,
    reservationId: string,
    amount: Money,
    ttlMs: number,
  ): Promise<ReserveResult> {
    const state = this.find(customerId);
    if (!state?.balance) return { ok: false, reason: 'no_balance' };
    this.refuseAtBound();
    const now = this.now();
    state.reservations.remove(reservationId);
    const available = state.balance.balance - state.reservations.live(now);
    const syncedAt = state.balance.stale ? 0 : state.balance.syncedAt;
    if (available <= 0n || available < amount) {
      this.settled(state);
      return { ok: false, reason: 'insufficient', available, syncedAt };
    }
    state.reservations.hold(reservationId, amount, now + ttlMs);
    this.settled(state);
    return { ok: true, available: available - amount, syncedAt };
  }

  private refuseAtBound(): void {
    if (this.bytes + RESERVATION_BYTES + SETTLEMENT_ALLOWANCE_BYTES <= this.maxBytes) return;
    throw new StoreError(
      `MemoryStore is at its memory bound (maxBytes ${mebibytes(this.maxBytes)}; holding about ${mebibytes(this.bytes)}: ` +
        `${this.outbox.size} usage events waiting for Dodo, ${this.deadLetters.size} dead letters, ` +
        `${this.pinned.size} customers with live reservations or usage Dodo has not confirmed deducting). ` +
        'New paid requests are refused until the outbox drains. Check that Dodo accepts usage events ' +
        '(and that credit.deducted webhooks reach dodoWebhooks), raise `maxBytes` within the heap, ' +
        'or use RedisStore.',
    );
  }

  async release(customerId: string, reservationId: string): Promise<boolean> {
    const state = this.find(customerId);
    if (!state) return false;
    const released = state.reservations.remove(reservationId, this.now());
    this.settled(state);
    return released;
  }

  /** Always accepts, even past the memory bound: usage that was served is never dropped. */
  async settle(settlement: Settlement): Promise<SettleResult> {
    const state = this.customer(settlement.customerId);
    if (!this.applyOnce(state, `settle:${settlement.settlementId}`, settlement.retentionMs)) {
      this.settled(state);
      return { applied: false, view: this.view(state) };
    }
    if (settlement.reservationId !== undefined) state.reservations.remove(settlement.reservationId);
    if (state.balance) state.balance.balance -= settlement.cost;
    state.pending += settlement.cost;
    const now = this.now();
    state.activeAt = now;
    for (const event of settlement.events) {
      if (this.outbox.has(event.event_id)) continue;
      const eventId = flat(event.event_id);
      const json = JSON.stringify(event);
      const entry: OutboxEntry = {
        eventId,
        json,
        attempts: 0,
        enqueuedAt: now,
        availableAt: now,
        leaseId: undefined,
        leaseExpiresAt: 0,
        bytes: outboxEntryBytes(eventId, json) + RESTAMP_ROOM_BYTES,
      };
      this.outbox.set(eventId, entry);
      this.addOutboxBytes(entry.bytes);
    }
    const costAfter = (settlement.usage ?? []).map((usage) => this.addUsageTo(state, usage));
    this.settled(state);
    return { applied: true, view: this.view(state), costAfter };
  }

  private addOutboxBytes(bytes: number): void {
    this.bytes += bytes;
    this.outboxBytes += bytes;
  }

  /** @returns the period's `cost` counter after the addition. */
  private addUsageTo(state: CustomerState, usage: UsageIncrement): bigint {
    const now = this.now();
    let period = state.usage.get(usage.period);
    if (!period || period.expiresAt <= now) {
      // A period starts (or an expired one restarts at zero): expired periods are dropped now,
      // not on every settlement — a customer keeps a period per day counted, and new periods
      // come only with a new day, month or key.
      for (const [name, expired] of state.usage) {
        if (expired.expiresAt > now) continue;
        state.usage.delete(name);
        state.keptBytes -= expired.bytes;
      }
      period = { counters: new Map(), expiresAt: 0, bytes: periodBytes(usage.period) };
      state.usage.set(usage.period, period);
      state.keptBytes += period.bytes;
    }
    period.expiresAt = now + usage.ttlMs;
    for (const [name, amount] of Object.entries(usage.counters)) {
      const current = period.counters.get(name);
      if (current === undefined) {
        period.bytes += counterBytes(name);
        state.keptBytes += counterBytes(name);
      }
      period.counters.set(name, (current ?? 0n) + amount);
    }
    return period.counters.get('cost') ?? 0n;
  }

  async addUsage(customerId: string, usage: UsageIncrement): Promise<void> {
    const state = this.customer(customerId);
    this.addUsageTo(state, usage);
    this.settled(state);
  }

  async getUsage(customerId: string, period: string): Promise<Record<string, bigint>> {
    const state = this.find(customerId);
    return state ? this.usageOf(state, period) : {};
  }

  /** A period's counters; an expired period reads as empty. */
  private usageOf(state: CustomerState, period: string): Record<string, bigint> {
    const usage = state.usage.get(period);
    if (!usage || usage.expiresAt <= this.now()) return {};
    return Object.fromEntries(usage.counters);
  }

  async claimOutbox(max: number, leaseMs: number): Promise<OutboxBatch> {
    const now = this.now();
    const leaseId = randomUUID();
    const events: ClaimedEvent[] = [];
    const take = (entry: OutboxEntry) => {
      entry.leaseId = leaseId;
      entry.leaseExpiresAt = now + leaseMs;
      entry.attempts += 1;
      events.push({
        event: JSON.parse(entry.json) as OutboxEvent,
        attempts: entry.attempts,
        enqueuedAt: entry.enqueuedAt,
      });
    };
    // Events whose lease lapsed (their worker died) go first: they are the oldest.
    for (const entry of this.leased.values()) {
      if (events.length >= max) break;
      if (entry.leaseExpiresAt <= now) take(entry);
    }
    for (const [id, entry] of this.outbox) {
      if (events.length >= max) break;
      if (entry.leaseId !== undefined || entry.availableAt > now) continue;
      this.leased.set(id, entry);
      take(entry);
    }
    return { leaseId, events };
  }

  /** The entries of `eventIds` still leased under `batch`. */
  private *leasedUnder(batch: OutboxBatch, eventIds: readonly string[]): Generator<OutboxEntry> {
    for (const id of eventIds) {
      const entry = this.leased.get(id);
      if (entry && entry.leaseId === batch.leaseId) yield entry;
    }
  }

  /** Takes a leased event out of the outbox (delivered or dead-lettered). */
  private removeLeased(entry: OutboxEntry): void {
    this.leased.delete(entry.eventId);
    this.outbox.delete(entry.eventId);
    this.addOutboxBytes(-entry.bytes);
  }

  async ackOutbox(batch: OutboxBatch, eventIds: readonly string[]): Promise<void> {
    for (const entry of this.leasedUnder(batch, eventIds)) this.removeLeased(entry);
  }

  async nackOutbox(
    batch: OutboxBatch,
    eventIds: readonly string[],
    backoffMs: number,
    replace: readonly OutboxEvent[] = [],
  ): Promise<void> {
    const replacements = new Map(replace.map((event) => [event.event_id, event]));
    for (const entry of this.leasedUnder(batch, eventIds)) {
      const id = entry.eventId;
      entry.leaseId = undefined;
      entry.availableAt = this.now() + backoffMs;
      const replacement = replacements.get(id);
      if (replacement) {
        entry.json = JSON.stringify(replacement);
        // Counted with room for a re-stamp when it was settled: a re-stamp fits in it.
        const bytes = Math.max(entry.bytes, outboxEntryBytes(id, entry.json));
        this.addOutboxBytes(bytes - entry.bytes);
        entry.bytes = bytes;
      }
      this.leased.delete(id);
    }
  }

  async deadLetterOutbox(
    batch: OutboxBatch,
    failures: readonly { eventId: string; reason: string }[],
  ): Promise<void> {
    const reasons = new Map(failures.map((failure) => [failure.eventId, failure.reason]));
    for (const entry of this.leasedUnder(batch, [...reasons.keys()])) {
      this.removeLeased(entry);
      const id = entry.eventId;
      const reason = reasons.get(id)!;
      const previous = this.deadLetters.get(id);
      if (previous) {
        this.deadLetters.delete(id);
        this.addOutboxBytes(-previous.bytes);
      }
      const deadLetter: StoredDeadLetter = {
        json: entry.json,
        reason,
        attempts: entry.attempts,
        deadAt: this.now(),
        bytes: deadLetterBytes(id, entry.json, reason),
      };
      this.deadLetters.set(id, deadLetter);
      this.addOutboxBytes(deadLetter.bytes);
      for (const [oldestId, oldest] of this.deadLetters) {
        if (this.deadLetters.size <= MAX_DEAD_LETTERS) break;
        this.deadLetters.delete(oldestId);
        this.addOutboxBytes(-oldest.bytes);
      }
    }
  }

  async outboxStats(): Promise<OutboxStats> {
    const now = this.now();
    let live = 0;
    for (const entry of this.leased.values()) if (entry.leaseExpiresAt > now) live += 1;
    return {
      waiting: this.outbox.size - live,
      leased: live,
      dead: this.deadLetters.size,
      bytes: this.outboxBytes,
      oldestEnqueuedAt: this.outbox.values().next().value?.enqueuedAt,
    };
  }

  async listDeadLetters(limit = 100): Promise<DeadLetter[]> {
    return [...this.deadLetters.values()].slice(0, limit).map(({ json, reason, attempts, deadAt }) => ({
      event: JSON.parse(json) as OutboxEvent,
      reason,
      attempts,
      deadAt,
    }));
  }

  async recordPayment(
    customerId: string,
    paymentId: string,
    amount: Money,
    paidAt: number,
  ): Promise<SpendChange> {
    const state = this.customer(customerId);
    const applied = !state.paymentIds.has(paymentId);
    if (applied) {
      state.paymentIds.add(paymentId);
      state.keptBytes += idBytes(paymentId);
      state.spend += amount;
      if (state.firstPaymentAt === undefined || paidAt < state.firstPaymentAt) state.firstPaymentAt = paidAt;
    }
    this.settled(state);
    return { applied, spend: state.spend, firstPaymentAt: state.firstPaymentAt };
  }

  async recordRefund(customerId: string, refundId: string, amount: Money): Promise<SpendChange> {
    const state = this.customer(customerId);
    const applied = !state.refundIds.has(refundId);
    if (applied) {
      state.refundIds.add(refundId);
      state.keptBytes += idBytes(refundId);
      state.spend -= amount;
    }
    this.settled(state);
    return { applied, spend: state.spend, firstPaymentAt: state.firstPaymentAt };
  }

  async getSpend(customerId: string): Promise<Spend> {
    const state = this.find(customerId);
    return { spend: state?.spend ?? 0n, firstPaymentAt: state?.firstPaymentAt };
  }

  async claimWebhook(webhookId: string, processingTtlMs: number): Promise<WebhookClaim> {
    const now = this.now();
    const record = this.webhooks.get(webhookId);
    if (record && record.expiresAt > now) return record.state;
    this.rememberWebhook(webhookId, { state: 'processing', expiresAt: now + processingTtlMs });
    return 'claimed';
  }

  async completeWebhook(webhookId: string, retentionMs: number): Promise<void> {
    this.rememberWebhook(webhookId, { state: 'done', expiresAt: this.now() + retentionMs });
  }

  private rememberWebhook(webhookId: string, record: WebhookRecord): void {
    if (!this.webhooks.has(webhookId)) this.bytes += webhookBytes(webhookId);
    this.webhooks.set(webhookId, record);
  }

  async releaseWebhook(webhookId: string): Promise<void> {
    if (this.webhooks.get(webhookId)?.state === 'processing') this.webhooks.delete(webhookId);
  }

  async putSubscription(customerId: string, subscription: SubscriptionState): Promise<boolean> {
    const state = this.customer(customerId);
    const current = state.subscriptions.get(subscription.subscriptionId);
    if (current && current.updatedAt > subscription.updatedAt) return false;
    state.keptBytes += subscriptionBytes(subscription) - (current ? subscriptionBytes(current) : 0);
    state.subscriptions.set(subscription.subscriptionId, { ...subscription });
    this.settled(state);
    return true;
  }

  async getSubscriptions(customerId: string): Promise<SubscriptionState[]> {
    const state = this.find(customerId);
    return state ? [...state.subscriptions.values()].map((subscription) => ({ ...subscription })) : [];
  }

  async getCustomerProfile(customerId: string): Promise<CustomerProfile> {
    return this.profileOf(this.find(customerId));
  }

  private profileOf(state: CustomerState | undefined): CustomerProfile {
    const subscriptions: SubscriptionState[] = [];
    const periodUsage = new Map<string, Record<string, bigint>>();
    for (const subscription of state?.subscriptions.values() ?? []) {
      subscriptions.push({ ...subscription });
      periodUsage.set(subscription.subscriptionId, this.usageOf(state!, subscriptionPeriod(subscription)));
    }
    return { spend: state?.spend ?? 0n, firstPaymentAt: state?.firstPaymentAt, subscriptions, periodUsage };
  }

  createRateLimiter(options: RateLimiterOptions): RateLimiterAbstract {
    return new RateLimiterMemory({
      keyPrefix: options.keyPrefix,
      points: options.points,
      duration: options.duration,
    });
  }

  async close(): Promise<void> {
    this.idle.clear();
    this.pinned.clear();
    this.webhooks.clear();
    this.bytes = this.fixedBytes + this.outboxBytes;
  }
}
