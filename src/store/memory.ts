import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { type RateLimiterAbstract, RateLimiterMemory } from 'rate-limiter-flexible';
import { ConfigError } from '../errors.js';
import type { Money } from '../money.js';
import { coveringSubscription, hardCapLimit } from './admission.js';
import { type CapHold, Reservations } from './memory-reservations.js';
import { subscriptionPeriod } from './subscription-period.js';
import type {
  Admission,
  AdmissionResult,
  BalanceSyncResult,
  BalanceView,
  BillingStore,
  ClaimedEvent,
  CreditOutcome,
  CustomerProfile,
  DeadLetter,
  OutboxBatch,
  OutboxEvent,
  OutboxStats,
  RateLimiterOptions,
  ReserveResult,
  Settlement,
  SettleResult,
  Spend,
  SpendChange,
  SubscriptionState,
  UsageIncrement,
  WebhookClaim,
} from './types.js';

export interface MemoryStoreOptions {
  /**
   * Most customers kept; the least recently used is forgotten beyond it (its balance is then
   * refetched from Dodo). Bounds memory however many customers call.
   * @default 100_000
   */
  maxCustomers?: number;
  /**
   * Most webhook ids remembered for deduplication (each also expires after its retention).
   * @default 100_000
   */
  maxWebhookIds?: number;
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
}

/** Everything kept for one customer: evicted together, so one bound covers it all. */
interface CustomerState {
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
  usage: Map<string, UsagePeriod>;
}

interface OutboxEntry {
  event: OutboxEvent;
  attempts: number;
  enqueuedAt: number;
  availableAt: number;
  /** Set while leased. */
  leaseId: string | undefined;
  leaseExpiresAt: number;
}

interface WebhookRecord {
  state: 'processing' | 'done';
  expiresAt: number;
}

/** Settlement and adjustment ids remembered per customer, at most (the oldest go first). */
const MAX_APPLIED_IDS_PER_CUSTOMER = 1_000_000;

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

/**
 * A `BillingStore` in this process's memory, bounded with `lru-cache`. For one process and for
 * tests; several processes or machines need `RedisStore`. Each operation runs synchronously
 * inside one call, so it is atomic with respect to every other request of the process.
 */
export class MemoryStore implements BillingStore {
  readonly now: () => number;
  private readonly customers: LRUCache<string, CustomerState>;
  private readonly webhooks: LRUCache<string, WebhookRecord>;
  /**
   * Events waiting for delivery, in insertion order (oldest first), and events leased to a
   * flusher: kept apart so that a claim walks the leases, not a backlog of waiting events.
   */
  private readonly waiting = new Map<string, OutboxEntry>();
  private readonly leased = new Map<string, OutboxEntry>();
  private readonly deadLetters = new Map<string, DeadLetter>();

  constructor(options: Readonly<MemoryStoreOptions> = {}) {
    this.now = options.now ?? Date.now;
    this.customers = new LRUCache({ max: positiveInteger(options.maxCustomers, 'maxCustomers', 100_000) });
    this.webhooks = new LRUCache({ max: positiveInteger(options.maxWebhookIds, 'maxWebhookIds', 100_000) });
  }

  private customer(customerId: string): CustomerState {
    let state = this.customers.get(customerId);
    if (!state) {
      state = {
        balance: undefined,
        pending: 0n,
        reservations: new Reservations(),
        appliedIds: new Map(),
        spend: 0n,
        firstPaymentAt: undefined,
        paymentIds: new Set(),
        refundIds: new Set(),
        subscriptions: new Map(),
        usage: new Map(),
      };
      this.customers.set(customerId, state);
    }
    return state;
  }

  /** Applies `id` once: true the first time, false while it is remembered. */
  private applyOnce(state: CustomerState, id: string, retentionMs: number): boolean {
    const now = this.now();
    const forgetAt = state.appliedIds.get(id);
    if (forgetAt !== undefined && forgetAt > now) return false;
    state.appliedIds.delete(id);
    state.appliedIds.set(id, now + retentionMs);
    // Ids are kept in insertion order with (mostly) one retention, so the expired ones are at
    // the front: dropping them from there keeps this O(1) per call.
    for (const [oldest, at] of state.appliedIds) {
      if (at > now && state.appliedIds.size <= MAX_APPLIED_IDS_PER_CUSTOMER) break;
      state.appliedIds.delete(oldest);
    }
    return true;
  }

  private view(state: CustomerState): BalanceView | undefined {
    if (!state.balance) return undefined;
    const reserved = state.reservations.live(this.now());
    const { balance, syncedAt, stale } = state.balance;
    return {
      balance,
      reserved,
      available: balance - reserved,
      pending: state.pending,
      syncedAt: stale ? 0 : syncedAt,
    };
  }

  async getBalance(customerId: string): Promise<BalanceView | undefined> {
    const state = this.customers.get(customerId);
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
    return { applied, view: this.view(state)! };
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
    return this.view(state);
  }

  async markBalanceStale(customerId: string): Promise<void> {
    const balance = this.customers.get(customerId)?.balance;
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
    if (!this.applyOnce(state, `deducted:${deductionId}`, retentionMs)) return;
    state.pending = state.pending > amount ? state.pending - amount : 0n;
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    const { customerId, requestId } = admission;
    const now = this.now();
    const existing = this.customers.get(customerId);
    // A re-admission replaces what the request held; refused, it then holds nothing.
    if (existing && admission.replace) existing.reservations.remove(requestId);
    else if (existing) {
      if (existing.reservations.has(requestId, now)) return { duplicate: 'in_flight', credits: undefined };
      const forgetAt = existing.appliedIds.get(`settle:${requestId}`);
      if (forgetAt !== undefined && forgetAt > now) return { duplicate: 'settled', credits: undefined };
    }
    const result: AdmissionResult = { credits: undefined };
    if (admission.readProfile) result.profile = this.profileOf(existing);
    let chargeCredits = true;
    let cap: CapHold | undefined;
    const covering =
      admission.plans && existing && coveringSubscription(existing.subscriptions.values(), admission.plans);
    if (covering) {
      const { subscription, plan } = covering;
      result.subscription = { ...subscription };
      chargeCredits = plan.chargeCredits;
      if (plan.hardCap) {
        const { unit } = plan.hardCap;
        const period = subscriptionPeriod(subscription);
        const limit = hardCapLimit(plan.hardCap, subscription);
        const used =
          (this.usageOf(existing!, period)[unit] ?? 0n) + existing!.reservations.capHeld(period, unit, now);
        // Refused once used and held reach the cap: passed by no more than one request's estimate.
        if (used >= limit) return { ...result, capped: { unit, used, limit } };
        cap = { period, unit, amount: admission.plans!.estimate[unit] };
      }
    }
    let credit: Money = 0n;
    if (admission.credits && chargeCredits) {
      const outcome = this.creditOutcome(existing, admission, now);
      result.credits = outcome;
      if (!outcome.ok) return result;
      credit = outcome.reserved;
    }
    if (credit > 0n || cap) {
      this.customer(customerId).reservations.hold(requestId, credit, now + admission.ttlMs, cap);
    }
    return result;
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

  async reserve(
    customerId: string,
    reservationId: string,
    amount: Money,
    ttlMs: number,
  ): Promise<ReserveResult> {
    const state = this.customers.get(customerId);
    if (!state?.balance) return { ok: false, reason: 'no_balance' };
    const now = this.now();
    state.reservations.remove(reservationId);
    const available = state.balance.balance - state.reservations.live(now);
    const syncedAt = state.balance.stale ? 0 : state.balance.syncedAt;
    if (available <= 0n || available < amount)
      return { ok: false, reason: 'insufficient', available, syncedAt };
    state.reservations.hold(reservationId, amount, now + ttlMs);
    return { ok: true, available: available - amount, syncedAt };
  }

  async release(customerId: string, reservationId: string): Promise<boolean> {
    const state = this.customers.get(customerId);
    if (!state) return false;
    return state.reservations.remove(reservationId, this.now());
  }

  async settle(settlement: Settlement): Promise<SettleResult> {
    const state = this.customer(settlement.customerId);
    if (!this.applyOnce(state, `settle:${settlement.settlementId}`, settlement.retentionMs)) {
      return { applied: false, view: this.view(state) };
    }
    if (settlement.reservationId !== undefined) state.reservations.remove(settlement.reservationId);
    if (state.balance) state.balance.balance -= settlement.cost;
    state.pending += settlement.cost;
    const now = this.now();
    for (const event of settlement.events) {
      if (this.waiting.has(event.event_id) || this.leased.has(event.event_id)) continue;
      this.waiting.set(event.event_id, {
        event,
        attempts: 0,
        enqueuedAt: now,
        availableAt: now,
        leaseId: undefined,
        leaseExpiresAt: 0,
      });
    }
    if (settlement.usage) this.addUsageTo(state, settlement.usage);
    return { applied: true, view: this.view(state) };
  }

  private addUsageTo(state: CustomerState, usage: UsageIncrement): void {
    const now = this.now();
    let period = state.usage.get(usage.period);
    if (!period || period.expiresAt <= now) {
      period = { counters: new Map(), expiresAt: 0 };
      state.usage.set(usage.period, period);
    }
    period.expiresAt = now + usage.ttlMs;
    for (const [name, amount] of Object.entries(usage.counters)) {
      period.counters.set(name, (period.counters.get(name) ?? 0n) + amount);
    }
  }

  async addUsage(customerId: string, usage: UsageIncrement): Promise<void> {
    this.addUsageTo(this.customer(customerId), usage);
  }

  async getUsage(customerId: string, period: string): Promise<Record<string, bigint>> {
    const state = this.customers.get(customerId);
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
      events.push({ event: entry.event, attempts: entry.attempts, enqueuedAt: entry.enqueuedAt });
    };
    // Events whose lease lapsed (their worker died) go first: they are the oldest.
    for (const entry of this.leased.values()) {
      if (events.length >= max) break;
      if (entry.leaseExpiresAt <= now) take(entry);
    }
    for (const [id, entry] of this.waiting) {
      if (events.length >= max) break;
      if (entry.availableAt > now) continue;
      this.waiting.delete(id);
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

  async ackOutbox(batch: OutboxBatch, eventIds: readonly string[]): Promise<void> {
    for (const entry of this.leasedUnder(batch, eventIds)) this.leased.delete(entry.event.event_id);
  }

  async nackOutbox(
    batch: OutboxBatch,
    eventIds: readonly string[],
    backoffMs: number,
    replace: readonly OutboxEvent[] = [],
  ): Promise<void> {
    const replacements = new Map(replace.map((event) => [event.event_id, event]));
    for (const entry of this.leasedUnder(batch, eventIds)) {
      const id = entry.event.event_id;
      entry.leaseId = undefined;
      entry.availableAt = this.now() + backoffMs;
      entry.event = replacements.get(id) ?? entry.event;
      this.leased.delete(id);
      this.waiting.set(id, entry);
    }
  }

  async deadLetterOutbox(
    batch: OutboxBatch,
    failures: readonly { eventId: string; reason: string }[],
  ): Promise<void> {
    const reasons = new Map(failures.map((failure) => [failure.eventId, failure.reason]));
    for (const entry of this.leasedUnder(batch, [...reasons.keys()])) {
      this.leased.delete(entry.event.event_id);
      this.deadLetters.set(entry.event.event_id, {
        event: entry.event,
        reason: reasons.get(entry.event.event_id)!,
        attempts: entry.attempts,
        deadAt: this.now(),
      });
    }
  }

  async outboxStats(): Promise<OutboxStats> {
    const now = this.now();
    let live = 0;
    for (const entry of this.leased.values()) if (entry.leaseExpiresAt > now) live += 1;
    return {
      waiting: this.waiting.size + this.leased.size - live,
      leased: live,
      dead: this.deadLetters.size,
    };
  }

  async listDeadLetters(limit = 100): Promise<DeadLetter[]> {
    return [...this.deadLetters.values()].slice(0, limit);
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
      state.spend += amount;
      if (state.firstPaymentAt === undefined || paidAt < state.firstPaymentAt) state.firstPaymentAt = paidAt;
    }
    return { applied, spend: state.spend, firstPaymentAt: state.firstPaymentAt };
  }

  async recordRefund(customerId: string, refundId: string, amount: Money): Promise<SpendChange> {
    const state = this.customer(customerId);
    const applied = !state.refundIds.has(refundId);
    if (applied) {
      state.refundIds.add(refundId);
      state.spend -= amount;
    }
    return { applied, spend: state.spend, firstPaymentAt: state.firstPaymentAt };
  }

  async getSpend(customerId: string): Promise<Spend> {
    const state = this.customers.get(customerId);
    return { spend: state?.spend ?? 0n, firstPaymentAt: state?.firstPaymentAt };
  }

  async claimWebhook(webhookId: string, processingTtlMs: number): Promise<WebhookClaim> {
    const now = this.now();
    const record = this.webhooks.get(webhookId);
    if (record && record.expiresAt > now) return record.state;
    this.webhooks.set(webhookId, { state: 'processing', expiresAt: now + processingTtlMs });
    return 'claimed';
  }

  async completeWebhook(webhookId: string, retentionMs: number): Promise<void> {
    this.webhooks.set(webhookId, { state: 'done', expiresAt: this.now() + retentionMs });
  }

  async releaseWebhook(webhookId: string): Promise<void> {
    if (this.webhooks.get(webhookId)?.state === 'processing') this.webhooks.delete(webhookId);
  }

  async putSubscription(customerId: string, subscription: SubscriptionState): Promise<boolean> {
    const state = this.customer(customerId);
    const current = state.subscriptions.get(subscription.subscriptionId);
    if (current && current.updatedAt > subscription.updatedAt) return false;
    state.subscriptions.set(subscription.subscriptionId, { ...subscription });
    return true;
  }

  async getSubscriptions(customerId: string): Promise<SubscriptionState[]> {
    const state = this.customers.get(customerId);
    return state ? [...state.subscriptions.values()].map((subscription) => ({ ...subscription })) : [];
  }

  async getCustomerProfile(customerId: string): Promise<CustomerProfile> {
    return this.profileOf(this.customers.get(customerId));
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
    this.customers.clear();
    this.webhooks.clear();
  }
}
