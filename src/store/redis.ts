import { randomUUID } from 'node:crypto';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Money } from '../money.js';
import { type Attempt, RedisCalls } from './redis-calls.js';
import type { RedisConnection } from './redis-client.js';
import { type CustomerKeys, type OutboxKeys, RedisKeyspace } from './redis-keys.js';
import { type RedisStoreOptions, resolveRedisStoreOptions } from './redis-options.js';
import { RedisStoreRateLimiter } from './redis-rate-limiter.js';
import { SCRIPT_NAMES, type ScriptArgument, type ScriptCommand, type ScriptName } from './redis-scripts.js';

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

export type { NodeRedisClient, NodeRedisCluster, RedisStoreOptions } from './redis-options.js';

/**
 * Extra real time Redis keeps a key past its logical lifetime. Logical expiry always comes from
 * `now()`; PEXPIRE only collects garbage, so it must never fire first, even with a fake clock.
 */
const GC_MARGIN_MS = 60 * 60 * 1000;

const DEFAULT_DEAD_LETTER_LIMIT = 100;
/**
 * Recently active customers kept per shard (the most recent): bounded, so a settlement's ZADD
 * stays O(log n) and the set never grows with the customer base; 16 shards keep 160,000.
 */
const RECENT_PER_SHARD = 10_000;
/** Peek-then-claim rounds of one `claimOutbox` before it returns what it has (races only). */
const MAX_CLAIM_ROUNDS = 20;

function gcTtl(logicalTtlMs: number): number {
  return Math.ceil(Math.max(0, logicalTtlMs)) + GC_MARGIN_MS;
}

function customerArgs(keys: CustomerKeys): string[] {
  return [keys.balance, keys.reservationExpiries, keys.reservationAmounts];
}

/** The keys of the scripts that move an event between outbox states. */
function outboxArgs(keys: OutboxKeys): string[] {
  return [keys.ready, keys.delayed, keys.leased, keys.meta, keys.events];
}

/** An event a shard offered to `claimOutbox`. */
interface OutboxCandidate {
  shard: number;
  member: string;
  enqueuedAt: number;
}

/** Parses a script's view reply (`[]` when there is no view). */
function toView(reply: unknown): BalanceView | undefined {
  const fields = reply as string[];
  if (fields.length === 0) return undefined;
  const [balanceText, reservedText, pendingText, syncedAtText, topUpText] = fields as [
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  const balance = BigInt(balanceText);
  const reserved = BigInt(reservedText);
  const view: BalanceView = {
    balance,
    reserved,
    available: balance - reserved,
    pending: BigInt(pendingText),
    syncedAt: Number(syncedAtText),
  };
  if (topUpText) view.lastTopUp = BigInt(topUpText);
  return view;
}

function toSpendChange(reply: unknown): SpendChange {
  const [applied, spend, firstPaymentAt] = reply as [number, string, string];
  return {
    applied: applied === 1,
    spend: BigInt(spend),
    firstPaymentAt: firstPaymentAt === '' ? undefined : Number(firstPaymentAt),
  };
}

interface DeadLetterRecord {
  event: string;
  reason: string;
  attempts: number;
  deadAt: string;
  member: string;
}

/**
 * A `BillingStore` in Redis, for several processes or machines; works on a single Redis and on
 * Redis Cluster. Every operation that reads then writes is one Lua script (atomic across
 * processes); money is summed in Lua with an exact decimal library, never as doubles.
 *
 * @example
 * import { Redis } from 'ioredis';
 * const store = new RedisStore({ client: new Redis(process.env.REDIS_URL) });
 * @example
 * import { createClient } from 'redis';
 * const client = await createClient({ url: process.env.REDIS_URL }).connect();
 * const store = new RedisStore({ client });
 */
export class RedisStore implements BillingStore {
  readonly now: () => number;
  private readonly connection: RedisConnection;
  private readonly keys: RedisKeyspace;
  private readonly calls: RedisCalls;
  private readonly scripts: Record<ScriptName, ScriptCommand>;
  /** The shard each claimed event came from, per batch, for ack/nack/dead-letter. */
  private readonly batchShards = new WeakMap<OutboxBatch, Map<string, number>>();

  constructor(options: Readonly<RedisStoreOptions>) {
    const { connection, prefix, shards, commandTimeoutMs, now } = resolveRedisStoreOptions(options);
    this.connection = connection;
    this.now = now;
    this.keys = new RedisKeyspace(prefix, shards);
    this.scripts = {} as Record<ScriptName, ScriptCommand>;
    for (const name of SCRIPT_NAMES) this.scripts[name] = (...args) => connection.script(name, args);
    this.calls = new RedisCalls(connection, commandTimeoutMs, now);
  }

  /** Runs one operation under the store's deadline; see {@link RedisCalls.run}. */
  private run<T>(operation: string, work: (attempt: Attempt) => Promise<T>): Promise<T> {
    return this.calls.run(operation, work);
  }

  private call(operation: string, script: ScriptName, args: ScriptArgument[]): Promise<unknown> {
    return this.run(operation, () => this.scripts[script](...args));
  }

  // ── Balance view ──────────────────────────────────────────────────────────────────────────

  async getBalance(customerId: string): Promise<BalanceView | undefined> {
    const keys = this.keys.customer(customerId);
    return toView(await this.call('getBalance', 'getBalance', [...customerArgs(keys), this.now()]));
  }

  async syncBalance(customerId: string, dodoBalance: Money, observedAt: number): Promise<BalanceSyncResult> {
    const keys = this.keys.customer(customerId);
    const [applied, view, previous] = (await this.call('syncBalance', 'syncBalance', [
      ...customerArgs(keys),
      this.now(),
      dodoBalance.toString(),
      observedAt,
    ])) as [number, unknown, string];
    const result: BalanceSyncResult = { applied: applied === 1, view: toView(view)! };
    if (applied === 1 && previous !== '') result.previousBalance = BigInt(previous);
    return result;
  }

  /** Reads every shard's set (one script each, each on its own slot) and merges them. */
  async recentCustomers(since: number, limit: number): Promise<RecentCustomer[]> {
    if (limit <= 0) return [];
    const perShard = await this.run('recentCustomers', () =>
      Promise.all(
        Array.from(
          { length: this.keys.shards },
          (_, shard) =>
            this.scripts.recentCustomers(this.keys.recent(shard), Math.floor(since), limit) as Promise<
              string[]
            >,
        ),
      ),
    );
    const found: RecentCustomer[] = [];
    for (const reply of perShard) {
      for (let index = 0; index + 1 < reply.length; index += 2) {
        found.push({ customerId: reply[index]!, activeAt: Number(reply[index + 1]) });
      }
    }
    found.sort((a, b) => b.activeAt - a.activeAt);
    return found.slice(0, limit);
  }

  async adjustBalance(
    customerId: string,
    adjustmentId: string,
    delta: Money,
    retentionMs: number,
  ): Promise<BalanceView | undefined> {
    const keys = this.keys.customer(customerId);
    const now = this.now();
    const reply = await this.call('adjustBalance', 'adjustBalance', [
      ...customerArgs(keys),
      keys.appliedIds,
      now,
      adjustmentId,
      delta.toString(),
      now + retentionMs,
      gcTtl(retentionMs),
    ]);
    return toView(reply);
  }

  async markBalanceStale(customerId: string): Promise<void> {
    await this.call('markBalanceStale', 'markBalanceStale', [this.keys.customer(customerId).balance]);
  }

  async confirmDeducted(
    customerId: string,
    deductionId: string,
    amount: Money,
    retentionMs: number,
  ): Promise<void> {
    const keys = this.keys.customer(customerId);
    const now = this.now();
    await this.call('confirmDeducted', 'confirmDeducted', [
      keys.balance,
      keys.appliedIds,
      now,
      deductionId,
      amount.toString(),
      now + retentionMs,
      gcTtl(retentionMs),
    ]);
  }

  async recordTopUp(customerId: string, topUp: TopUp): Promise<boolean> {
    const reply = await this.call('recordTopUp', 'recordTopUp', [
      this.keys.customer(customerId).balance,
      topUp.topUpId,
      topUp.amount.toString(),
      Math.floor(topUp.at),
    ]);
    return reply === 1;
  }

  // ── Admission ─────────────────────────────────────────────────────────────────────────────

  async admit(admission: Admission): Promise<AdmissionResult> {
    const keys = this.keys.customer(admission.customerId);
    const now = this.now();
    const { credits, plans } = admission;
    const expiresAt = now + admission.ttlMs;
    const args: ScriptArgument[] = [
      keys.balance,
      keys.reservationExpiries,
      keys.reservationAmounts,
      keys.capHolds,
      keys.appliedIds,
      keys.spend,
      keys.subscriptions,
      keys.budgets,
      now,
      admission.requestId,
      admission.replace ? '1' : '0',
      admission.readProfile ? '1' : '0',
      keys.usagePrefix,
      expiresAt,
      gcTtl(admission.ttlMs),
      credits ? '1' : '0',
      (credits?.min ?? 0n).toString(),
      (credits?.max ?? 0n).toString(),
      (credits?.overdraft ?? 0n).toString(),
      (plans?.estimate.tokens ?? 0n).toString(),
      (plans?.estimate.cost ?? admission.budget?.amount ?? 0n).toString(),
      admission.budget?.key ?? '',
      admission.budget?.periods.month ?? '',
      admission.budget?.periods.day ?? '',
      plans?.activeStatuses.length ?? 0,
      ...(plans?.activeStatuses ?? []),
      plans?.byProduct.size ?? 0,
    ];
    for (const [productId, plan] of plans?.byProduct ?? []) {
      args.push(
        productId,
        plan.chargeCredits ? '1' : '0',
        plan.hardCap?.unit ?? '',
        (plan.hardCap?.amount ?? 0n).toString(),
        plan.hardCap?.perSeat ? '1' : '0',
      );
    }
    // Abandoned at its deadline, the admission would still hold credits (and a cap share) under
    // the request id when a stalled Redis resumes, and refuse the client's retry as in flight:
    // its undo, queued behind it, releases the hold that very call made (same expiry).
    const undo = () =>
      this.scripts.releaseAbandoned(...customerArgs(keys), this.now(), admission.requestId, expiresAt, '');
    const [duplicate, profile, coveringRecord, capped, creditReply, budgetReply] = (await this.run(
      'admit',
      (attempt) =>
        attempt.write(() => this.scripts.admit(...args), {
          send: undo,
          kind: 'idempotent',
          until: expiresAt,
        }),
    )) as [string, ProfileReply | [], string, [string, string, string] | [], string[], string[]];
    if (duplicate !== '') return { duplicate: duplicate as 'in_flight' | 'settled', credits: undefined };
    const result: AdmissionResult = { credits: toCreditOutcome(creditReply) };
    const parsed = profile.length > 0 ? this.toProfile(profile as ProfileReply) : undefined;
    if (parsed) result.profile = parsed;
    if (coveringRecord !== '') result.subscription = toSubscriptions([coveringRecord])[0]!;
    if (capped.length > 0) {
      const [unit, used, limit] = capped as [string, string, string];
      result.capped = { unit: unit as 'tokens' | 'cost', used: BigInt(used), limit: BigInt(limit) };
    }
    if (budgetReply.length > 0) {
      const [state, used, hard, soft, period] = budgetReply as [string, string, string, string, string];
      result.budget = {
        used: BigInt(used),
        period: period.slice(keys.usagePrefix.length),
        ...(hard === '' ? {} : { hard: BigInt(hard) }),
        ...(soft === '' ? {} : { soft: BigInt(soft) }),
      };
      if (state === 'exceeded') result.budgetExceeded = true;
    }
    return result;
  }

  // ── Budgets per API key ───────────────────────────────────────────────────────────────────

  async setBudget(customerId: string, key: string, limits: BudgetLimits | undefined): Promise<void> {
    const value = limits
      ? `${limits.hard?.toString() ?? ''}|${limits.soft?.toString() ?? ''}|${limits.period}`
      : '';
    await this.call('setBudget', 'setBudget', [this.keys.customer(customerId).budgets, key, value]);
  }

  async setAutoRecharge(customerId: string, settings: AutoRechargeSettings | undefined): Promise<void> {
    await this.call('setAutoRecharge', 'setAutoRecharge', [
      this.keys.customer(customerId).autoRecharge,
      settings?.threshold.toString() ?? '',
      settings?.amount.toString() ?? '',
      settings?.monthlyLimit.toString() ?? '',
    ]);
  }

  async getAutoRecharge(customerId: string, month: string): Promise<AutoRechargeState | undefined> {
    const reply = (await this.call('getAutoRecharge', 'getAutoRecharge', [
      this.keys.customer(customerId).autoRecharge,
      month,
    ])) as string[];
    if (reply.length === 0) return undefined;
    const [threshold, amount, limit, recharged, failures, disabled, attemptId, attemptAmount, leaseUntil] =
      reply as [string, string, string, string, string, string, string, string, string];
    return {
      threshold: BigInt(threshold),
      amount: BigInt(amount),
      monthlyLimit: BigInt(limit),
      month,
      recharged: BigInt(recharged),
      failures: Number(failures),
      disabled: disabled === '1',
      ...(attemptId === ''
        ? {}
        : { inFlight: { attemptId, amount: BigInt(attemptAmount), leaseUntil: Number(leaseUntil) } }),
    };
  }

  async beginRecharge(customerId: string, start: RechargeStart): Promise<RechargeBegin> {
    const reply = (await this.call('beginRecharge', 'beginRecharge', [
      this.keys.customer(customerId).autoRecharge,
      start.attemptId,
      start.available.toString(),
      start.month,
      start.leaseMs,
      this.now(),
    ])) as [string, string?, string?, number?];
    const [status, first, second, noted] = reply;
    if (status === 'started' || status === 'resume')
      return { status, attemptId: first!, amount: BigInt(second!) };
    if (status === 'monthly_limit') {
      return { status, recharged: BigInt(first!), monthlyLimit: BigInt(second!), first: noted === 1 };
    }
    return { status: status as 'in_flight' | 'cooling' | 'off' | 'disabled' | 'above_threshold' };
  }

  async finishRecharge(customerId: string, finish: RechargeFinish): Promise<RechargeFinished> {
    const [applied, failures, disabled] = (await this.call('finishRecharge', 'finishRecharge', [
      this.keys.customer(customerId).autoRecharge,
      finish.attemptId,
      finish.outcome,
      finish.maxFailures,
      this.now(),
      finish.cooldownMs,
    ])) as [number, number, number];
    return { applied: applied === 1, failures, disabled: disabled === 1 };
  }

  async getBudget(customerId: string, key: string, periods: BudgetPeriods): Promise<BudgetView | undefined> {
    const keys = this.keys.customer(customerId);
    const reply = (await this.call('getBudget', 'getBudget', [
      keys.budgets,
      keys.reservationExpiries,
      keys.capHolds,
      key,
      keys.usagePrefix,
      periods.month,
      periods.day,
      this.now(),
    ])) as string[];
    if (reply.length === 0) return undefined;
    const [hard, soft, period, periodId, spent, held] = reply as [
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    return {
      key,
      period: period as BudgetLimits['period'],
      periodId,
      spent: BigInt(spent),
      held: BigInt(held),
      ...(hard === '' ? {} : { hard: BigInt(hard) }),
      ...(soft === '' ? {} : { soft: BigInt(soft) }),
    };
  }

  // ── Reservations ──────────────────────────────────────────────────────────────────────────

  async reserve(
    customerId: string,
    reservationId: string,
    amount: Money,
    ttlMs: number,
  ): Promise<ReserveResult> {
    const keys = this.keys.customer(customerId);
    const now = this.now();
    const expiresAt = now + ttlMs;
    const args = [...customerArgs(keys), now, reservationId, amount.toString(), expiresAt, gcTtl(ttlMs)];
    // A reserve abandoned at its deadline still runs when a stalled Redis resumes (or when
    // ioredis resends it after a reconnect), for a request already answered 503: its undo,
    // queued behind it, releases that very reservation (same expiry, same amount).
    const undo = () =>
      this.scripts.releaseAbandoned(
        ...customerArgs(keys),
        this.now(),
        reservationId,
        expiresAt,
        amount.toString(),
      );
    const reply = (await this.run('reserve', (attempt) =>
      attempt.write(() => this.scripts.reserve(...args), {
        send: undo,
        kind: 'idempotent',
        until: expiresAt,
      }),
    )) as [string, string?, string?];
    const [outcome, available, syncedAt] = reply;
    if (outcome === 'no_balance') return { ok: false, reason: 'no_balance' };
    const result = { available: BigInt(available!), syncedAt: Number(syncedAt) };
    return outcome === 'ok' ? { ok: true, ...result } : { ok: false, reason: 'insufficient', ...result };
  }

  async release(customerId: string, reservationId: string): Promise<boolean> {
    const keys = this.keys.customer(customerId);
    const reply = await this.call('release', 'release', [...customerArgs(keys), this.now(), reservationId]);
    return reply === 1;
  }

  /**
   * A settle abandoned at its deadline is not undone: if it runs late it is exactly the effect
   * the request owes (served usage, billed once), and every retry of it — the flusher's
   * settlement backlog, a caller's — is a no-op by `settlementId`. Undoing it would lose usage.
   */
  async settle(settlement: Settlement): Promise<SettleResult> {
    const keys = this.keys.customer(settlement.customerId);
    const now = this.now();
    const { outbox } = keys;
    const scriptKeys = [
      ...customerArgs(keys),
      keys.appliedIds,
      outbox.ready,
      outbox.meta,
      outbox.events,
      outbox.sequence,
      outbox.enqueued,
      keys.recent,
    ];
    const args: ScriptArgument[] = [
      now,
      settlement.settlementId,
      now + settlement.retentionMs,
      gcTtl(settlement.retentionMs),
      settlement.reservationId === undefined ? '0' : '1',
      settlement.reservationId ?? '',
      settlement.cost.toString(),
      settlement.events.length,
      settlement.customerId,
      RECENT_PER_SHARD,
    ];
    for (const event of settlement.events) args.push(event.event_id, JSON.stringify(event));
    let previous: UsageIncrement | undefined;
    for (const usage of settlement.usage ?? []) {
      scriptKeys.push(keys.usage(usage.period));
      // The same counters as the period before (the month's and the day's usually are) are sent
      // once: a count of -1 tells the script to add them again.
      const again = usage.counters === previous?.counters;
      args.push(again ? -1 : Object.keys(usage.counters).length, ...usageArgs(now, usage, !again));
      previous = usage;
    }
    const [applied, view, ...costAfter] = (await this.call('settle', 'settle', [
      scriptKeys.length,
      ...scriptKeys,
      ...args,
    ])) as [number, unknown, ...string[]];
    if (applied !== 1) return { applied: false, view: toView(view) };
    return { applied: true, view: toView(view), costAfter: costAfter.map((cost) => BigInt(cost)) };
  }

  // ── Usage counters per billing period ─────────────────────────────────────────────────────

  async addUsage(customerId: string, usage: UsageIncrement): Promise<void> {
    const now = this.now();
    await this.call('addUsage', 'addUsage', [
      this.keys.customer(customerId).usage(usage.period),
      now,
      ...usageArgs(now, usage),
    ]);
  }

  async getUsage(customerId: string, period: string): Promise<Record<string, bigint>> {
    const key = this.keys.customer(customerId).usage(period);
    const fields = await this.run('getUsage', () => this.connection.hgetall(key));
    return this.usageCounters(fields);
  }

  /** A period's counters from its hash's fields; an expired period reads as empty. */
  private usageCounters(fields: Iterable<[string, string]>): Record<string, bigint> {
    const counters: [string, bigint][] = [];
    let expiresAt: string | undefined;
    for (const [field, value] of fields) {
      if (field.startsWith('c:')) counters.push([field.slice(2), BigInt(value)]);
      else if (field === '@expiresAt') expiresAt = value;
    }
    // fromEntries, not assignment: a counter may be named `__proto__`.
    return expiresAt !== undefined && Number(expiresAt) > this.now() ? Object.fromEntries(counters) : {};
  }

  // ── Outbox ────────────────────────────────────────────────────────────────────────────────

  async claimOutbox(max: number, leaseMs: number): Promise<OutboxBatch> {
    const batch: OutboxBatch = { leaseId: randomUUID(), events: [] };
    const shardOfEvent = new Map<string, number>();
    this.batchShards.set(batch, shardOfEvent);
    if (max <= 0) return batch;
    await this.run('claimOutbox', async (attempt) => {
      // Peeked events may be taken by a concurrent claimer before this one claims them; then
      // peek again. Every round either claims or sees fewer candidates, so this ends.
      for (let round = 0; round < MAX_CLAIM_ROUNDS && batch.events.length < max; round += 1) {
        const now = this.now();
        const candidates = (await this.peekOutbox(now, max - batch.events.length)).slice(
          0,
          max - batch.events.length,
        );
        if (candidates.length === 0) break;
        const claimed = await this.claimCandidates(attempt, candidates, now, now + leaseMs, batch.leaseId);
        let lost = 0;
        for (const candidate of candidates) {
          const claim = claimed.get(candidate.shard)?.get(candidate.member);
          if (!claim) {
            lost += 1;
            continue;
          }
          batch.events.push(claim.event);
          shardOfEvent.set(claim.event.event.event_id, candidate.shard);
        }
        // Every candidate claimed: the peek saw all there was (or filled the batch). Peeking
        // again would only gather what settled meanwhile, a few events for 16 more scripts: the
        // next drain takes them.
        if (lost === 0) break;
      }
    });
    return batch;
  }

  /**
   * The claimable events of every shard, oldest first across shards: lapsed leases (their
   * worker died) first, then due events, each by enqueue time.
   */
  private async peekOutbox(now: number, max: number): Promise<OutboxCandidate[]> {
    const perShard = await Promise.all(
      this.allShards().map(async (keys) => {
        const [lapsed, ready] = (await this.scripts.peekOutbox(
          keys.ready,
          keys.delayed,
          keys.leased,
          keys.meta,
          now,
          max,
        )) as [string[], string[]];
        return { shard: keys.shard, lapsed, ready };
      }),
    );
    const candidates = (pass: 'lapsed' | 'ready'): OutboxCandidate[] => {
      const list: OutboxCandidate[] = [];
      for (const shardReply of perShard) {
        const flat = shardReply[pass];
        for (const [member, enqueuedAt] of pairs(flat)) {
          list.push({ shard: shardReply.shard, member, enqueuedAt: Number(enqueuedAt) });
        }
      }
      return list.sort(
        (a, b) => a.enqueuedAt - b.enqueuedAt || a.shard - b.shard || (a.member < b.member ? -1 : 1),
      );
    };
    return [...candidates('lapsed'), ...candidates('ready')];
  }

  /**
   * Claims candidates shard by shard; returns what each shard granted, by member. A claim
   * abandoned at its deadline would lease events to a batch nobody holds (they would wait out
   * the lease): its undo, queued behind it on the shard's connection, returns the events still
   * leased under this batch's lease id.
   */
  private async claimCandidates(
    attempt: Attempt,
    candidates: readonly OutboxCandidate[],
    now: number,
    leaseExpiresAt: number,
    leaseId: string,
  ): Promise<Map<number, Map<string, { event: ClaimedEvent }>>> {
    const membersByShard = new Map<number, string[]>();
    for (const { shard, member } of candidates) {
      const members = membersByShard.get(shard);
      if (members) members.push(member);
      else membersByShard.set(shard, [member]);
    }
    const granted = new Map<number, Map<string, { event: ClaimedEvent }>>();
    await Promise.all(
      [...membersByShard].map(async ([shard, members]) => {
        const keys = this.keys.outbox(shard);
        const undo = () =>
          this.scripts.unleaseOutbox(keys.ready, keys.delayed, keys.leased, keys.meta, leaseId, ...members);
        const claim = () =>
          this.scripts.claimOutbox(
            keys.ready,
            keys.leased,
            keys.meta,
            keys.events,
            keys.enqueued,
            now,
            leaseExpiresAt,
            leaseId,
            ...members,
          );
        const reply = (await attempt.write(claim, {
          send: undo,
          kind: 'idempotent',
          until: leaseExpiresAt,
        })) as string[];
        const claims = new Map<string, { event: ClaimedEvent }>();
        for (let index = 0; index < reply.length; index += 4) {
          claims.set(reply[index]!, {
            event: {
              event: JSON.parse(reply[index + 1]!) as OutboxEvent,
              attempts: Number(reply[index + 2]),
              enqueuedAt: Number(reply[index + 3]),
            },
          });
        }
        granted.set(shard, claims);
      }),
    );
    return granted;
  }

  /** Groups a batch's event ids by the shard they were claimed from; ids not in it are dropped. */
  private byShard(batch: OutboxBatch, eventIds: Iterable<string>): Map<number, string[]> {
    let shardOfEvent = this.batchShards.get(batch);
    if (!shardOfEvent) {
      // A copy of the batch: settle puts events in their customer's shard.
      shardOfEvent = new Map(
        batch.events.map(({ event }) => [event.event_id, this.keys.shardOf(event.customer_id)]),
      );
    }
    const groups = new Map<number, string[]>();
    for (const eventId of eventIds) {
      const shard = shardOfEvent.get(eventId);
      if (shard === undefined) continue;
      const group = groups.get(shard);
      if (group) group.push(eventId);
      else groups.set(shard, [eventId]);
    }
    return groups;
  }

  async ackOutbox(batch: OutboxBatch, eventIds: readonly string[]): Promise<void> {
    const groups = this.byShard(batch, eventIds);
    if (groups.size === 0) return;
    await this.run('ackOutbox', async () => {
      for (const [shard, ids] of groups) {
        const keys = this.keys.outbox(shard);
        await this.scripts.ackOutbox(...outboxArgs(keys), keys.enqueued, batch.leaseId, ...ids);
      }
    });
  }

  async nackOutbox(
    batch: OutboxBatch,
    eventIds: readonly string[],
    backoffMs: number,
    replace: readonly OutboxEvent[] = [],
  ): Promise<void> {
    const groups = this.byShard(batch, eventIds);
    if (groups.size === 0) return;
    const replacements = new Map(replace.map((event) => [event.event_id, JSON.stringify(event)]));
    const availableAt = this.now() + backoffMs;
    await this.run('nackOutbox', async () => {
      for (const [shard, ids] of groups) {
        const pairs = ids.flatMap((id) => [id, replacements.get(id) ?? '']);
        await this.scripts.nackOutbox(
          ...outboxArgs(this.keys.outbox(shard)),
          batch.leaseId,
          availableAt,
          ...pairs,
        );
      }
    });
  }

  async deadLetterOutbox(
    batch: OutboxBatch,
    failures: readonly { eventId: string; reason: string }[],
  ): Promise<void> {
    const reasons = new Map(failures.map((failure) => [failure.eventId, failure.reason]));
    const groups = this.byShard(batch, reasons.keys());
    if (groups.size === 0) return;
    const deadAt = this.now();
    await this.run('deadLetterOutbox', async () => {
      for (const [shard, ids] of groups) {
        const keys = this.keys.outbox(shard);
        const pairs = ids.flatMap((id) => [id, reasons.get(id)!]);
        await this.scripts.deadLetterOutbox(
          ...outboxArgs(keys),
          keys.enqueued,
          keys.deadOrder,
          keys.deadRecords,
          batch.leaseId,
          deadAt,
          ...pairs,
        );
      }
    });
  }

  private allShards(): OutboxKeys[] {
    return Array.from({ length: this.keys.shards }, (_, shard) => this.keys.outbox(shard));
  }

  async outboxStats(): Promise<OutboxStats> {
    const now = this.now();
    const perShard = await this.run('outboxStats', () =>
      Promise.all(
        this.allShards().map(
          (keys) =>
            this.scripts.outboxStats(
              keys.ready,
              keys.delayed,
              keys.leased,
              keys.deadOrder,
              keys.meta,
              keys.events,
              keys.deadRecords,
              keys.enqueued,
              now,
            ) as Promise<[number, number, number, number, string]>,
        ),
      ),
    );
    const stats: OutboxStats = { waiting: 0, leased: 0, dead: 0, bytes: 0, oldestEnqueuedAt: undefined };
    for (const [waiting, leased, dead, bytes, oldest] of perShard) {
      stats.waiting += waiting;
      stats.leased += leased;
      stats.dead += dead;
      stats.bytes += bytes;
      if (oldest !== '' && !(Number(oldest) >= (stats.oldestEnqueuedAt ?? Number.POSITIVE_INFINITY))) {
        stats.oldestEnqueuedAt = Number(oldest);
      }
    }
    return stats;
  }

  async listDeadLetters(limit = DEFAULT_DEAD_LETTER_LIMIT): Promise<DeadLetter[]> {
    if (limit <= 0) return [];
    const perShard = await this.run('listDeadLetters', () =>
      Promise.all(
        this.allShards().map(
          (keys) =>
            this.scripts.listDeadLetters(keys.deadOrder, keys.deadRecords, limit) as Promise<string[]>,
        ),
      ),
    );
    const records = perShard.flat().map((text) => JSON.parse(text) as DeadLetterRecord);
    // Each shard is ordered already; merge by death time, then enqueue order within a shard.
    records.sort((a, b) => Number(a.deadAt) - Number(b.deadAt) || (a.member < b.member ? -1 : 1));
    return records.slice(0, limit).map((record) => ({
      event: JSON.parse(record.event) as OutboxEvent,
      reason: record.reason,
      attempts: record.attempts,
      deadAt: Number(record.deadAt),
    }));
  }

  // ── Lifetime spend ────────────────────────────────────────────────────────────────────────

  async recordPayment(
    customerId: string,
    paymentId: string,
    amount: Money,
    paidAt: number,
  ): Promise<SpendChange> {
    const keys = this.keys.customer(customerId);
    const reply = await this.call('recordPayment', 'recordPayment', [
      keys.spend,
      keys.spendIds,
      paymentId,
      amount.toString(),
      paidAt,
    ]);
    return toSpendChange(reply);
  }

  async recordRefund(customerId: string, refundId: string, amount: Money): Promise<SpendChange> {
    const keys = this.keys.customer(customerId);
    const reply = await this.call('recordRefund', 'recordRefund', [
      keys.spend,
      keys.spendIds,
      refundId,
      amount.toString(),
    ]);
    return toSpendChange(reply);
  }

  async getSpend(customerId: string): Promise<Spend> {
    const key = this.keys.customer(customerId).spend;
    const fields = await this.run('getSpend', () => this.connection.hmget(key, ['spend', 'firstPaymentAt']));
    return toSpend(fields);
  }

  // ── Webhook deliveries ────────────────────────────────────────────────────────────────────

  async claimWebhook(webhookId: string, processingTtlMs: number): Promise<WebhookClaim> {
    const key = this.keys.webhook(webhookId);
    const now = this.now();
    const processingUntil = Math.ceil(now + processingTtlMs);
    const token = randomUUID();
    // A claim abandoned at its deadline would run late and hold the id `processing` while Dodo
    // retries (answered 409 until the processing TTL): its undo deletes that claim, and only it.
    const undo = () => this.scripts.releaseWebhookClaim(key, `processing:${processingUntil}:${token}`);
    const reply = await this.run('claimWebhook', (attempt) =>
      attempt.write(
        () => this.scripts.claimWebhook(key, now, processingUntil, gcTtl(processingTtlMs), token),
        {
          send: undo,
          kind: 'idempotent',
          until: processingUntil,
        },
      ),
    );
    return reply as WebhookClaim;
  }

  async completeWebhook(webhookId: string, retentionMs: number): Promise<void> {
    const key = this.keys.webhook(webhookId);
    const record = `done:${Math.ceil(this.now() + retentionMs)}`;
    await this.run('completeWebhook', () => this.connection.setPx(key, record, gcTtl(retentionMs)));
  }

  async releaseWebhook(webhookId: string): Promise<void> {
    await this.call('releaseWebhook', 'releaseWebhook', [this.keys.webhook(webhookId)]);
  }

  // ── Subscription plans ────────────────────────────────────────────────────────────────────

  async putSubscription(customerId: string, subscription: SubscriptionState): Promise<boolean> {
    const reply = await this.call('putSubscription', 'putSubscription', [
      this.keys.customer(customerId).subscriptions,
      subscription.subscriptionId,
      subscription.updatedAt,
      JSON.stringify(subscription),
    ]);
    return reply === 1;
  }

  async getSubscriptions(customerId: string): Promise<SubscriptionState[]> {
    const key = this.keys.customer(customerId).subscriptions;
    return toSubscriptions(await this.run('getSubscriptions', () => this.connection.hvals(key)));
  }

  async getCustomerProfile(customerId: string): Promise<CustomerProfile> {
    const keys = this.keys.customer(customerId);
    const reply = (await this.call('getCustomerProfile', 'customerProfile', [
      keys.spend,
      keys.subscriptions,
      keys.usagePrefix,
    ])) as ProfileReply;
    return this.toProfile(reply);
  }

  private toProfile([spend, firstPaymentAt, subscriptionReplies]: ProfileReply): CustomerProfile {
    const subscriptions = toSubscriptions(subscriptionReplies.map(([record]) => record));
    const periodUsage = new Map<string, Record<string, bigint>>();
    for (const [, subscriptionId, fields] of subscriptionReplies) {
      periodUsage.set(subscriptionId, this.usageCounters(pairs(fields)));
    }
    return { ...toSpend([spend || null, firstPaymentAt || null]), subscriptions, periodUsage };
  }

  // ── Rate limiting ─────────────────────────────────────────────────────────────────────────

  /**
   * A `rate-limiter-flexible` limiter on this store's client, under the store's deadline: every
   * method waits for the first connection within it, a consume abandoned at it is given back,
   * and a failure rejects with a `StoreError` — or is answered by `insuranceLimiter` when given.
   */
  createRateLimiter(options: RateLimiterOptions): RateLimiterAbstract {
    return new RedisStoreRateLimiter(this.calls, {
      ...this.connection.rateLimiterClient,
      keyPrefix: this.keys.rateLimiter(options.keyPrefix),
      points: options.points,
      duration: options.duration,
      ...(options.insuranceLimiter ? { insuranceLimiter: options.insuranceLimiter } : {}),
    });
  }

  /** Stops retrying undos; the client was injected and belongs to the caller (never quit). */
  async close(): Promise<void> {
    this.calls.close();
  }
}

/** The profile reply of `customer-profile.lua` and `admit.lua`. */
type ProfileReply = [string, string, [string, string, string[]][]];

/** `admit.lua`'s credit reply; an empty reply when no credits were held or asked. */
function toCreditOutcome(reply: string[]): CreditOutcome | undefined {
  const [outcome, first, second, third] = reply;
  if (outcome === undefined) return undefined;
  if (outcome === 'no_balance') return { ok: false, reason: 'no_balance' };
  if (outcome === 'insufficient') {
    return { ok: false, reason: 'insufficient', available: BigInt(first!), syncedAt: Number(second) };
  }
  return { ok: true, reserved: BigInt(first!), available: BigInt(second!), syncedAt: Number(third) };
}

/** Script arguments of a usage increment: expiresAt, GC TTL, then name/amount pairs. */
function usageArgs(now: number, usage: UsageIncrement, withCounters = true): ScriptArgument[] {
  const args: ScriptArgument[] = [now + usage.ttlMs, gcTtl(usage.ttlMs)];
  if (withCounters)
    for (const [name, amount] of Object.entries(usage.counters)) args.push(name, amount.toString());
  return args;
}

/** A flat reply of pairs (HGETALL fields and values, members with their scores) as tuples. */
function* pairs(flat: string[]): Generator<[string, string]> {
  for (let index = 0; index + 1 < flat.length; index += 2) yield [flat[index]!, flat[index + 1]!];
}

/** `<order>|<updatedAt>|<json>` → its three parts (the JSON may contain `|`). */
function splitSubscriptionRecord(value: string): [string, string, string] {
  const first = value.indexOf('|');
  const second = value.indexOf('|', first + 1);
  return [value.slice(0, first), value.slice(first + 1, second), value.slice(second + 1)];
}

function toSpend([spend, firstPaymentAt]: (string | null)[]): Spend {
  return {
    spend: spend ? BigInt(spend) : 0n,
    firstPaymentAt: firstPaymentAt ? Number(firstPaymentAt) : undefined,
  };
}

function toSubscriptions(values: string[]): SubscriptionState[] {
  return values
    .map((value) => {
      const [order = '0', , json = '{}'] = splitSubscriptionRecord(value);
      return { order: Number(order), subscription: JSON.parse(json) as SubscriptionState };
    })
    .sort((a, b) => a.order - b.order)
    .map(({ subscription }) => subscription);
}
