import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/store/redis.js';
import { type ScriptName, scriptSha } from '../../src/store/redis-scripts.js';
import {
  closeNodeRedisClients,
  connectedNodeRedisClient,
  type NodeRedisClientForTests,
} from '../support/node-redis.js';
import { requireRedisBinaries, startRedisServer } from '../support/redis.js';
import {
  COST,
  DAY,
  DEADLINE_MS,
  failsAtDeadline,
  MINUTE,
  stallCasesOfAnyClient,
  usageEvent,
} from './stall-support.js';

/*
 * redis-stall.test.ts, on a node-redis client: a call abandoned at its deadline cannot take
 * effect later. The test's own `redis-server` is stalled with SIGSTOP while calls are in flight;
 * each call fails with a StoreError at its deadline, what it sent still runs when Redis resumes,
 * and its undo, queued behind it on the connection, leaves nothing behind.
 *
 * One difference with ioredis is tested here: node-redis does not resend a command written to a
 * connection that dropped (it rejects it), so after a crash the abandoned writes never run, and
 * the undos, sent again once the client is ready, find nothing to undo.
 */

const canRun = requireRedisBinaries('reliability: Redis stalls on node-redis');

/** Calls `onSend` synchronously when the client is asked to run the given script, before it writes a byte. */
function beforeSending(client: NodeRedisClientForTests, name: ScriptName, onSend: () => void): () => void {
  const sha = scriptSha(name);
  const original = client.sendCommand.bind(client);
  client.sendCommand = ((args: string[], ...rest: unknown[]) => {
    if (args[0] === 'EVALSHA' && args[1] === sha) onSend();
    return (original as (...all: unknown[]) => Promise<unknown>)(args, ...rest);
  }) as typeof client.sendCommand;
  return () => {
    client.sendCommand = original;
  };
}

describe.runIf(canRun)(
  'RedisStore on node-redis: a call abandoned at its deadline cannot take effect later',
  () => {
    const cleanups: (() => Promise<unknown> | unknown)[] = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
      closeNodeRedisClients();
    });

    /** A server of the test's own, a node-redis client with its defaults, a store with a short deadline. */
    async function stallable(options: { appendOnlyDir?: string; disableOfflineQueue?: boolean } = {}) {
      const { disableOfflineQueue = false, ...serverOptions } = options;
      const server = await startRedisServer(serverOptions);
      const holder = { server };
      cleanups.push(() => holder.server.stop());
      const client = await connectedNodeRedisClient(server.url, {
        disableOfflineQueue,
        socket: { reconnectStrategy: () => 50 },
      });
      const store = new RedisStore({
        client,
        prefix: `elb-test:${randomUUID()}:`,
        commandTimeoutMs: DEADLINE_MS,
      });
      cleanups.push(() => store.close());
      return { holder, server, client, store };
    }

    it('reservations made while Redis is stalled are released when it resumes: the customer is not locked out', async () => {
      const { server, store } = await stallable();
      await store.syncBalance('cus_1', 10n * COST, Date.now());
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

      await expect.poll(async () => (await store.getBalance('cus_1'))?.reserved, { timeout: 2_000 }).toBe(0n);
      expect(await store.getBalance('cus_1')).toMatchObject({ balance: 10n * COST, available: 10n * COST });
      expect(await store.reserve('cus_1', 'next', 10n * COST, 10 * MINUTE)).toMatchObject({ ok: true });
      // The reserves did run late: Redis counted them.
      const admin = new Redis(server.url);
      cleanups.push(() => admin.disconnect());
      const stats = await admin.info('commandstats');
      expect(Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1])).toBeGreaterThanOrEqual(1 + 9 + 9 + 1);
    });

    it('admissions made while Redis is stalled are released when it resumes: the retry is admitted', async () => {
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
      expect(await store.admit(admission('req_1'))).toMatchObject({
        credits: { ok: true, reserved: 3n * COST },
      });
    });

    it.each([
      { when: 'with the offline queue', disableOfflineQueue: false },
      { when: 'without an offline queue', disableOfflineQueue: true },
    ])(
      'Redis killed with the reserves unanswered and restarted ($when): node-redis drops them, and nothing is held',
      { timeout: 20_000 },
      async ({ disableOfflineQueue }) => {
        const directory = await mkdtemp(join(tmpdir(), 'elb-redis-aof-'));
        cleanups.push(() => rm(directory, { recursive: true, force: true }));
        const { holder, client, store } = await stallable({ appendOnlyDir: directory, disableOfflineQueue });
        await store.syncBalance('cus_1', 10n * COST, Date.now());
        expect(await store.reserve('cus_1', 'warm-up', COST, 10 * MINUTE)).toMatchObject({ ok: true });
        await store.release('cus_1', 'warm-up');

        holder.server.pause();
        const reserves = await Promise.all(
          Array.from({ length: 5 }, (_, i) =>
            failsAtDeadline(() => store.reserve('cus_1', `r${i}`, COST, 10 * MINUTE)),
          ),
        );
        expect(reserves).toHaveLength(5);
        // The stalled server dies with the reserves and their undos in its socket: none ran.
        await holder.server.kill();
        await expect.poll(() => client.isReady).toBe(false);
        holder.server = await startRedisServer({ port: holder.server.port, appendOnlyDir: directory });
        await expect.poll(() => client.isReady, { timeout: 5_000 }).toBe(true);

        expect(await store.getBalance('cus_1')).toMatchObject({
          balance: 10n * COST,
          reserved: 0n,
          available: 10n * COST,
        });
        // Unlike ioredis, node-redis did not resend the reserves to the restarted server; the
        // undos (which failed with the connection) were sent again once the client was ready.
        const admin = new Redis(holder.server.url);
        cleanups.push(() => admin.disconnect());
        await expect
          .poll(async () => admin.script('EXISTS', scriptSha('releaseAbandoned')), { timeout: 2_000 })
          .toEqual([1]);
        expect(await admin.script('EXISTS', scriptSha('reserve'))).toEqual([0]);
        expect(await store.reserve('cus_1', 'next', 10n * COST, 10 * MINUTE)).toMatchObject({ ok: true });
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
      // Load every script once, so the stalled one is sent as EVALSHA.
      const warm = await store.claimOutbox(10, 10);
      await store.nackOutbox(warm, [], 0);
      await new Promise((resolve) => setTimeout(resolve, 20));
      const restore = beforeSending(client, 'claimOutbox', () => server.pause());
      await failsAtDeadline(() => store.claimOutbox(10, 10 * MINUTE));
      restore();
      server.resume();

      await expect.poll(async () => (await store.outboxStats()).leased, { timeout: 2_000 }).toBe(0);
      const batch = await store.claimOutbox(10, 10 * MINUTE);
      expect(batch.events.map((claimed) => claimed.event.event_id).sort()).toEqual([
        'evt_0',
        'evt_1',
        'evt_2',
        'evt_3',
      ]);
    });

    stallCasesOfAnyClient(stallable);

    it('a rate limiter call fails at the deadline; a consume abandoned there is given back when Redis resumes', async () => {
      const { server, store } = await stallable();
      const limiter = store.createRateLimiter({ keyPrefix: 'rpm', points: 3, duration: 60 });
      await limiter.consume('cus_1');
      server.pause();
      await Promise.all([1, 2, 3].map(() => failsAtDeadline(() => limiter.consume('cus_1'))));
      await failsAtDeadline(() => limiter.get('cus_1'));
      server.resume();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect((await limiter.get('cus_1'))?.consumedPoints).toBe(1);
      await expect(limiter.consume('cus_1')).resolves.toMatchObject({ remainingPoints: 1 });
    });
  },
);
