import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/store/redis.js';
import { type ScriptName, scriptSource } from '../../src/store/redis-scripts.js';
import {
  type RedisServer,
  requireRedisBinaries,
  startRedisServer,
  startSlowProxy,
  whenReady,
} from '../support/redis.js';
import {
  COST,
  DAY,
  DEADLINE_MS,
  failsAtDeadline,
  MARGIN_MS,
  MINUTE,
  stallCasesOfAnyClient,
  usageEvent,
} from './stall-support.js';

/*
 * A call abandoned at its deadline cannot take effect later. The test's own `redis-server` is
 * stalled with SIGSTOP while calls are in flight: each call fails with a StoreError at its
 * deadline, and what it sent still runs when Redis resumes (or when ioredis resends it after a
 * reconnect). Its undo, queued behind it on the connection, must leave nothing behind: no
 * reservation holding a customer's credits, no outbox event leased to nobody, no webhook id
 * held `processing`, no rate-limit point counted for a request that was never admitted.
 */

const canRun = requireRedisBinaries('reliability: Redis stalls');

/** The SHA-1 ioredis sends with EVALSHA for one of the store's scripts, and its source (EVAL). */
function scriptIdentity(name: ScriptName): string[] {
  const source = scriptSource(name);
  return [createHash('sha1').update(source).digest('hex'), source];
}

/**
 * Calls `onSend` synchronously when the client is about to send the given script, before it
 * writes a byte: the test can stall Redis exactly while that command is in flight.
 */
function beforeSending(client: Redis, name: ScriptName, onSend: () => void): () => void {
  const identity = scriptIdentity(name);
  const original = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
    if (
      (command.name === 'evalsha' || command.name === 'eval') &&
      identity.includes(String(command.args[0]))
    ) {
      onSend();
    }
    return (original as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  return () => {
    client.sendCommand = original;
  };
}

describe.runIf(canRun)('RedisStore: a call abandoned at its deadline cannot take effect later', () => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** A server of the test's own, a client with ioredis' defaults, a store with a short deadline. */
  async function stallable(options: { appendOnlyDir?: string; enableOfflineQueue?: boolean } = {}) {
    const { enableOfflineQueue = true, ...serverOptions } = options;
    const server = await startRedisServer(serverOptions);
    cleanups.push(() => server.stop());
    const client = new Redis(server.url, { enableOfflineQueue });
    client.on('error', () => {});
    cleanups.push(() => client.disconnect());
    await whenReady(client);
    const store = new RedisStore({
      client,
      prefix: `elb-test:${randomUUID()}:`,
      commandTimeoutMs: DEADLINE_MS,
    });
    cleanups.push(() => store.close());
    return { server, client, store };
  }

  it('reservations made while Redis is stalled are released when it resumes: the customer is not locked out', async () => {
    const { server, client, store } = await stallable();
    await store.syncBalance('cus_1', 10n * COST, Date.now());
    // A warm connection: the scripts are loaded, EVALSHA is what stalls.
    expect(await store.reserve('cus_1', 'warm-up', COST, 10 * MINUTE)).toMatchObject({ ok: true });
    await store.release('cus_1', 'warm-up');

    server.pause();
    const failures = await Promise.all(
      Array.from({ length: 9 }, (_, i) =>
        failsAtDeadline(() => store.reserve('cus_1', `r${i}`, COST, 10 * MINUTE)),
      ),
    );
    expect(failures.map((error) => error.message)).toEqual(
      Array(9).fill(`Redis did not answer reserve within ${DEADLINE_MS} ms.`),
    );
    server.resume();

    // Redis ran the nine reserves (9 of 10 credits held for ten minutes, were they left alone)
    // and, right behind each, its undo.
    await expect.poll(async () => (await store.getBalance('cus_1'))?.reserved, { timeout: 2_000 }).toBe(0n);
    expect(await store.getBalance('cus_1')).toMatchObject({ balance: 10n * COST, available: 10n * COST });
    expect(await store.reserve('cus_1', 'next', 10n * COST, 10 * MINUTE)).toMatchObject({ ok: true });
    // The reserves did run late: Redis counted them.
    const stats = await client.info('commandstats');
    expect(Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1])).toBeGreaterThanOrEqual(1 + 9 + 9 + 1);
  });

  it('admissions made while Redis is stalled are released when it resumes: the retry is admitted, not refused as in flight', async () => {
    const { server, store } = await stallable();
    await store.syncBalance('cus_1', 10n * COST, Date.now());
    const admission = (requestId: string) => ({
      customerId: 'cus_1',
      requestId,
      readProfile: true,
      credits: { min: COST, max: 3n * COST, overdraft: 0n },
      ttlMs: 10 * MINUTE,
    });
    expect(await store.admit(admission('warm-up'))).toMatchObject({ credits: { ok: true } });
    await store.release('cus_1', 'warm-up');

    server.pause();
    await Promise.all([1, 2, 3].map((i) => failsAtDeadline(() => store.admit(admission(`req_${i}`)))));
    server.resume();

    await expect.poll(async () => (await store.getBalance('cus_1'))?.reserved, { timeout: 2_000 }).toBe(0n);
    // The client retries its request under the same id: admitted, holding the full maximum.
    expect(await store.admit(admission('req_1'))).toMatchObject({
      credits: { ok: true, reserved: 3n * COST },
    });
    expect(await store.getBalance('cus_1')).toMatchObject({ reserved: 3n * COST, available: 7n * COST });
  });

  it('an undo never releases a later reservation made under the same id', async () => {
    const { server, store } = await stallable();
    await store.syncBalance('cus_1', 10n * COST, Date.now());
    server.pause();
    await failsAtDeadline(() => store.reserve('cus_1', 'req_1', 2n * COST, 10 * MINUTE));
    server.resume();
    await expect.poll(async () => (await store.getBalance('cus_1'))?.reserved, { timeout: 2_000 }).toBe(0n);
    // The client retries the same request id: its reservation is its own, and stays.
    expect(await store.reserve('cus_1', 'req_1', 3n * COST, 10 * MINUTE)).toMatchObject({ ok: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await store.getBalance('cus_1'))?.reserved).toBe(3n * COST);
  });

  it.each([
    {
      when: 'after the deadline: the undos are queued on the dead connection',
      killAfterDeadline: true,
      enableOfflineQueue: true,
    },
    {
      when: 'before the deadline: the undos wait in the offline queue',
      killAfterDeadline: false,
      enableOfflineQueue: true,
    },
    {
      when: 'without an offline queue: the undos fail, and are sent again once the client is ready',
      killAfterDeadline: false,
      enableOfflineQueue: false,
    },
  ])(
    'Redis killed with the reserves unanswered and restarted ($when): ioredis resends them, then their undos',
    { timeout: 20_000 },
    async ({ killAfterDeadline, enableOfflineQueue }) => {
      const directory = await mkdtemp(join(tmpdir(), 'elb-redis-aof-'));
      cleanups.push(() => rm(directory, { recursive: true, force: true }));
      let server: RedisServer;
      const {
        server: first,
        client,
        store,
      } = await stallable({ appendOnlyDir: directory, enableOfflineQueue });
      server = first;
      cleanups.push(() => server.stop());
      await store.syncBalance('cus_1', 10n * COST, Date.now());
      expect(await store.reserve('cus_1', 'warm-up', COST, 10 * MINUTE)).toMatchObject({ ok: true });
      await store.release('cus_1', 'warm-up');

      server.pause();
      const reserves = Array.from({ length: 5 }, (_, i) =>
        failsAtDeadline(() => store.reserve('cus_1', `r${i}`, COST, 10 * MINUTE)),
      );
      if (killAfterDeadline) await Promise.all(reserves);
      // The stalled server dies with the commands in its socket: they never ran there.
      await server.kill();
      await Promise.all(reserves);
      await expect.poll(() => client.status).not.toBe('ready');

      server = await startRedisServer({ port: server.port, appendOnlyDir: directory });
      await whenReady(client);
      await expect.poll(async () => (await store.getBalance('cus_1'))?.reserved, { timeout: 5_000 }).toBe(0n);
      expect(await store.getBalance('cus_1')).toMatchObject({ balance: 10n * COST, available: 10n * COST });
      // The reserves did run on the restarted server (ioredis resent them, loading the script
      // there), and their undos after them.
      const [reserveSha] = scriptIdentity('reserve');
      expect(await client.script('EXISTS', reserveSha!)).toEqual([1]);
      const [releaseSha] = scriptIdentity('releaseAbandoned');
      expect(await client.script('EXISTS', releaseSha!)).toEqual([1]);
    },
  );

  it('an outbox claim abandoned at its deadline leaves no event leased to nobody', async () => {
    const { server, client, store } = await stallable();
    for (let i = 0; i < 4; i++) {
      await store.settle({
        customerId: `cus_${i}`,
        settlementId: `s_${i}`,
        cost: COST,
        events: [usageEvent(`cus_${i}`, `evt_${i}`)],
        retentionMs: DAY,
      });
    }
    // Stall Redis exactly when the claim script is sent, after the peek was answered.
    const restore = beforeSending(client, 'claimOutbox', () => server.pause());
    await failsAtDeadline(() => store.claimOutbox(10, 10 * MINUTE));
    restore();
    server.resume();

    await expect.poll(async () => (await store.outboxStats()).leased, { timeout: 2_000 }).toBe(0);
    expect(await store.outboxStats()).toMatchObject({ waiting: 4, leased: 0 });
    // Due at once, not after the ten-minute lease, and the attempt nobody made is not counted.
    const batch = await store.claimOutbox(10, 10 * MINUTE);
    expect(batch.events.map((claimed) => [claimed.event.event_id, claimed.attempts]).sort()).toEqual([
      ['evt_0', 1],
      ['evt_1', 1],
      ['evt_2', 1],
      ['evt_3', 1],
    ]);
  });

  stallCasesOfAnyClient(stallable);
});

describe.runIf(canRun)("RedisStore's rate limiters under a stall and a slow connection", () => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function stallable() {
    const server = await startRedisServer();
    cleanups.push(() => server.stop());
    const client = new Redis(server.url);
    client.on('error', () => {});
    cleanups.push(() => client.disconnect());
    await whenReady(client);
    const store = new RedisStore({
      client,
      prefix: `elb-test:${randomUUID()}:`,
      commandTimeoutMs: DEADLINE_MS,
    });
    return { server, store };
  }

  it('every limiter call fails with a StoreError at the deadline, never hangs, never answers a RateLimiterRes', async () => {
    const { server, store } = await stallable();
    const limiter = store.createRateLimiter({ keyPrefix: 'rpm', points: 3, duration: 60 });
    await limiter.consume('cus_1');
    server.pause();
    try {
      for (const call of [
        () => limiter.consume('cus_1'),
        () => limiter.penalty('cus_1', 1),
        () => limiter.reward('cus_1', 1),
        () => limiter.get('cus_1'),
        () => limiter.delete('cus_1'),
        () => limiter.block('cus_1', 60),
        () => limiter.set('cus_1', 1, 60),
      ]) {
        const error = await failsAtDeadline(call);
        expect(error).not.toBeInstanceOf(RateLimiterRes);
      }
    } finally {
      server.resume();
    }
  });

  it('with an insurance limiter, the insurance answers at the deadline', async () => {
    const { server, store } = await stallable();
    const limiter = store.createRateLimiter({
      keyPrefix: 'rpm',
      points: 3,
      duration: 60,
      insuranceLimiter: new RateLimiterMemory({ points: 3, duration: 60 }),
    });
    await limiter.consume('cus_1');
    server.pause();
    try {
      const started = performance.now();
      await expect(limiter.consume('cus_1')).resolves.toMatchObject({ consumedPoints: 1 });
      expect(performance.now() - started).toBeLessThan(DEADLINE_MS + MARGIN_MS);
    } finally {
      server.resume();
    }
  });

  it('a consume abandoned at its deadline is given back when Redis resumes', async () => {
    const { server, store } = await stallable();
    const limiter = store.createRateLimiter({ keyPrefix: 'rpm', points: 3, duration: 60 });
    await limiter.consume('cus_1');
    server.pause();
    await Promise.all([1, 2, 3].map(() => failsAtDeadline(() => limiter.consume('cus_1'))));
    server.resume();
    // Three late increments ran, each with its reward right behind it: the one admitted
    // request is all that counts, and the customer still has two.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await limiter.get('cus_1'))?.consumedPoints).toBe(1);
    await expect(limiter.consume('cus_1')).resolves.toMatchObject({ remainingPoints: 1 });
  });

  it('two instances whose clients are still connecting share one count: 3 admitted at RPM 3, not 6', async () => {
    const server = await startRedisServer();
    cleanups.push(() => server.stop());
    const proxy = await startSlowProxy(server, 300);
    cleanups.push(() => proxy.close());
    const prefix = `elb-test:${randomUUID()}:`;
    const instances: RateLimiterAbstract[] = [];
    for (let i = 0; i < 2; i++) {
      const client = new Redis(proxy.url);
      client.on('error', () => {});
      cleanups.push(() => client.disconnect());
      // Each instance as tierRateLimit builds it: with its in-process insurance limiter.
      const store = new RedisStore({ client, prefix });
      instances.push(
        store.createRateLimiter({
          keyPrefix: 'rpm',
          points: 3,
          duration: 60,
          insuranceLimiter: new RateLimiterMemory({ points: 3, duration: 60 }),
        }),
      );
      expect(client.status).not.toBe('ready');
    }
    const started = performance.now();
    const outcomes = await Promise.allSettled([0, 1, 0, 1, 0, 1].map((i) => instances[i]!.consume('cus_1')));
    expect(performance.now() - started).toBeLessThan(1_000 + MARGIN_MS);
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(3);
    for (const outcome of outcomes.filter((outcome) => outcome.status === 'rejected')) {
      expect(outcome.reason).toBeInstanceOf(RateLimiterRes);
    }
  });
});
