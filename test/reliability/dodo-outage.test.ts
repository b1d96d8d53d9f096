import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCredits } from '../../src/money.js';
import { RedisStore } from '../../src/store/redis.js';
import { type BillingApp, startBillingApp, startDodo } from '../support/billing-app.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';
import { CENTS, COST, chat, customerWorth, expectEachOnce } from './support.js';

/*
 * Dodo's ingest down for two minutes, then for longer than Dodo's one-hour timestamp window.
 * Time is compressed honestly with one injected clock shared by the store (reservations, leases,
 * backoff, event timestamps) and the emulator (its ingest window): the clock is moved forward
 * while ingest is faulted and traffic keeps coming, and the flusher keeps retrying in real time
 * meanwhile. Waiting two real minutes, let alone an hour, would prove nothing more.
 */

const redisUrl = await requireRedis('reliability: Dodo outage');
const MINUTE = 60_000;

describe.runIf(redisUrl)('Dodo ingest outages (injected clock)', () => {
  let now = Date.now();
  const clock = () => now;
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let client: Redis;
  let app: BillingApp | undefined;
  const prefix = `elb-reliability:${randomUUID()}:`;

  beforeAll(async () => {
    dodo = await startDodo({ now: clock });
    client = new Redis(redisUrl!, { maxRetriesPerRequest: 1 });
    await whenReady(client);
  });
  afterEach(async () => {
    dodo.emulator.clearFaults();
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    await deleteKeysWithPrefix(client, prefix);
    await client.quit();
    await dodo.emulator.close();
  });

  /** Sends `count` requests, each answered 200 while ingest is down. */
  async function traffic(customer: string, count: number): Promise<string[]> {
    const settledAt: string[] = [];
    for (let i = 0; i < count; i++) {
      expect((await chat(app!.url, customer)).status).toBe(200);
      settledAt.push(new Date(now).toISOString());
    }
    return settledAt;
  }

  async function outboxSize(store: RedisStore): Promise<number> {
    const stats = await store.outboxStats();
    return stats.waiting + stats.leased;
  }

  it.each([
    { outage: 'two minutes', steps: 12, stepMs: 10_000, restamped: 0 },
    // 90 minutes in 10-minute steps: events settled in the first 40 minutes are past the
    // flusher's 50-minute re-stamping threshold when ingest comes back.
    { outage: 'ninety minutes', steps: 9, stepMs: 10 * MINUTE, restamped: 5 },
  ])(
    'ingest down for $outage: every event delivered once, nothing lost',
    {
      timeout: 30_000,
    },
    async ({ steps, stepMs, restamped }) => {
      now = Date.now();
      const store = new RedisStore({ client, prefix, now: clock });
      app = await startBillingApp({
        store,
        emulator: dodo.emulator,
        entitlementId: dodo.entitlementId,
        meterUsage: { flushIntervalMs: 20, maxBackoffMs: 100 },
      });
      const customer = customerWorth(dodo.emulator, dodo.entitlementId, 1000);
      const before = parseCredits(dodo.emulator.balance(customer, dodo.entitlementId)!, CENTS);
      dodo.emulator.fault('POST /events/ingest', { status: 503 });

      const settledAt: string[] = [];
      for (let step = 0; step <= steps; step++) {
        if (step > 0) now += stepMs;
        settledAt.push(...(await traffic(customer, 2)));
        // The flusher retried (and failed) at this point of the outage.
        const failures = dodo.emulator.requests().filter((r) => r.path === '/events/ingest').length;
        await expect
          .poll(() => dodo.emulator.requests().filter((r) => r.path === '/events/ingest').length)
          .toBeGreaterThan(failures);
      }
      const requests = settledAt.length;
      expect(await outboxSize(store)).toBe(2 * requests);
      expect(dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(0);

      dodo.emulator.clearFaults();
      now += 1_000;
      await app.billing.flush(10_000);
      await dodo.emulator.settle();

      const events = dodo.emulator.ingestedEvents({ customerId: customer });
      expectEachOnce(events, 2 * requests);
      // Each request's time survives: as the timestamp, or kept when the event had to be re-stamped.
      const originalTimes = events.map((event) =>
        String(event.metadata?.original_timestamp ?? event.timestamp),
      );
      const expectedTimes = settledAt.flatMap((at) => [at, at]);
      expect(originalTimes.map((at) => Date.parse(at)).sort()).toEqual(
        expectedTimes.map((at) => Date.parse(at)).sort(),
      );
      const restampedEvents = events.filter((event) => event.metadata?.original_timestamp !== undefined);
      expect(restampedEvents).toHaveLength(2 * 2 * restamped);
      for (const event of restampedEvents)
        expect(Date.parse(event.timestamp)).toBeGreaterThan(now - 60 * MINUTE);

      // Dodo deducted each request exactly once; nothing was dead-lettered or left behind.
      const after = parseCredits(dodo.emulator.balance(customer, dodo.entitlementId)!, CENTS);
      expect(before - after).toBe(BigInt(requests) * COST);
      expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
      expect(await store.getBalance(customer)).toMatchObject({
        balance: before - BigInt(requests) * COST,
        reserved: 0n,
      });
    },
  );

  it('flush() right after ingest recovers is not failed by a retry that was already under way', {
    timeout: 30_000,
  }, async () => {
    now = Date.now();
    const store = new RedisStore({ client, prefix });
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      meterUsage: { flushIntervalMs: 20, maxBackoffMs: 100 },
    });
    const customer = customerWorth(dodo.emulator, dodo.entitlementId, 1000);
    // A slow failure: the background retry is still waiting on it when ingest recovers.
    dodo.emulator.fault('POST /events/ingest', { status: 503, delayMs: 300 });
    await traffic(customer, 3);
    const ingestCalls = () => dodo.emulator.requests().filter((r) => r.path === '/events/ingest').length;
    const before = ingestCalls();
    await expect.poll(ingestCalls).toBeGreaterThan(before);
    dodo.emulator.clearFaults();
    await app.billing.flush(10_000);
    expect(dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(6);
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
  });

  it('an ingest that Dodo applied but whose answer was lost is retried without billing twice', {
    timeout: 30_000,
  }, async () => {
    now = Date.now();
    // Real time for the store here: the retries' backoff must elapse by itself.
    const store = new RedisStore({ client, prefix });
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      // Dodo answers after the flusher's deadline: the flusher cannot know the batch landed.
      meterUsage: { flushIntervalMs: 20, maxBackoffMs: 100, ingestTimeoutMs: 100 },
    });
    const customer = customerWorth(dodo.emulator, dodo.entitlementId, 1000);
    const before = parseCredits(dodo.emulator.balance(customer, dodo.entitlementId)!, CENTS);
    dodo.emulator.fault('POST /events/ingest', { delayMs: 300, times: 3 });
    await traffic(customer, 10);
    await expect
      .poll(() => dodo.emulator.ingestedEvents({ customerId: customer }).length, { timeout: 10_000 })
      .toBe(20);
    await app.billing.flush(10_000);
    await dodo.emulator.settle();

    const ingestCalls = dodo.emulator
      .requests()
      .filter((r) => r.path === '/events/ingest' && r.status === 200);
    expect(ingestCalls.length).toBeGreaterThan(1);
    const events = dodo.emulator.ingestedEvents({ customerId: customer });
    expectEachOnce(events, 20);
    const after = parseCredits(dodo.emulator.balance(customer, dodo.entitlementId)!, CENTS);
    expect(before - after).toBe(10n * COST);
  });
});
