import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/store/redis.js';
import { type BillingApp, startBillingApp, startDodo } from '../support/billing-app.js';
import { type RedisServer, requireRedisBinaries, startRedisServer, whenReady } from '../support/redis.js';
import { COST, chat, customerWorth, expectEachOnce } from './support.js';

/*
 * The test's own `redis-server`, killed and restarted under traffic, and its script cache
 * flushed under traffic. The server keeps an append-only file fsynced on every write, as a
 * production Redis holding an outbox must: what it acknowledged survives the SIGKILL.
 */

const canRun = requireRedisBinaries('reliability: Redis outage');

interface Outcome {
  startedAt: number;
  endedAt: number;
  status: number;
  code: string | undefined;
}

/** Requests from `workers` loops until `stop()`; each outcome with its timing. */
function runTraffic(url: string, customer: string, workers: number) {
  const outcomes: Outcome[] = [];
  let stopped = false;
  const loop = async () => {
    while (!stopped) {
      const startedAt = performance.now();
      const response = await chat(url, customer);
      const body = (await response.json()) as { error?: { code?: string } };
      outcomes.push({
        startedAt,
        endedAt: performance.now(),
        status: response.status,
        code: body.error?.code,
      });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  const loops = Array.from({ length: workers }, loop);
  return {
    outcomes,
    /** Outcomes of requests that started after `since` (ms, performance.now()). */
    okSince: (since: number) => outcomes.filter((o) => o.startedAt >= since && o.status === 200).length,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

describe.runIf(canRun)('RedisStore when its Redis dies or forgets its scripts', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function appOn(
    server: RedisServer,
    dodo: Awaited<ReturnType<typeof startDodo>>,
    meterUsage: { flushIntervalMs?: number; leaseMs?: number } = {},
  ) {
    const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    cleanups.push(async () => client.disconnect());
    await whenReady(client);
    const store = new RedisStore({ client });
    const app: BillingApp = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      // A reserve Redis applied but whose answer died with it is held this long, no longer.
      requireCredits: { reservationTtlMs: 2_000 },
      // A batch claimed by a process that then dies waits out this lease (a live process records
      // its outcome once Redis is back).
      meterUsage: { flushIntervalMs: 20, maxBackoffMs: 100, leaseMs: 2_000, ...meterUsage },
      // The full admission path: the tier's reads carry requireCredits' reservation.
      admission: (billing) => [
        billing.tierRateLimit({
          tiers: [{ name: 'all', minSpend: '0', rpm: 1_000_000, tpm: 1_000_000_000 }],
        }),
      ],
    });
    cleanups.push(() => app.close());
    return { client, store, app };
  }

  /**
   * A Dodo emulator and a redis-server that keeps its data across `kill()` and `restart()` (an
   * append-only file, fsynced on every write), on the same port.
   */
  async function dodoAndRestartableRedis() {
    const directory = await mkdtemp(join(tmpdir(), 'elb-redis-aof-'));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    const dodo = await startDodo();
    cleanups.push(() => dodo.emulator.close());
    const redis = {
      server: await startRedisServer({ appendOnlyDir: directory }),
      async restart() {
        redis.server = await startRedisServer({ port: redis.server.port, appendOnlyDir: directory });
      },
    };
    cleanups.push(() => redis.server.stop());
    return { dodo, redis };
  }

  it('Redis killed mid-traffic: 503 billing_unavailable within 1 s while down, recovers by itself, outbox intact', {
    timeout: 45_000,
  }, async () => {
    const { dodo, redis } = await dodoAndRestartableRedis();
    const { client, store, app } = await appOn(redis.server, dodo);
    const customer = customerWorth(dodo, 100_000);
    // Nothing leaves the outbox during the test: all of it must still be there at the end.
    dodo.emulator.fault('POST /events/ingest', { status: 503 });

    const traffic = runTraffic(app.url, customer, 4);
    cleanups.push(() => traffic.stop());
    await expect.poll(() => traffic.okSince(0), { timeout: 10_000 }).toBeGreaterThanOrEqual(20);

    await redis.server.kill();
    const downSince = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const restartedAt = performance.now();
    await redis.restart();
    // No reconnect call, no restart of the app: the client and the store come back by themselves.
    await expect.poll(() => traffic.okSince(restartedAt), { timeout: 15_000 }).toBeGreaterThanOrEqual(20);
    await traffic.stop();

    const whileDown = traffic.outcomes.filter((o) => o.startedAt >= downSince && o.endedAt <= restartedAt);
    expect(whileDown.length).toBeGreaterThanOrEqual(10);
    for (const outcome of whileDown) {
      expect(outcome).toMatchObject({ status: 503, code: 'billing_unavailable' });
      expect(outcome.endedAt - outcome.startedAt).toBeLessThan(1_000);
    }
    // Requests caught in flight by the kill do not hang either.
    const overlapping = traffic.outcomes.filter((o) => o.endedAt > downSince && o.startedAt < restartedAt);
    expect(Math.max(...overlapping.map((o) => o.endedAt - o.startedAt))).toBeLessThan(1_000);
    expect(traffic.outcomes.filter((o) => o.status !== 200 && o.status !== 503)).toEqual([]);

    // Every request answered 200 was settled exactly once: in the outbox, and in the balance.
    const served = traffic.outcomes.filter((o) => o.status === 200).length;
    await expect
      .poll(
        async () => {
          const stats = await store.outboxStats();
          return stats.waiting + stats.leased;
        },
        { timeout: 10_000 },
      )
      .toBe(2 * served);
    await expect.poll(async () => (await store.getBalance(customer))?.reserved, { timeout: 10_000 }).toBe(0n);
    const initial = 100_000n * COST;
    expect((await store.getBalance(customer))?.balance).toBe(initial - BigInt(served) * COST);

    dodo.emulator.clearFaults();
    await app.billing.flush(10_000);
    const events = dodo.emulator.ingestedEvents({ customerId: customer });
    expectEachOnce(events, 2 * served);
    expect(client.status).toBe('ready');
  });

  it('Redis dies while Dodo ingests a batch: once it is back, the batch is acked at once, not after its lease', {
    timeout: 30_000,
  }, async () => {
    const { dodo, redis } = await dodoAndRestartableRedis();
    // No background flush (the test drives it) and a lease far longer than the test.
    const { client, store, app } = await appOn(redis.server, dodo, {
      flushIntervalMs: 600_000,
      leaseMs: 600_000,
    });
    const customer = customerWorth(dodo, 100);
    for (let i = 0; i < 5; i++) expect((await chat(app.url, customer)).status).toBe(200);
    expect(await store.outboxStats()).toMatchObject({ waiting: 10, leased: 0 });

    dodo.emulator.fault('POST /events/ingest', { delayMs: 1_000, times: 1 });
    const inFlight = app.meter.flush(10_000).then(
      () => 'delivered',
      () => 'failed',
    );
    await expect.poll(async () => (await store.outboxStats()).leased, { timeout: 5_000 }).toBe(10);
    await redis.server.kill();
    // Dodo accepts the batch a second later; the ack cannot reach Redis.
    expect(await inFlight).toBe('failed');
    await redis.restart();
    await whenReady(client);

    // Well within the lease: the ack kept in memory lands on the next drain.
    await app.meter.flush(5_000);
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
    const events = dodo.emulator.ingestedEvents({ customerId: customer });
    expectEachOnce(events, 10);
    const accepted = dodo.emulator.requests().filter((r) => r.path === '/events/ingest' && r.status === 200);
    expect(accepted).toHaveLength(1);
  });

  it.each([
    { cadence: 'every 50 ms', pauseMs: 50, failsClosed: [] as number[] },
    // Hammered: ioredis resends a command once after NOSCRIPT, and a second flush landing
    // before that resend runs fails the operation. It must fail closed (503, or a settlement
    // kept for retry), never apply anything twice.
    { cadence: 'every 2 ms', pauseMs: 2, failsClosed: [503] },
  ])(
    'SCRIPT FLUSH $cadence mid-traffic: the EVAL fallback runs, nothing is applied twice',
    {
      timeout: 30_000,
    },
    async ({ pauseMs, failsClosed }) => {
      const dodo = await startDodo();
      cleanups.push(() => dodo.emulator.close());
      const server = await startRedisServer();
      cleanups.push(() => server.stop());
      const { store, app } = await appOn(server, dodo);
      const admin = new Redis(server.url);
      cleanups.push(() => admin.quit());
      const customer = customerWorth(dodo, 100);

      let flushes = 0;
      let flushing = true;
      const scriptFlusher = (async () => {
        while (flushing) {
          await admin.script('FLUSH');
          flushes += 1;
          await new Promise((resolve) => setTimeout(resolve, pauseMs));
        }
      })();
      const stopFlushing = async () => {
        flushing = false;
        await scriptFlusher;
      };
      cleanups.push(stopFlushing);
      const traffic = runTraffic(app.url, customer, 4);
      cleanups.push(() => traffic.stop());
      // A 402 means every credit is spent or held by a request that will be settled.
      await expect
        .poll(() => traffic.outcomes.filter((o) => o.status === 402).length, { timeout: 15_000 })
        .toBeGreaterThanOrEqual(8);
      await traffic.stop();
      await stopFlushing();

      expect(flushes).toBeGreaterThanOrEqual(3);
      const allowed = [200, 402, ...failsClosed];
      expect(traffic.outcomes.filter((o) => !allowed.includes(o.status))).toEqual([]);
      for (const outcome of traffic.outcomes.filter((o) => o.status === 503)) {
        expect(outcome.code).toBe('billing_unavailable');
      }
      expect(traffic.outcomes.filter((o) => o.status === 200)).toHaveLength(100);
      await app.billing.flush(10_000);
      const events = dodo.emulator.ingestedEvents({ customerId: customer });
      expectEachOnce(events, 200);
      expect(await store.getBalance(customer)).toMatchObject({
        balance: 0n,
        reserved: 0n,
        pending: 100n * COST,
      });
      expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
      // The scripts really were reloaded with EVAL after NOSCRIPT replies.
      const stats = await admin.info('commandstats');
      expect(Number(/cmdstat_eval:calls=(\d+)/.exec(stats)?.[1] ?? 0)).toBeGreaterThan(0);
      expect(Number(/cmdstat_evalsha:calls=\d+.*failed_calls=(\d+)/.exec(stats)?.[1] ?? 0)).toBeGreaterThan(
        0,
      );
    },
  );
});
