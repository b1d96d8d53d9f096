import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { type RateLimiterAbstract, RateLimiterRedis } from 'rate-limiter-flexible';
import { StoreError } from '../errors.js';
import type { Money } from '../money.js';
import { type CustomerKeys, type OutboxKeys, RedisKeyspace } from './redis-keys.js';
import { type RedisStoreOptions, resolveRedisStoreOptions } from './redis-options.js';
import { defineScripts, type ScriptArgument, type ScriptCommand, type ScriptName } from './redis-scripts.js';

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

export type { RedisStoreOptions } from './redis-options.js';

/**
 * Extra real time Redis keeps a key past its logical lifetime. Logical expiry always comes from
 * `now()`; PEXPIRE only collects garbage, so it must never fire first, even with a fake clock.
 */
const GC_MARGIN_MS = 60 * 60 * 1000;

const DEFAULT_DEAD_LETTER_LIMIT = 100;
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
  const [balanceText, reservedText, pendingText, syncedAtText] = fields as [string, string, string, string];
  const balance = BigInt(balanceText);
  const reserved = BigInt(reservedText);
  return {
    balance,
    reserved,
    available: balance - reserved,
    pending: BigInt(pendingText),
    syncedAt: Number(syncedAtText),
  };
}

function toSpendChange(reply: unknown): SpendChange {
  const [applied, spend, firstPaymentAt] = reply as [number, string, string];
  return {
    applied: applied === 1,
    spend: BigInt(spend),
    firstPaymentAt: firstPaymentAt === '' ? undefined : Number(firstPaymentAt),
  };
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
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
 */
export class RedisStore implements BillingStore {
  readonly now: () => number;
  private readonly client: Redis | Cluster;
  private readonly keys: RedisKeyspace;
  private readonly commandTimeoutMs: number;
  private readonly scripts: Record<ScriptName, ScriptCommand>;
  /** The shard each claimed event came from, per batch, for ack/nack/dead-letter. */
  private readonly batchShards = new WeakMap<OutboxBatch, Map<string, number>>();
  /** Whether the client has connected once: after that, not ready means Redis is down. */
  private wasReady: boolean;

  constructor(options: Readonly<RedisStoreOptions>) {
    const { client, prefix, shards, commandTimeoutMs, now } = resolveRedisStoreOptions(options);
    this.client = client;
    this.now = now;
    this.keys = new RedisKeyspace(prefix, shards);
    this.commandTimeoutMs = commandTimeoutMs;
    this.scripts = defineScripts(client);
    // A `lazyConnect` client connects on its first command, which `run` never sends while the
    // client is not ready: start connecting now instead (failures surface as its error events).
    if (client.status === 'wait') client.connect().catch(() => {});
    this.wasReady = client.status === 'ready';
    if (!this.wasReady) {
      client.once('ready', () => {
        this.wasReady = true;
      });
    }
  }

  /**
   * Runs one store operation under the deadline. A client that is not connected fails at once
   * (ioredis would otherwise park the call in its offline queue); any failure becomes a
   * `StoreError` carrying the cause.
   */
  private async run<T>(operation: string, work: () => Promise<T>): Promise<T> {
    if (this.client.status !== 'ready') await this.firstConnection(operation);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StoreError(`Redis did not answer ${operation} within ${this.commandTimeoutMs} ms.`)),
        this.commandTimeoutMs,
      );
      timer.unref();
    });
    try {
      return await Promise.race([work(), deadline]);
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw new StoreError(`Redis failed during ${operation}: ${describeError(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * At startup the client is still connecting: calls wait for it, within the deadline. Once it
   * has been ready, a client that is not ready means Redis is down, and calls fail at once.
   */
  private async firstConnection(operation: string): Promise<void> {
    const { status } = this.client;
    const starting = !this.wasReady && (status === 'wait' || status === 'connecting' || status === 'connect');
    if (!starting) {
      throw new StoreError(`Redis is not ready (status "${status}"); ${operation} was not attempted.`);
    }
    const client = this.client;
    let timer: NodeJS.Timeout | undefined;
    let onReady: () => void = () => {};
    let onFailure: (error?: unknown) => void = () => {};
    try {
      await new Promise<void>((resolve, reject) => {
        onReady = resolve;
        // A refused or dropped first connection fails the call now, not at the deadline.
        onFailure = (error) =>
          reject(new StoreError(`Redis is unreachable; ${operation} was not attempted.`, { cause: error }));
        client.once('ready', onReady);
        client.once('error', onFailure);
        client.once('end', onFailure);
        timer = setTimeout(
          () =>
            reject(
              new StoreError(
                `Redis did not connect within ${this.commandTimeoutMs} ms; ${operation} was not attempted.`,
              ),
            ),
          this.commandTimeoutMs,
        );
        timer.unref();
      });
    } finally {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('error', onFailure);
      client.off('end', onFailure);
    }
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
    const [applied, view] = (await this.call('syncBalance', 'syncBalance', [
      ...customerArgs(keys),
      this.now(),
      dodoBalance.toString(),
      observedAt,
    ])) as [number, unknown];
    return { applied: applied === 1, view: toView(view)! };
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

  // ── Admission ─────────────────────────────────────────────────────────────────────────────

  async admit(admission: Admission): Promise<AdmissionResult> {
    const keys = this.keys.customer(admission.customerId);
    const now = this.now();
    const { credits, plans } = admission;
    const args: ScriptArgument[] = [
      keys.balance,
      keys.reservationExpiries,
      keys.reservationAmounts,
      keys.capHolds,
      keys.appliedIds,
      keys.spend,
      keys.subscriptions,
      now,
      admission.requestId,
      admission.replace ? '1' : '0',
      admission.readProfile ? '1' : '0',
      keys.usagePrefix,
      now + admission.ttlMs,
      gcTtl(admission.ttlMs),
      credits ? '1' : '0',
      (credits?.min ?? 0n).toString(),
      (credits?.max ?? 0n).toString(),
      (credits?.overdraft ?? 0n).toString(),
      (plans?.estimate.tokens ?? 0n).toString(),
      (plans?.estimate.cost ?? 0n).toString(),
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
    const [duplicate, profile, coveringRecord, capped, creditReply] = (await this.call(
      'admit',
      'admit',
      args,
    )) as [string, ProfileReply | [], string, [string, string, string] | [], string[]];
    if (duplicate !== '') return { duplicate: duplicate as 'in_flight' | 'settled', credits: undefined };
    const result: AdmissionResult = { credits: toCreditOutcome(creditReply) };
    const parsed = profile.length > 0 ? this.toProfile(profile as ProfileReply) : undefined;
    if (parsed) result.profile = parsed;
    if (coveringRecord !== '') result.subscription = toSubscriptions([coveringRecord])[0]!;
    if (capped.length > 0) {
      const [unit, used, limit] = capped as [string, string, string];
      result.capped = { unit: unit as 'tokens' | 'cost', used: BigInt(used), limit: BigInt(limit) };
    }
    return result;
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
    const reply = (await this.call('reserve', 'reserve', [
      ...customerArgs(keys),
      now,
      reservationId,
      amount.toString(),
      now + ttlMs,
      gcTtl(ttlMs),
    ])) as [string, string?, string?];
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
    ];
    for (const event of settlement.events) args.push(event.event_id, JSON.stringify(event));
    if (settlement.usage) {
      scriptKeys.push(keys.usage(settlement.usage.period));
      args.push(...usageArgs(now, settlement.usage));
    }
    const [applied, view] = (await this.call('settle', 'settle', [
      scriptKeys.length,
      ...scriptKeys,
      ...args,
    ])) as [number, unknown];
    return { applied: applied === 1, view: toView(view) };
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
    const fields = await this.run('getUsage', () => this.client.hgetall(key));
    return this.usageCounters(Object.entries(fields));
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
    await this.run('claimOutbox', async () => {
      // Peeked events may be taken by a concurrent claimer before this one claims them; then
      // peek again. Every round either claims or sees fewer candidates, so this ends.
      for (let round = 0; round < MAX_CLAIM_ROUNDS && batch.events.length < max; round += 1) {
        const now = this.now();
        const candidates = (await this.peekOutbox(now, max - batch.events.length)).slice(
          0,
          max - batch.events.length,
        );
        if (candidates.length === 0) break;
        const claimed = await this.claimCandidates(candidates, now, now + leaseMs, batch.leaseId);
        for (const candidate of candidates) {
          const claim = claimed.get(candidate.shard)?.get(candidate.member);
          if (!claim) continue;
          batch.events.push(claim.event);
          shardOfEvent.set(claim.event.event.event_id, candidate.shard);
        }
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

  /** Claims candidates shard by shard; returns what each shard granted, by member. */
  private async claimCandidates(
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
        const reply = (await this.scripts.claimOutbox(
          keys.ready,
          keys.leased,
          keys.meta,
          keys.events,
          now,
          leaseExpiresAt,
          leaseId,
          ...members,
        )) as string[];
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
        await this.scripts.ackOutbox(...outboxArgs(this.keys.outbox(shard)), batch.leaseId, ...ids);
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
            this.scripts.outboxStats(keys.ready, keys.delayed, keys.leased, keys.deadOrder, now) as Promise<
              [number, number, number]
            >,
        ),
      ),
    );
    const stats: OutboxStats = { waiting: 0, leased: 0, dead: 0 };
    for (const [waiting, leased, dead] of perShard) {
      stats.waiting += waiting;
      stats.leased += leased;
      stats.dead += dead;
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
    const fields = await this.run('getSpend', () => this.client.hmget(key, 'spend', 'firstPaymentAt'));
    return toSpend(fields);
  }

  // ── Webhook deliveries ────────────────────────────────────────────────────────────────────

  async claimWebhook(webhookId: string, processingTtlMs: number): Promise<WebhookClaim> {
    const now = this.now();
    const reply = await this.call('claimWebhook', 'claimWebhook', [
      this.keys.webhook(webhookId),
      now,
      Math.ceil(now + processingTtlMs),
      gcTtl(processingTtlMs),
    ]);
    return reply as WebhookClaim;
  }

  async completeWebhook(webhookId: string, retentionMs: number): Promise<void> {
    const key = this.keys.webhook(webhookId);
    const record = `done:${Math.ceil(this.now() + retentionMs)}`;
    await this.run('completeWebhook', () => this.client.set(key, record, 'PX', gcTtl(retentionMs)));
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
    return toSubscriptions(await this.run('getSubscriptions', () => this.client.hvals(key)));
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

  createRateLimiter(options: RateLimiterOptions): RateLimiterAbstract {
    return new RateLimiterRedis({
      storeClient: this.client,
      keyPrefix: this.keys.rateLimiter(options.keyPrefix),
      points: options.points,
      duration: options.duration,
      // Fail at once when Redis is not connected (to the insurance limiter, if any).
      rejectIfRedisNotReady: true,
      ...(options.insuranceLimiter ? { insuranceLimiter: options.insuranceLimiter } : {}),
    });
  }

  /** Nothing to release: the client was injected and belongs to the caller. */
  async close(): Promise<void> {}
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
function usageArgs(now: number, usage: UsageIncrement): ScriptArgument[] {
  const args: ScriptArgument[] = [now + usage.ttlMs, gcTtl(usage.ttlMs)];
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
