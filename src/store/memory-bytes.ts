import type { SubscriptionState } from './types.js';

/*
 * Approximate heap bytes of what MemoryStore keeps, for its `maxBytes` bound. V8 does not say
 * what one object costs, so these are estimates measured on 64-bit Node 20 (heap used after a
 * full GC, per item, over 50,000 items) and rounded up: the accounting errs high.
 */

/** A string's header; its characters take one byte each, or two when any is beyond Latin-1. */
const STRING_HEADER = 16;
/** A Map or Set entry: its slot in the hash table, with the table's growth slack. */
const MAP_ENTRY = 48;
/** An object's header and its first fields. */
const OBJECT = 80;
/** A number that is not a small integer (timestamps are not), or a bigint of money. */
const BOXED = 32;

const BEYOND_LATIN1 = /[\u0100-\uffff]/;

export function stringBytes(text: string): number {
  return STRING_HEADER + (BEYOND_LATIN1.test(text) ? 2 : 1) * text.length;
}

/** A (flat) string id with a number or nothing in a Map or Set (applied ids, payment ids…). */
export function idBytes(id: string): number {
  return MAP_ENTRY + stringBytes(id) + BOXED;
}

/** An outbox entry: the event's JSON and id, the entry object, its place in two maps. */
export function outboxEntryBytes(eventId: string, json: string): number {
  return OBJECT + 2 * MAP_ENTRY + 4 * BOXED + stringBytes(eventId) + stringBytes(json);
}

/**
 * Room counted with each event for the re-stamp the outbox flusher gives an event that waited
 * close to Dodo's one-hour window (a new `timestamp`, `metadata.original_timestamp`): a long
 * outage does not grow the outbox past what was counted when its events were settled.
 */
export const RESTAMP_ROOM_BYTES = 64;

/** A dead letter: the event's JSON, Dodo's reason, the record, its map entry. */
export function deadLetterBytes(eventId: string, json: string, reason: string): number {
  return OBJECT + MAP_ENTRY + BOXED + stringBytes(eventId) + stringBytes(json) + stringBytes(reason);
}

/**
 * A customer's state before anything is counted in it: the state and balance objects, its six
 * empty maps and sets, its place in the customer cache.
 */
export function customerBytes(customerId: string): number {
  return 1_536 + stringBytes(customerId);
}

/** A customer's last top-up: the record, its amount and time, its ledger entry's id. */
export function topUpBytes(topUpId: string): number {
  return OBJECT + 2 * BOXED + stringBytes(topUpId);
}

/** A live reservation: its entry, amount and expiry (its id is counted apart). */
export const RESERVATION_BYTES = OBJECT + MAP_ENTRY + 2 * BOXED;

/**
 * What a live reservation's settlement will add (two usage events of the default meters and an
 * applied id, about 1 kB), with room to spare: each reservation is counted with it, so requests
 * admitted under the bound cannot carry the store past it when they settle.
 */
export const SETTLEMENT_ALLOWANCE_BYTES = 2 * 1024;

/** A usage period (its counters map) and one counter in it. */
export function periodBytes(period: string): number {
  return 2 * OBJECT + 2 * MAP_ENTRY + stringBytes(period) + BOXED;
}
export function counterBytes(name: string): number {
  return MAP_ENTRY + stringBytes(name) + BOXED;
}

export function subscriptionBytes(subscription: SubscriptionState): number {
  return (
    2 * OBJECT +
    MAP_ENTRY +
    stringBytes(subscription.subscriptionId) +
    stringBytes(subscription.productId) +
    stringBytes(subscription.status) +
    4 * BOXED
  );
}

/**
 * What an `lru-cache` of `max` entries allocates up front: its key and value arrays and its
 * index arrays (4 bytes each for up to 2³² entries), whatever it holds.
 */
export function lruCacheBytes(max: number): number {
  return 32 * max + 1_024;
}

/** A remembered webhook id: its record and its entry in the cache. */
export function webhookBytes(webhookId: string): number {
  return OBJECT + 2 * MAP_ENTRY + stringBytes(webhookId) + BOXED;
}

/** A key's budget: its name and three small fields. */
export function budgetBytes(key: string): number {
  return stringBytes(key) + OBJECT + MAP_ENTRY + 3 * BOXED;
}

/** A customer's auto-recharge record: settings, month counters and an attempt (its id ≤ 64 chars). */
export const RECHARGE_BYTES = 3 * OBJECT + 8 * BOXED + 3 * (STRING_HEADER + 64);
