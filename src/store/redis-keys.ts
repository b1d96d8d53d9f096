/*
 * Key layout of RedisStore, and why.
 *
 * Redis Cluster runs a multi-key script only when every key hashes to one slot, and a key's slot
 * comes from the first `{…}` in it. So every key of one customer, and the outbox shard that the
 * customer's usage events go to, carry the same hash tag: `settle` can then change the balance
 * and append to the outbox in one script. The tag is a shard, `{s<N>}`, not the customer id:
 *
 * - N = FNV-1a(customerId) mod `shards`, so any id (braces, colons, spaces, unicode,
 *   `__proto__`) slots safely: the id comes after the tag and never takes part in slotting.
 * - `claimOutbox` must look at every outbox; a fixed number of shard outboxes can be merged
 *   oldest first, one outbox per customer could not. `shards` bounds how many slots (hence cluster nodes) the
 *   outbox spreads over; it must stay the same for the life of the data.
 * - The tag carries no prefix, so stores with different prefixes share slots; the prefix goes
 *   before it and must not contain braces (it would become the tag).
 *
 * The kind of key comes right after the tag and the free-form id comes last
 * (`elb:{s7}:balance:<customerId>`), so two ids can never produce the same key. The one key with
 * two free-form parts (usage per period) length-prefixes the customer id.
 * Webhook claims are tagged by the shard of the webhook id: each is a single key, the tag only
 * spreads them across the cluster.
 */

import { LRUCache } from 'lru-cache';

const FNV_OFFSET_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const utf8 = new TextEncoder();

/** FNV-1a, 32-bit, over the UTF-8 bytes of `text`: stable across processes and versions. */
export function fnv1a32(text: string): number {
  let hash = FNV_OFFSET_BASIS;
  for (const byte of utf8.encode(text)) {
    hash ^= byte;
    hash = Math.imul(hash, FNV_PRIME) >>> 0;
  }
  return hash;
}

/** Keys of one customer; all share the customer's shard tag. */
export interface CustomerKeys {
  /** HASH: balance, pending, syncedAt (0 = stale), observedAt, reserved. */
  balance: string;
  /** ZSET: reservation id → expiresAt. */
  reservationExpiries: string;
  /** HASH: reservation id → amount. */
  reservationAmounts: string;
  /** HASH: request id → what it holds against limits: `<period key>\n<unit>\n<amount>`, joined by `\r`. */
  capHolds: string;
  /** HASH: API key → its budget, `<hard>|<soft>|<period>`. */
  budgets: string;
  /** HASH: auto-recharge settings (th, am, li), failures, the month's total and the attempt in flight. */
  autoRecharge: string;
  /** ZSET: `adjust:<id>` / `settle:<id>` → when the id may be forgotten. */
  appliedIds: string;
  /** HASH: spend, firstPaymentAt. */
  spend: string;
  /** SET: `payment:<id>` / `refund:<id>` already applied to spend. */
  spendIds: string;
  /** HASH: subscription id → `<order>|<updatedAt>|<json>`. */
  subscriptions: string;
  /** HASH of one period's counters: `c:<name>` → amount, `@expiresAt`. */
  usage(period: string): string;
  /** What every period's counters key starts with (`usage(period)` is this plus the period). */
  usagePrefix: string;
  /** The outbox shard this customer's events go to (same tag). */
  outbox: OutboxKeys;
  /** ZSET of the shard: customer id → when a settlement was last applied (`recentCustomers`). */
  recent: string;
}

/** Keys of one outbox shard; all share the shard's tag. */
export interface OutboxKeys {
  shard: number;
  /** ZSET: member (enqueue sequence + event id) → enqueuedAt, for events due now. */
  ready: string;
  /** ZSET: member → availableAt, for nacked events waiting out their backoff. */
  delayed: string;
  /** ZSET: member → lease expiry. */
  leased: string;
  /** HASH: event id → {attempts, enqueuedAt, leaseId, member}. */
  meta: string;
  /** HASH: event id → the event's JSON, as given. */
  events: string;
  /** ZSET: member → enqueuedAt, for every event still to deliver (ready, delayed or leased). */
  enqueued: string;
  /** STRING: enqueue sequence, so events enqueued in the same ms keep their order. */
  sequence: string;
  /** ZSET: member → deadAt. */
  deadOrder: string;
  /** HASH: event id → dead-letter record. */
  deadRecords: string;
}

/**
 * Customers whose keys are kept built: every admission and settlement needs some twenty of
 * them, and the customers of the requests in flight are few.
 */
const CUSTOMER_KEYS_KEPT = 1_000;

/** Computes every key RedisStore uses, from its prefix and shard count. */
export class RedisKeyspace {
  readonly prefix: string;
  readonly shards: number;
  private readonly customers = new LRUCache<string, CustomerKeys>({ max: CUSTOMER_KEYS_KEPT });
  private readonly outboxes: OutboxKeys[] = [];

  constructor(prefix: string, shards: number) {
    this.prefix = prefix;
    this.shards = shards;
  }

  /** The shard (0 … shards−1) of an id. */
  shardOf(id: string): number {
    return fnv1a32(id) % this.shards;
  }

  private tagged(shard: number): string {
    return `${this.prefix}{s${shard}}`;
  }

  customer(customerId: string): CustomerKeys {
    let keys = this.customers.get(customerId);
    if (!keys) {
      // Shared by every caller from now on: frozen, so none can change another's keys.
      keys = Object.freeze(this.buildCustomer(customerId));
      this.customers.set(customerId, keys);
    }
    return keys;
  }

  private buildCustomer(customerId: string): CustomerKeys {
    const shard = this.shardOf(customerId);
    const base = this.tagged(shard);
    const usagePrefix = `${base}:usage:${customerId.length}:${customerId}:`;
    return {
      balance: `${base}:balance:${customerId}`,
      reservationExpiries: `${base}:reservations:${customerId}`,
      reservationAmounts: `${base}:reservation-amounts:${customerId}`,
      capHolds: `${base}:cap-holds:${customerId}`,
      budgets: `${base}:budgets:${customerId}`,
      autoRecharge: `${base}:auto-recharge:${customerId}`,
      appliedIds: `${base}:applied:${customerId}`,
      spend: `${base}:spend:${customerId}`,
      spendIds: `${base}:spend-ids:${customerId}`,
      subscriptions: `${base}:subscriptions:${customerId}`,
      usage: (period) => usagePrefix + period,
      usagePrefix,
      outbox: this.outbox(shard),
      recent: this.recent(shard),
    };
  }

  outbox(shard: number): OutboxKeys {
    let keys = this.outboxes[shard];
    if (!keys) {
      keys = Object.freeze(this.buildOutbox(shard));
      this.outboxes[shard] = keys;
    }
    return keys;
  }

  private buildOutbox(shard: number): OutboxKeys {
    const base = `${this.tagged(shard)}:outbox`;
    return {
      shard,
      ready: `${base}:ready`,
      delayed: `${base}:delayed`,
      leased: `${base}:leased`,
      meta: `${base}:meta`,
      events: `${base}:events`,
      enqueued: `${base}:enqueued`,
      sequence: `${base}:sequence`,
      deadOrder: `${base}:dead`,
      deadRecords: `${base}:dead-records`,
    };
  }

  /**
   * The recently active customers of one shard: one ZSET per shard, under the shard's tag, so
   * `settle` updates it in its own script (same slot) and a listing reads every shard.
   */
  recent(shard: number): string {
    return `${this.tagged(shard)}:recent`;
  }

  webhook(webhookId: string): string {
    return `${this.tagged(this.shardOf(webhookId))}:webhook:${webhookId}`;
  }

  /** Key prefix of a rate limiter's counters (single-key operations: no tag needed). */
  rateLimiter(keyPrefix: string): string {
    return `${this.prefix}rate-limit:${keyPrefix}`;
  }
}
