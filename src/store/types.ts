import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Money } from '../money.js';

/**
 * The one storage interface every middleware uses. Each method is a business operation that is
 * atomic on its own (one Lua script in Redis), never raw get/set.
 *
 * Conventions shared by every implementation:
 * - Money is a `bigint` of money units (see `money.ts`), stored exactly.
 * - Time is milliseconds since the epoch from the store's `now()` clock (injectable for tests),
 *   so expiries and leases can be tested without waiting.
 * - Expected outcomes ("not enough credits", "already claimed") are return values; only a
 *   backend failure throws, and then always a `StoreError`, within the store's deadline.
 * - Any string is a valid id (customer, reservation, webhook, event): braces, colons, spaces,
 *   unicode and `__proto__` included.
 */
export interface BillingStore {
  /** The store's clock, in ms since the epoch. */
  now(): number;

  // ── Balance view ────────────────────────────────────────────────────────────────────────────

  /** The customer's local balance view, or `undefined` when it has never been synced. */
  getBalance(customerId: string): Promise<BalanceView | undefined>;

  /**
   * Applies a balance read from Dodo, observed at `observedAt` (ms). The view becomes
   * `dodoBalance − pending` (usage settled here that Dodo may not have deducted yet, see
   * `docs/balance-sync.md`). An observation older than the one already applied is ignored
   * (`applied: false`), so a slow fetch never overwrites a newer one.
   */
  syncBalance(customerId: string, dodoBalance: Money, observedAt: number): Promise<BalanceSyncResult>;

  /**
   * Customers whose usage was settled at or after `since` (ms), most recently active first, at
   * most `limit` of them: who the reconciliation job checks against Dodo. `settle` records the
   * activity in its own atomic step; a store keeps a bounded number of customers (the most
   * recently active), so a very old activity may be forgotten.
   */
  recentCustomers(since: number, limit: number): Promise<RecentCustomer[]>;

  /**
   * Adds a signed amount to the balance view (a top-up, a refund's claw-back, a manual
   * adjustment), exactly once per `adjustmentId` (ids are kept `retentionMs`). A customer with
   * no view yet is left without one (`undefined`): the next request fetches it from Dodo.
   */
  adjustBalance(
    customerId: string,
    adjustmentId: string,
    delta: Money,
    retentionMs: number,
  ): Promise<BalanceView | undefined>;

  /**
   * Forces the next request to refetch the balance from Dodo: the view keeps its amounts but
   * reports `syncedAt: 0` until the next applied sync. The newest observation time is kept, so
   * a fetch that started before it is still ignored.
   */
  markBalanceStale(customerId: string): Promise<void>;

  /**
   * Records that Dodo has deducted `amount` of the usage settled here (a `credit.deducted`
   * webhook), lowering `pending` (never below zero) once per `deductionId` (the ledger entry's
   * id), remembered for `retentionMs`: a delivery processed again cannot lower it twice.
   */
  confirmDeducted(customerId: string, deductionId: string, amount: Money, retentionMs: number): Promise<void>;

  /**
   * Records credits that landed on the customer's balance (a `credit.added` ledger entry: a
   * purchase, an auto-recharge, a grant) as their last top-up, unless a newer one is recorded:
   * the greater `at`, then the greater `topUpId` (as UTF-8 bytes), wins, so webhooks retried or arriving out of
   * order leave the same answer in every process. The balance view reports it (`lastTopUp`),
   * so alerts can be set as fractions of it. Returns whether it was applied.
   */
  recordTopUp(customerId: string, topUp: TopUp): Promise<boolean>;

  // ── Admission ───────────────────────────────────────────────────────────────────────────────

  /**
   * Everything a request's admission must decide atomically, in one call (one round trip):
   * refuses a request id that is in flight or already settled; reads the customer's profile
   * (tiers, soft caps) when asked; picks the subscription that covers the request, and holds
   * its estimate against the plan's hard cap; holds credits — as much of `credits.max` as the
   * balance allows, at least `credits.min` — unless a subscription covers the request. All or
   * nothing: when anything is refused, nothing is held. What is held lives under the request
   * id until `settle` or `release` drops it, or its TTL expires.
   */
  admit(admission: Admission): Promise<AdmissionResult>;

  // ── Budgets per API key ─────────────────────────────────────────────────────────────────────

  /** Sets (or, with `undefined`, removes) the budget of a customer's key. */
  setBudget(customerId: string, key: string, limits: BudgetLimits | undefined): Promise<void>;

  /** A key's budget and its current period's spend and holds; `undefined` when none is set. */
  getBudget(customerId: string, key: string, periods: BudgetPeriods): Promise<BudgetView | undefined>;

  // ── Auto-recharge ───────────────────────────────────────────────────────────────────────────

  /**
   * Sets a customer's auto-recharge (or turns it off with `undefined`). Setting it re-enables a
   * customer that failures disabled (their count starts again); the month's recharged total
   * and a recharge in flight are kept.
   */
  setAutoRecharge(customerId: string, settings: AutoRechargeSettings | undefined): Promise<void>;

  /** The customer's auto-recharge and its state in `month` (`2026-11`); `undefined` when off. */
  getAutoRecharge(customerId: string, month: string): Promise<AutoRechargeState | undefined>;

  /**
   * Starts a recharge when the customer's `available` balance is below their threshold — one
   * per customer at a time, across every process: the attempt holds a lease until
   * `finishRecharge`. Its amount is counted in `month`'s total at once, so two attempts can
   * never pass the monthly limit together; one that would is not started (`monthly_limit`,
   * `first` once per month). A lease that lapsed unfinished is taken again under the same
   * attempt (`resume`): its charge may have reached Dodo, so it is looked up, never remade.
   */
  beginRecharge(customerId: string, start: RechargeStart): Promise<RechargeBegin>;

  /**
   * Ends the attempt holding the lease, once: a success clears the failure count; a failure
   * gives its amount back to the month and counts one failure; `requires_action` counts one
   * failure and keeps its amount (the customer may still complete it). At `maxFailures`
   * consecutive failures auto-recharge is disabled until set again. Another attempt id
   * (or none in flight) changes nothing (`applied: false`).
   */
  finishRecharge(customerId: string, finish: RechargeFinish): Promise<RechargeFinished>;

  // ── Reservations ────────────────────────────────────────────────────────────────────────────

  /**
   * Atomically reserves `amount` against `balance − live reservations`. Refused when the view
   * is missing (`reason: 'no_balance'`, the caller syncs and retries), or when available is zero
   * or less, or less than `amount` (`reason: 'insufficient'`). The reservation expires on its
   * own at `now() + ttlMs`, so a crashed process cannot hold money forever. Reserving an id that
   * is already live replaces it.
   */
  reserve(customerId: string, reservationId: string, amount: Money, ttlMs: number): Promise<ReserveResult>;

  /**
   * Releases a reservation and every hold of the request (`admit`'s cap hold); `true` when
   * they were live (so a double release changes nothing).
   */
  release(customerId: string, reservationId: string): Promise<boolean>;

  /**
   * One atomic operation at the end of a request: releases the reservation (and every hold of
   * the request under the same id), deducts `cost`
   * from the balance view (adding it to `pending`), appends `events` to the outbox and adds
   * `usage` to the customer's counters for `usage.period`, and marks the customer recently active
   * (`recentCustomers`). Exactly once per `settlementId`
   * (kept `retentionMs`): a repeated call returns `{ applied: false }` and changes nothing.
   */
  settle(settlement: Settlement): Promise<SettleResult>;

  // ── Usage counters per billing period ───────────────────────────────────────────────────────

  /** Adds to the customer's counters for a period (when usage is counted outside `settle`). */
  addUsage(customerId: string, usage: UsageIncrement): Promise<void>;

  /** The customer's counters for `period` (an empty object when none). */
  getUsage(customerId: string, period: string): Promise<Record<string, bigint>>;

  // ── Outbox of usage events bound for Dodo ───────────────────────────────────────────────────

  /**
   * Claims up to `max` events that are due (`availableAt <= now()`), oldest first, under a
   * lease of `leaseMs`. Events whose lease expired (a worker died) are due again first. Each
   * claimed event's `attempts` is incremented.
   */
  claimOutbox(max: number, leaseMs: number): Promise<OutboxBatch>;

  /** Removes delivered events of a batch. Unknown ids are ignored. */
  ackOutbox(batch: OutboxBatch, eventIds: readonly string[]): Promise<void>;

  /**
   * Returns events of a batch to the outbox, due again at `now() + backoffMs`. `replace` may
   * carry rewritten events (e.g. re-stamped timestamps) under the same ids.
   */
  nackOutbox(
    batch: OutboxBatch,
    eventIds: readonly string[],
    backoffMs: number,
    replace?: readonly OutboxEvent[],
  ): Promise<void>;

  /** Moves events of a batch to the dead-letter list with the reason Dodo gave. */
  deadLetterOutbox(
    batch: OutboxBatch,
    failures: readonly { eventId: string; reason: string }[],
  ): Promise<void>;

  /**
   * The outbox's depth: counts of events waiting (due or not), leased and dead-lettered, the
   * bytes they take, and when the oldest event still to deliver was enqueued (alert on its age:
   * Dodo refuses events older than an hour, see `docs/reliability.md`).
   */
  outboxStats(): Promise<OutboxStats>;

  /** Dead-lettered events, oldest first. */
  listDeadLetters(limit?: number): Promise<DeadLetter[]>;

  // ── Lifetime spend (rate tiers) ─────────────────────────────────────────────────────────────

  /**
   * Adds a successful payment to lifetime spend, once per `paymentId`; the first payment date
   * is the earliest `paidAt` seen. Returns whether it was applied and the resulting spend.
   */
  recordPayment(customerId: string, paymentId: string, amount: Money, paidAt: number): Promise<SpendChange>;

  /** Subtracts a refund (or lost dispute) from lifetime spend, once per `refundId`. */
  recordRefund(customerId: string, refundId: string, amount: Money): Promise<SpendChange>;

  /** Lifetime spend and first payment date (`{ spend: 0n, firstPaymentAt: undefined }` when none). */
  getSpend(customerId: string): Promise<Spend>;

  // ── Webhook deliveries (exactly once per webhook-id) ────────────────────────────────────────

  /**
   * Claims a webhook id for processing. `'claimed'`: the caller runs it, then calls
   * `completeWebhook` or `releaseWebhook`. `'processing'`: another delivery holds it (the claim
   * lapses after `processingTtlMs` if its holder died). `'done'`: already applied.
   */
  claimWebhook(webhookId: string, processingTtlMs: number): Promise<WebhookClaim>;

  /** Marks a claimed id done; it stays deduplicated for `retentionMs` (Dodo retries for days). */
  completeWebhook(webhookId: string, retentionMs: number): Promise<void>;

  /** Gives a claimed id up after a failure, so the next delivery runs it again. */
  releaseWebhook(webhookId: string): Promise<void>;

  // ── Subscription plans (soft caps) ──────────────────────────────────────────────────────────

  /**
   * Stores a subscription's state unless a newer one (`updatedAt`) is already stored; returns
   * whether it was applied. Webhooks arrive out of order; the newest wins.
   */
  putSubscription(customerId: string, subscription: SubscriptionState): Promise<boolean>;

  /** All subscriptions known for the customer. */
  getSubscriptions(customerId: string): Promise<SubscriptionState[]>;

  /**
   * Lifetime spend, first payment date, subscriptions and the usage of each subscription's
   * current period in one read (one round trip), for the middlewares that need them on every
   * request (tiers, soft caps).
   */
  getCustomerProfile(customerId: string): Promise<CustomerProfile>;

  // ── Rate limiting ───────────────────────────────────────────────────────────────────────────

  /** A `rate-limiter-flexible` limiter on this store's backend (memory or Redis). */
  createRateLimiter(options: RateLimiterOptions): RateLimiterAbstract;

  /** Stops timers and releases what the store holds (not an injected Redis client). */
  close(): Promise<void>;
}

/** A customer's local balance view. */
export interface BalanceView {
  /** Local view of the balance: last Dodo balance − usage settled since + adjustments since. */
  balance: Money;
  /** Sum of live reservations. */
  reserved: Money;
  /** `balance − reserved`. */
  available: Money;
  /** Usage settled locally that Dodo has not confirmed deducting. */
  pending: Money;
  /** When the last Dodo balance applied was observed; 0 when the view must be refetched. */
  syncedAt: number;
  /** The amount of the customer's last top-up (`recordTopUp`), when one was recorded. */
  lastTopUp?: Money;
}

/** Credits that landed on a customer's balance (`BillingStore.recordTopUp`). */
export interface TopUp {
  /** The ledger entry's id. */
  topUpId: string;
  /** What it added, in money units (positive). */
  amount: Money;
  /** When it landed (ms): the newest top-up is the last one. */
  at: number;
}

export interface BalanceSyncResult {
  applied: boolean;
  view: BalanceView;
  /**
   * When applied: the balance the view had just before, in the same atomic step (`undefined`
   * when there was no view). `view.balance − previousBalance` is what the observation corrected,
   * which no settlement running at the same time can blur (the reconciliation job reports it).
   */
  previousBalance?: Money;
}

/** A customer whose usage was settled recently (`BillingStore.recentCustomers`). */
export interface RecentCustomer {
  customerId: string;
  /** When their last settlement was applied (ms, the store's clock). */
  activeAt: number;
}

/** A request's admission, as `BillingStore.admit` takes it. */
export interface Admission {
  customerId: string;
  /** The request's id: its holds live under it; an id in flight or settled is a duplicate. */
  requestId: string;
  /** Replace what this request id already holds instead of refusing it (a re-admission). */
  replace?: boolean;
  /** Read the customer's profile (spend, subscriptions, period usage) in the same call. */
  readProfile: boolean;
  /** Credits to hold, unless a subscription covers the request. */
  credits?: CreditHold;
  /** Subscription plans: a subscription to one of them covers the request, and may cap it. */
  plans?: AdmissionPlans;
  /**
   * The API key (or project) the request is billed to: its budget, when one is set, holds the
   * request's cost alongside the credits, and refuses it once spend and holds reach the limit.
   */
  budget?: BudgetCharge;
  /** How long the holds live if nobody settles or releases them (ms). */
  ttlMs: number;
}

export interface CreditHold {
  /** Hold `max` when the balance covers it, else as much as it covers, refusing below `min`. */
  min: Money;
  max: Money;
  /** How far below zero the available balance may go for this hold. */
  overdraft: Money;
}

export interface AdmissionPlans {
  /** Subscription statuses that count as subscribed. */
  activeStatuses: readonly string[];
  /** Plans by Dodo product id. */
  byProduct: ReadonlyMap<string, AdmissionPlan>;
  /** What the request may use at most, held against a hard cap in the cap's unit. */
  estimate: { tokens: bigint; cost: Money };
}

export interface AdmissionPlan {
  /** A covered request still holds (and spends) credits. */
  chargeCredits: boolean;
  /** Refuse once the period's usage plus what is held would pass this. */
  hardCap?: { unit: 'tokens' | 'cost'; amount: bigint; perSeat: boolean };
}

/** A request's charge against its key's budget. */
export interface BudgetCharge {
  key: string;
  /** What the request may cost at most, held against the budget. */
  amount: Money;
  /** The current periods' names, for a budget counted per month or per day (`budgetPeriods`). */
  periods: BudgetPeriods;
}

export interface BudgetPeriods {
  month: string;
  day: string;
}

/** A budget set for a key: per calendar month (UTC) by default, or per day. */
export interface BudgetLimits {
  /** Refuse the key's requests once its spend and holds reach this. */
  hard?: Money;
  /** Past this, requests pass with a warning header and an alert fires. */
  soft?: Money;
  period: 'month' | 'day';
}

/** A key's budget and what it spent in the current period. */
export interface BudgetView extends BudgetLimits {
  key: string;
  /** The current period's name (`2026-11`, `2026-11-30`). */
  periodId: string;
  /** Settled spend of the period. */
  spent: Money;
  /** What requests in flight hold against it. */
  held: Money;
}

/** What admitting a request found of its key's budget. */
export interface BudgetOutcome {
  /** Spend settled in the period plus what requests in flight hold, before this request. */
  used: Money;
  hard?: Money;
  soft?: Money;
  /** The usage period the request's cost is counted in (give it to the settlement). */
  period: string;
}

export interface AdmissionResult {
  /** The request id is already in flight or was settled: nothing was held. */
  duplicate?: 'in_flight' | 'settled';
  /** When `readProfile` was asked. */
  profile?: CustomerProfile;
  /** The subscription that covers the request: the newest active one to a plan of `plans`. */
  subscription?: SubscriptionState;
  /** The hard cap refused the request: nothing was held. */
  capped?: { unit: 'tokens' | 'cost'; used: bigint; limit: bigint };
  /** The key's budget, when the admission named a key with a budget. */
  budget?: BudgetOutcome;
  /** The key's hard budget refused the request: nothing was held. */
  budgetExceeded?: boolean;
  /** The credit hold; `undefined` when none was asked, or a subscription covers the request. */
  credits: CreditOutcome | undefined;
}

export type CreditOutcome =
  | { ok: true; reserved: Money; available: Money; syncedAt: number }
  | { ok: false; reason: 'insufficient'; available: Money; syncedAt: number }
  | { ok: false; reason: 'no_balance' };

export type ReserveResult =
  | { ok: true; available: Money; syncedAt: number }
  | { ok: false; reason: 'insufficient'; available: Money; syncedAt: number }
  | { ok: false; reason: 'no_balance' };

/** What one request's end settles, atomically. */
export interface Settlement {
  customerId: string;
  /** The reservation to release (may already be gone: expired or released). */
  reservationId?: string;
  /** Exactly-once key for this settlement. */
  settlementId: string;
  /** Actual cost, deducted from the balance view. */
  cost: Money;
  /** Usage events bound for Dodo (their `customer_id` is `customerId`). */
  events: readonly OutboxEvent[];
  /**
   * Counters to add, each to its period: the customer's billing period, and the period of the
   * key's budget when the request was billed to a key with one.
   */
  usage?: readonly UsageIncrement[];
  /** How long the settlement id is remembered. */
  retentionMs: number;
}

export interface SettleResult {
  applied: boolean;
  /** The balance view after settling (undefined when the customer has no view). */
  view: BalanceView | undefined;
  /**
   * When applied: the `cost` counter of each of the settlement's `usage` periods after it, in
   * their order (0 for a period that counts no cost). Alerts read a budget's crossing from it.
   */
  costAfter?: readonly bigint[];
}

export interface UsageIncrement {
  /** Period key, e.g. `2026-11` or a subscription's `previous_billing_date`. */
  period: string;
  /** Counter name → amount to add (tokens, money units…). */
  counters: Readonly<Record<string, bigint>>;
  /** How long the period's counters are kept after their last change. */
  ttlMs: number;
}

/** A usage event as Dodo's `usageEvents.ingest` takes it. */
export interface OutboxEvent {
  event_id: string;
  customer_id: string;
  event_name: string;
  /** RFC 3339 timestamp. */
  timestamp: string;
  metadata: Record<string, string | number | boolean>;
}

/** An event claimed from the outbox. */
export interface ClaimedEvent {
  event: OutboxEvent;
  /** Delivery attempts so far, this claim included. */
  attempts: number;
  /** When it first entered the outbox (ms). */
  enqueuedAt: number;
}

export interface OutboxBatch {
  /** Lease token: ack/nack/dead-letter only act on events still leased under it. */
  leaseId: string;
  events: ClaimedEvent[];
}

export interface OutboxStats {
  /** Events to deliver that no worker holds: due, backing off, or whose lease lapsed. */
  waiting: number;
  /** Events a worker holds under a running lease. */
  leased: number;
  /** Events Dodo refused, kept in the dead letters. */
  dead: number;
  /**
   * Approximate bytes the outbox takes, dead letters included: MemoryStore's own accounting, or
   * what Redis reports (`MEMORY USAGE`, sampled) for the outbox keys. 0 when it is empty.
   */
  bytes: number;
  /**
   * When the oldest event still to deliver (waiting or leased) was enqueued (ms, the store's
   * clock); `undefined` when there is none.
   */
  oldestEnqueuedAt: number | undefined;
}

export interface DeadLetter {
  event: OutboxEvent;
  reason: string;
  attempts: number;
  deadAt: number;
}

export interface Spend {
  spend: Money;
  firstPaymentAt: number | undefined;
}

/** What the rate tiers and soft caps read about a customer on every request. */
export interface CustomerProfile extends Spend {
  subscriptions: SubscriptionState[];
  /**
   * The counters of each subscription's current period (`subscriptionPeriod`), by subscription
   * id, as `getUsage` reads them (empty when nothing was counted yet or the period expired).
   */
  periodUsage: Map<string, Record<string, bigint>>;
}

export interface SpendChange extends Spend {
  applied: boolean;
}

export type WebhookClaim = 'claimed' | 'processing' | 'done';

/** A subscription's state as the webhooks describe it. */
export interface SubscriptionState {
  subscriptionId: string;
  productId: string;
  /** Dodo's status: `active`, `past_due`, `on_hold`, `paused`, `cancelled`, `expired`, `failed`, `pending`. */
  status: string;
  /** A `past_due` subscription's grace deadline (ms, Dodo's `past_due_ends_at`), when given. */
  graceEndsAt?: number;
  /** Seats: the subscription's quantity (or a seat add-on's quantity). */
  quantity: number;
  /** Current billing period start (ms), from `previous_billing_date`. */
  periodStart: number;
  /** Current billing period end (ms), from `next_billing_date`. */
  periodEnd: number;
  /** Version: the webhook's timestamp (ms); an older update never overwrites a newer one. */
  updatedAt: number;
}

export interface RateLimiterOptions {
  /** Namespace of the limiter's keys. */
  keyPrefix: string;
  /** Points per window. */
  points: number;
  /** Window length in seconds. */
  duration: number;
  /** An in-process limiter used while the backend is failing. */
  insuranceLimiter?: RateLimiterAbstract;
}

/** A customer's auto-recharge, as they opted in (OpenAI's three fields), in money units. */
export interface AutoRechargeSettings {
  /** Recharge when the available balance falls below this. */
  threshold: Money;
  /** What one recharge charges and credits. */
  amount: Money;
  /** What recharges may charge in one calendar month (UTC), at most. */
  monthlyLimit: Money;
}

export interface AutoRechargeState extends AutoRechargeSettings {
  /** The month asked for (`2026-11`). */
  month: string;
  /** What recharges started this month counted against the limit (failed ones given back). */
  recharged: Money;
  /** Consecutive failed (or `requires_action`) recharges. */
  failures: number;
  /** Disabled by failures, until set again. */
  disabled: boolean;
  /** The attempt holding the lease, if any (its lease may have lapsed). */
  inFlight?: { attemptId: string; amount: Money; leaseUntil: number };
}

export interface RechargeStart {
  /** The new attempt's id: unique, it travels with the charge to Dodo. */
  attemptId: string;
  /** The customer's available balance (balance − reservations) that prompted it. */
  available: Money;
  /** The current month (`2026-11`, UTC). */
  month: string;
  /** How long the attempt holds the customer's recharge lock unless finished. */
  leaseMs: number;
}

export type RechargeBegin =
  | { status: 'started'; attemptId: string; amount: Money }
  /** An attempt whose lease lapsed unfinished, leased again: find out what its charge did. */
  | { status: 'resume'; attemptId: string; amount: Money }
  | { status: 'monthly_limit'; recharged: Money; monthlyLimit: Money; first: boolean }
  /**
   * `cooling`: a recharge succeeded less than its `cooldownMs` ago — a balance read before its
   * credits landed must not start another.
   */
  | { status: 'in_flight' | 'cooling' | 'off' | 'disabled' | 'above_threshold' };

export interface RechargeFinish {
  attemptId: string;
  outcome: 'succeeded' | 'failed' | 'requires_action';
  /** Consecutive failures that disable auto-recharge. */
  maxFailures: number;
  /** After a success, how long no other attempt may start (`beginRecharge` answers `cooling`). */
  cooldownMs: number;
}

export interface RechargeFinished {
  applied: boolean;
  failures: number;
  disabled: boolean;
}
