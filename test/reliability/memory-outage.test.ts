import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/errors.js';
import { OutboxFlusher } from '../../src/meter-usage/outbox-flusher.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { OutboxEvent, OutboxStats } from '../../src/store/types.js';
import { startBillingApp, startDodo } from '../support/billing-app.js';
import { COST, chat } from './support.js';

/*
 * MemoryStore through an hour-long Dodo ingest outage, on an injected clock: ten paid requests
 * a second, each settling two usage events, while the real outbox flusher keeps failing against
 * the emulator, backing off and re-stamping what nears Dodo's one-hour window. The store must
 * stay under its memory bound, by its own accounting and by the heap it really retains, refuse
 * new paid requests at the bound with a 503-worthy StoreError, and keep every event it settled.
 */

const MAX_BYTES = 4 * 2 ** 20;
const REQUESTS_PER_SECOND = 10;
const HOUR_S = 3_600;
const CUSTOMERS = 20;

/**
 * V8's full GC, for heap figures that count only what is retained: `global.gc` under
 * `--expose-gc`, else switched on now for a new context. `undefined` if neither works.
 */
function fullGc(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

function heapAfterGc(gc: (() => void) | undefined): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

function usageEvents(customerId: string, requestId: string, timestamp: string): OutboxEvent[] {
  return (['input', 'output'] as const).map((kind) => ({
    event_id: `${requestId}:${kind}`,
    customer_id: customerId,
    event_name: `llm.${kind}_tokens`,
    timestamp,
    metadata: { model: 'gpt-4o', request_id: requestId, tokens: kind === 'input' ? 1000 : 500 },
  }));
}

/** What one simulated hour left behind, in plain data (no reference to the store). */
interface OutageHour {
  settledEventIds: Set<string>;
  outboxEventIds: Set<string>;
  outboxStats: OutboxStats;
  restamped: number;
  /** The first refusal's status and message (the error itself would keep its frames, the store among them, alive). */
  firstRefusal: { status: number; message: string } | undefined;
  firstRefusalMinute: number | undefined;
  refusals: number;
  maxAccounted: number;
  maxOldestAgeMs: number;
  warnings: number;
}

/**
 * The store and its flusher, held by `holder` only: everything that touches them runs in this
 * function (an async function's suspended frame can keep what it touched alive), so that
 * dropping `holder.subject` afterwards gives back exactly what they retained.
 */
async function outageHour(
  holder: { subject?: { store: MemoryStore; flusher: OutboxFlusher } },
  dodo: Awaited<ReturnType<typeof startDodo>>,
  clock: { now(): number; advance(ms: number): void },
): Promise<OutageHour> {
  const store = new MemoryStore({
    now: clock.now,
    maxBytes: MAX_BYTES,
    maxCustomers: 1_000,
    maxWebhookIds: 1_000,
  });
  // Counts, keeping nothing: the test holds no memory of its own while it measures.
  let warnings = 0;
  const flusher = new OutboxFlusher({
    store,
    dodo: dodo.emulator.client({ maxRetries: 0 }),
    logger: {
      warn: () => {
        warnings += 1;
      },
      error: () => {},
    },
    intervalMs: 1_000,
    batchSize: 1_000,
    leaseMs: 60_000,
    ingestTimeoutMs: 5_000,
    maxBackoffMs: 60_000,
    onDeadLetter: undefined,
  });
  holder.subject = { store, flusher };
  const customers = Array.from({ length: CUSTOMERS }, (_, i) => `cus_outage_${i}`);
  for (const customer of customers) await store.syncBalance(customer, 10n ** 9n * COST, clock.now());

  // Which requests settled, one byte each; their event ids are rebuilt at the end.
  const settled = new Uint8Array(HOUR_S * REQUESTS_PER_SECOND);
  const hour: Omit<OutageHour, 'settledEventIds' | 'outboxEventIds' | 'outboxStats' | 'restamped'> = {
    firstRefusal: undefined,
    firstRefusalMinute: undefined,
    refusals: 0,
    maxAccounted: 0,
    maxOldestAgeMs: 0,
    warnings: 0,
  };
  for (let second = 0; second < HOUR_S; second++) {
    clock.advance(1_000);
    for (let k = 0; k < REQUESTS_PER_SECOND; k++) {
      const requestId = `req_${second}_${k}`;
      const customerId = customers[(second * REQUESTS_PER_SECOND + k) % CUSTOMERS]!;
      try {
        const reserved = await store.reserve(customerId, requestId, COST, 600_000);
        if (!reserved.ok) throw new Error(`unexpected refusal: ${reserved.reason}`);
      } catch (error) {
        if (!(error instanceof StoreError)) throw error;
        hour.firstRefusal ??= { status: error.status, message: error.message };
        hour.firstRefusalMinute ??= Math.floor(second / 60);
        hour.refusals += 1;
        continue;
      }
      await store.settle({
        customerId,
        reservationId: requestId,
        settlementId: requestId,
        cost: COST,
        events: usageEvents(customerId, requestId, new Date(clock.now()).toISOString()),
        usage: [{ period: '2026-11', counters: { tokens: 1500n, cost: COST }, ttlMs: 31 * 86_400_000 }],
        retentionMs: 86_400_000,
      });
      settled[second * REQUESTS_PER_SECOND + k] = 1;
    }
    if (second % 10 === 0) await flusher.drainOnce();
    hour.maxAccounted = Math.max(hour.maxAccounted, store.usage().bytes);
    if (second % 60 === 0) {
      const { oldestEnqueuedAt } = await store.outboxStats();
      if (oldestEnqueuedAt !== undefined) {
        hour.maxOldestAgeMs = Math.max(hour.maxOldestAgeMs, clock.now() - oldestEnqueuedAt);
      }
    }
  }

  const settledEventIds = new Set<string>();
  settled.forEach((done, index) => {
    const requestId = `req_${Math.floor(index / REQUESTS_PER_SECOND)}_${index % REQUESTS_PER_SECOND}`;
    if (done) settledEventIds.add(`${requestId}:input`).add(`${requestId}:output`);
  });
  const outboxStats = await store.outboxStats();
  // Everything still in the outbox, once every backoff is over (then handed back unchanged).
  clock.advance(120_000);
  const everything = await store.claimOutbox(1_000_000, 60_000);
  const outboxEventIds = new Set(everything.events.map((claimed) => claimed.event.event_id));
  const restamped = everything.events.filter(
    (claimed) => 'original_timestamp' in claimed.event.metadata,
  ).length;
  await store.nackOutbox(everything, [...outboxEventIds], 0);
  return { ...hour, warnings, settledEventIds, outboxEventIds, outboxStats, restamped };
}

describe('MemoryStore through an hour-long Dodo ingest outage', () => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('stays under maxBytes (accounted and in the heap), refuses new paid requests at the bound, drops no settled usage', {
    timeout: 120_000,
  }, async () => {
    let now = 1_790_000_000_000;
    const clock = {
      now: () => now,
      advance: (ms: number) => {
        now += ms;
      },
    };
    const dodo = await startDodo({ now: clock.now });
    cleanups.push(() => dodo.emulator.close());
    dodo.emulator.fault('POST /events/ingest', { status: 503 });
    const gc = fullGc();
    const heapBefore = heapAfterGc(gc);
    const holder: Parameters<typeof outageHour>[0] = {};
    const hour = await outageHour(holder, dodo, clock);
    const heapFull = heapAfterGc(gc);
    holder.subject = undefined;
    const retained = heapFull - heapAfterGc(gc);

    // The bound was reached, and the store refused from then on, naming it and the fix.
    expect(hour.firstRefusalMinute).toBeDefined();
    expect(hour.firstRefusal?.status).toBe(503);
    expect(hour.firstRefusal?.message).toMatch(/MemoryStore is at its memory bound \(maxBytes 4\.0 MiB/);
    expect(hour.firstRefusal?.message).toMatch(/raise `maxBytes`/);
    // The flusher kept trying all along (one failed batch per drain).
    expect(hour.warnings).toBeGreaterThan(300);
    // The oldest waiting event's age showed Dodo's hour running out.
    expect(hour.maxOldestAgeMs).toBeGreaterThan(50 * 60_000);

    // Every settled event is still in the outbox: none dropped (the oldest re-stamped).
    expect(hour.outboxStats).toMatchObject({ waiting: hour.settledEventIds.size, leased: 0, dead: 0 });
    expect(hour.outboxEventIds).toEqual(hour.settledEventIds);
    expect(hour.restamped).toBeGreaterThan(0);

    console.info(
      `MemoryStore, 1 h Dodo outage at ${REQUESTS_PER_SECOND} req/s, maxBytes ${MAX_BYTES / 2 ** 20} MiB: ` +
        `${hour.settledEventIds.size / 2} requests settled, ${hour.refusals} refused from minute ${hour.firstRefusalMinute}; ` +
        `accounted max ${(hour.maxAccounted / 2 ** 20).toFixed(2)} MiB; heap retained by the store ` +
        `${(retained / 2 ** 20).toFixed(2)} MiB; process heap growth ${((heapFull - heapBefore) / 2 ** 20).toFixed(2)} MiB ` +
        `(${gc ? 'after a full GC' : 'no GC available: loose'})`,
    );
    // The bound held by the store's accounting…
    expect(hour.maxAccounted).toBeLessThanOrEqual(MAX_BYTES);
    // …and in the heap: what the store retains, measured after a full GC…
    if (gc) {
      expect(retained).toBeGreaterThan(MAX_BYTES / 2);
      expect(retained).toBeLessThan(MAX_BYTES);
    }
    // …and loosely for the whole process (the emulator and the HTTP client included).
    expect(heapFull - heapBefore).toBeLessThan(4 * MAX_BYTES);
  });

  it('requireCredits answers a refusal at the bound with 503 billing_unavailable; the request after Dodo drains is served', {
    timeout: 30_000,
  }, async () => {
    const dodo = await startDodo();
    cleanups.push(() => dodo.emulator.close());
    const store = new MemoryStore({ maxBytes: 256 * 1024, maxCustomers: 100, maxWebhookIds: 100 });
    const app = await startBillingApp({ store, emulator: dodo.emulator, entitlementId: dodo.entitlementId });
    cleanups.push(() => app.close());
    const { customer_id: customer } = dodo.emulator.createCustomer({ email: 'bound@example.com' });
    dodo.emulator.setBalance(customer, dodo.entitlementId, '1000000');
    dodo.emulator.fault('POST /events/ingest', { status: 503 });

    let served = 0;
    let refused: globalThis.Response | undefined;
    while (!refused && served < 1_000) {
      const response = await chat(app.url, customer);
      if (response.status === 200) served += 1;
      else refused = response;
    }
    expect(served).toBeGreaterThan(20);
    expect(refused?.status).toBe(503);
    expect(await refused?.json()).toMatchObject({ error: { code: 'billing_unavailable' } });
    const { waiting, leased } = await store.outboxStats();
    expect(waiting + leased).toBe(2 * served);

    dodo.emulator.clearFaults();
    await app.billing.flush(10_000);
    expect(dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(2 * served);
    expect((await chat(app.url, customer)).status).toBe(200);
  });
});
