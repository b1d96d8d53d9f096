import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCredits } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
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
      const customer = customerWorth(dodo, 1000);
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
    const customer = customerWorth(dodo, 1000);
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
    const customer = customerWorth(dodo, 1000);
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

  /**
   * A customer Dodo no longer knows (deleted on Dodo) still holding a local view: its requests
   * are served and settled, and their events reach the outbox with the good customers' ones.
   */
  async function ghost(store: RedisStore): Promise<string> {
    const id = `cus_ghost_${randomUUID().slice(0, 8)}`;
    await store.syncBalance(id, COST * 100n, Date.now());
    return id;
  }

  it("dead-letters an unknown customer's events and delivers the good events of their batch, once", {
    timeout: 30_000,
  }, async () => {
    now = Date.now();
    const store = new RedisStore({ client, prefix });
    const dead: string[] = [];
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      meterUsage: {
        flushIntervalMs: 20,
        maxBackoffMs: 100,
        onDeadLetter: (letter) => void dead.push(letter.event.event_id),
      },
    });
    const good = customerWorth(dodo, 1000);
    const unknown = await ghost(store);
    // One batch: the events wait while ingest is down, then go out together.
    dodo.emulator.fault('POST /events/ingest', { status: 503 });
    for (const customer of [good, unknown, good, good, unknown, good]) {
      expect((await chat(app.url, customer)).status).toBe(200);
    }
    dodo.emulator.clearFaults();
    await app.billing.flush(10_000);
    await dodo.emulator.settle();
    // Dodo fails the whole request for the unknown customer (404); halving isolates it.
    expect(dodo.emulator.requests().some((r) => r.path === '/events/ingest' && r.status === 404)).toBe(true);
    expectEachOnce(dodo.emulator.ingestedEvents({ customerId: good }), 8);
    expect(dodo.emulator.ingestedEvents({ customerId: unknown })).toEqual([]);
    const letters = await store.listDeadLetters(100);
    const ghostLetters = letters.filter((letter) => letter.event.customer_id === unknown);
    expect(ghostLetters).toHaveLength(4);
    expect(ghostLetters.every((letter) => /customer/i.test(letter.reason))).toBe(true);
    expect(dead.filter((id) => ghostLetters.some((letter) => letter.event.event_id === id))).toHaveLength(4);
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0 });
  });

  it('keeps every event when Dodo refuses the credentials (401): retried, none dead-lettered, named once', {
    timeout: 30_000,
  }, async () => {
    now = Date.now();
    const store = new RedisStore({ client, prefix });
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      meterUsage: { flushIntervalMs: 20, maxBackoffMs: 50 },
    });
    const customer = customerWorth(dodo, 1000);
    const deadBefore = (await store.outboxStats()).dead;
    dodo.emulator.fault('POST /events/ingest', { status: 401 });
    await traffic(customer, 4);
    const refusals = () =>
      dodo.emulator.requests().filter((r) => r.path === '/events/ingest' && r.status === 401);
    await expect.poll(() => refusals().length, { timeout: 10_000 }).toBeGreaterThan(3);
    const named = app.logger.lines.filter((line) => /refused the usage ingest with 401/.test(line.message));
    expect(named).toHaveLength(1);
    expect(named[0]?.message).toMatch(/API key/);
    expect((await store.outboxStats()).dead).toBe(deadBefore);
    dodo.emulator.clearFaults();
    await app.billing.flush(10_000);
    expectEachOnce(dodo.emulator.ingestedEvents({ customerId: customer }), 8);
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0 });
  });

  it('keeps events Dodo refuses while it has accepted none lately (a wrong endpoint answering 404), named once', {
    timeout: 30_000,
  }, async () => {
    now = Date.now();
    const store = new RedisStore({ client, prefix });
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      meterUsage: { flushIntervalMs: 20, maxBackoffMs: 50 },
    });
    const first = customerWorth(dodo, 1000);
    const second = customerWorth(dodo, 1000);
    const deadBefore = (await store.outboxStats()).dead;
    const refused404 = () =>
      dodo.emulator.requests().filter((r) => r.path === '/events/ingest' && r.status === 404).length;
    const refusedBefore = refused404();
    dodo.emulator.fault('POST /events/ingest', {
      status: 404,
      body: { code: 'NOT_FOUND', message: 'Not found' },
    });
    await traffic(first, 2);
    await traffic(second, 2);
    const named = () =>
      app!.logger.lines.filter((line) => /had accepted none in the 15 minutes before/.test(line.message));
    await expect.poll(() => named().length, { timeout: 10_000 }).toBe(1);
    // Halved down to single events, and again on the retries: still named once.
    const refusedThen = refused404();
    expect(refusedThen).toBeGreaterThan(refusedBefore);
    await expect.poll(refused404, { timeout: 10_000 }).toBeGreaterThan(refusedThen + 8);
    expect(named()).toHaveLength(1);
    expect((await store.outboxStats()).dead).toBe(deadBefore);
    dodo.emulator.clearFaults();
    await app.billing.flush(10_000);
    expectEachOnce(dodo.emulator.ingestedEvents({ customerId: first }), 4);
    expectEachOnce(dodo.emulator.ingestedEvents({ customerId: second }), 4);
  });
});

describe('a wrong creditEntitlementId is told from a customer without credits', () => {
  it('answers 503 and names the misconfiguration once, while a customer never granted credits reads $0 (402)', async () => {
    const dodo = await startDodo();
    const apps: BillingApp[] = [];
    try {
      const fresh = dodo.customer({ email: 'fresh@example.com' }).customer_id;
      // The right entitlement: Dodo's 404 for the customer's balance is "no credits yet".
      const right = await startBillingApp({
        store: new MemoryStore(),
        emulator: dodo.emulator,
        entitlementId: dodo.entitlementId,
      });
      apps.push(right);
      const refused = await chat(right.url, fresh);
      expect(refused.status).toBe(402);
      expect(await refused.json()).toMatchObject({ error: { code: 'insufficient_quota' } });

      // A wrong one (another account's, or a typo): Dodo's 404 means "no such entitlement".
      const wrong = await startBillingApp({
        store: new MemoryStore(),
        emulator: dodo.emulator,
        entitlementId: 'cde_typo',
      });
      apps.push(wrong);
      const rich = customerWorth(dodo, 1000);
      for (const customer of [fresh, rich, fresh, rich]) {
        const answer = await chat(wrong.url, customer);
        expect(answer.status).toBe(503);
        expect(await answer.json()).toMatchObject({ error: { code: 'billing_unavailable' } });
      }
      const named = wrong.logger.lines.filter((line) =>
        /is not a credit entitlement of this Dodo account/.test(line.message),
      );
      expect(named).toHaveLength(1);
      expect(named[0]).toMatchObject({
        level: 'error',
        details: { code: 'ERR_ELB_UNKNOWN_CREDIT_ENTITLEMENT' },
      });
      expect(named[0]?.message).toMatch(/express-llm-billing setup/);
      // Nothing else, but the startup note that the app's two prices share default meters.
      expect(wrong.logger.lines.filter((line) => !/`meters` is not set/.test(line.message))).toHaveLength(1);
      // The entitlement was read once, not on every request.
      const reads = dodo.emulator
        .requests()
        .filter((request) => request.path === '/credit-entitlements/cde_typo');
      expect(reads).toHaveLength(1);
    } finally {
      for (const app of apps) await app.close();
      await dodo.emulator.close();
    }
  });
});
