import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { createClientPool, createSentinel, RESP_TYPES } from 'redis';
import * as vitest from 'vitest';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, StoreError } from '../src/errors.js';
import { RedisStore, type RedisStoreOptions } from '../src/store/redis.js';
import type { RedisKeyspace } from '../src/store/redis-keys.js';
import { describeStoreConformance } from '../src/testing/index.js';
import {
  closeNodeRedisClients,
  connectedNodeRedisClient,
  type NodeRedisClientForTests,
  nodeRedisClient,
} from './support/node-redis.js';
import {
  deleteKeysWithPrefix,
  requireRedis,
  requireRedisBinaries,
  startRedisServer,
} from './support/redis.js';

/*
 * RedisStore on a node-redis (`redis` 5 or 6) client: the same conformance suite as on ioredis, on
 * the same Lua and key layout, plus what differs between the two libraries (how scripts are
 * sent, connecting, a Redis that dies).
 */

const MINUTE = 60_000;
const redisUrl = await requireRedis('RedisStore on node-redis');

if (!redisUrl) {
  describe.skip('RedisStore on node-redis (no Redis available)', () => {
    it('needs Redis', () => {});
  });
} else {
  const client = await connectedNodeRedisClient(redisUrl);
  /** ioredis, only to clean up and to inspect keys. */
  const admin = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const prefixes: string[] = [];

  const storeOn = (options: Partial<RedisStoreOptions> = {}) => {
    const prefix = `elb-test:${randomUUID()}:`;
    prefixes.push(prefix);
    return new RedisStore({ client, prefix, ...options });
  };

  afterAll(async () => {
    for (const prefix of prefixes) await deleteKeysWithPrefix(admin, prefix);
    await admin.quit();
    closeNodeRedisClients();
  });

  describeStoreConformance(
    'redis (node-redis)',
    {
      createStore: async (now) => storeOn({ now }),
      createUnreachableStore: () => {
        // A port nothing listens on: the client keeps trying, and never becomes ready.
        const unreachable = nodeRedisClient('redis://127.0.0.1:1', {
          socket: { reconnectStrategy: () => 200, connectTimeout: 200 },
        });
        unreachable.connect().catch(() => {});
        return new RedisStore({ client: unreachable, prefix: `elb-test:${randomUUID()}:` });
      },
    },
    vitest,
  );

  describe('RedisStore options on node-redis', () => {
    it('accepts a node-redis client and refuses what is neither library’s client, naming both', () => {
      expect(() => storeOn()).not.toThrow();
      const refused = () => new RedisStore({ client: { sendCommand: () => {} } as never });
      expect(refused).toThrow(ConfigError);
      expect(refused).toThrow(/ioredis client .* or a node-redis client .*createClient/);
    });

    it('refuses a client pool and a Sentinel client, which may send an undo on another connection than its write', () => {
      const pool = createClientPool({ url: redisUrl });
      const sentinel = createSentinel({
        name: 'mymaster',
        sentinelRootNodes: [{ host: '127.0.0.1', port: 1 }],
      });
      expect(() => new RedisStore({ client: pool as never })).toThrow(
        /node-redis client pool, which RedisStore does not support/,
      );
      expect(() => new RedisStore({ client: sentinel as never })).toThrow(
        /node-redis Sentinel client, .*createClient/,
      );
    });
  });

  describe('RedisStore scripts on node-redis', () => {
    /** The command names (EVAL, EVALSHA, …) the client was asked to send while `work` ran. */
    async function commandsSent(
      on: NodeRedisClientForTests,
      work: () => Promise<unknown>,
    ): Promise<string[]> {
      const names: string[] = [];
      const original = on.sendCommand.bind(on);
      on.sendCommand = ((args: string[], ...rest: unknown[]) => {
        names.push(String(args[0]).toUpperCase());
        return (original as (...all: unknown[]) => Promise<unknown>)(args, ...rest);
      }) as typeof on.sendCommand;
      try {
        await work().catch(() => {});
      } finally {
        on.sendCommand = original;
      }
      return names;
    }

    it('runs EVALSHA, and EVAL only after a NOSCRIPT reply (SCRIPT FLUSH)', async () => {
      const own = await connectedNodeRedisClient(redisUrl);
      const store = new RedisStore({ client: own, prefix: `elb-test:${randomUUID()}:` });
      await store.syncBalance('cus_1', 100n, 1);
      expect(await commandsSent(own, () => store.getBalance('cus_1'))).toEqual(['EVALSHA']);
      await admin.script('FLUSH');
      const sent = await commandsSent(own, async () => {
        expect((await store.getBalance('cus_1'))?.balance).toBe(100n);
      });
      expect(sent).toEqual(['EVALSHA', 'EVAL']);
      expect(await commandsSent(own, () => store.getBalance('cus_1'))).toEqual(['EVALSHA']);
      expect(await store.reserve('cus_1', 'r1', 10n, MINUTE)).toMatchObject({ ok: true });
    });

    it('retries only on NOSCRIPT: a script error fails once, as a StoreError with its cause', async () => {
      const own = await connectedNodeRedisClient(redisUrl);
      const store = new RedisStore({ client: own, prefix: `elb-test:${randomUUID()}:` });
      await store.syncBalance('cus_1', 100n, 1);
      await store.getBalance('cus_1');
      const keys = (store as unknown as { keys: RedisKeyspace }).keys.customer('cus_1');
      await admin.del(keys.reservationExpiries);
      await admin.set(keys.reservationExpiries, 'not a zset');
      let failure: unknown;
      const sent = await commandsSent(own, () =>
        store.getBalance('cus_1').catch((error: unknown) => {
          failure = error;
          throw error;
        }),
      );
      expect(sent).toEqual(['EVALSHA']);
      expect(failure).toBeInstanceOf(StoreError);
      expect(String((failure as StoreError).cause)).toMatch(/WRONGTYPE/);
    });

    it('reads the same replies on RESP2 and RESP3 (node-redis 6’s default), and from a client that maps strings to Buffers', async () => {
      const buffers = await connectedNodeRedisClient(redisUrl, {
        commandOptions: { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } },
      });
      const resp2 = await connectedNodeRedisClient(redisUrl, { RESP: 2 });
      const resp3 = await connectedNodeRedisClient(redisUrl, { RESP: 3 });
      for (const other of [buffers, resp2, resp3]) {
        const prefix = `elb-test:${randomUUID()}:`;
        prefixes.push(prefix);
        const store = new RedisStore({ client: other, prefix });
        await store.syncBalance('cus_1', 1_000n, 1);
        expect(await store.reserve('cus_1', 'r1', 100n, MINUTE)).toMatchObject({ ok: true });
        await store.settle({
          customerId: 'cus_1',
          reservationId: 'r1',
          settlementId: 'r1',
          cost: 40n,
          events: [],
          retentionMs: MINUTE,
          usage: [{ period: 'p', counters: { cost: 40n }, ttlMs: MINUTE }],
        });
        expect(await store.getBalance('cus_1')).toMatchObject({ balance: 960n, reserved: 0n });
        expect(await store.getUsage('cus_1', 'p')).toEqual({ cost: 40n });
        expect(await store.recordPayment('cus_1', 'pay_1', 5n, 7)).toMatchObject({ applied: true });
        expect(await store.getSpend('cus_1')).toEqual({ spend: 5n, firstPaymentAt: 7 });
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('claimed');
        await store.completeWebhook('wh_1', MINUTE);
        expect(await store.claimWebhook('wh_1', MINUTE)).toBe('done');
        const limiter = store.createRateLimiter({ keyPrefix: 'rpm', points: 2, duration: 60 });
        await expect(limiter.consume('cus_1')).resolves.toMatchObject({ remainingPoints: 1 });
      }
    });
  });

  describe('an ioredis store and a node-redis store on one Redis and prefix', () => {
    it('share customers: concurrent reserves through both hold at most the balance, settled once, read by either', async () => {
      const prefix = `elb-test:${randomUUID()}:`;
      prefixes.push(prefix);
      const onNodeRedis = new RedisStore({ client, prefix });
      const onIoredis = new RedisStore({ client: admin, prefix });
      await onIoredis.syncBalance('cus_1', 1_000n, 1);
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 === 0 ? onNodeRedis : onIoredis).reserve('cus_1', `r${i}`, 100n, MINUTE),
        ),
      );
      expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(10);
      const settlement = {
        customerId: 'cus_1',
        reservationId: 'r0',
        settlementId: 'r0',
        cost: 60n,
        events: [],
        retentionMs: MINUTE,
      };
      const settled = await Promise.all([onNodeRedis.settle(settlement), onIoredis.settle(settlement)]);
      expect(settled.filter((result) => result.applied)).toHaveLength(1);
      expect(await onNodeRedis.getBalance('cus_1')).toEqual(await onIoredis.getBalance('cus_1'));
      expect(await onIoredis.getBalance('cus_1')).toMatchObject({ balance: 940n });
    });

    it('share rate-limit counts: six concurrent requests through both at 3 RPM, three admitted', async () => {
      const prefix = `elb-test:${randomUUID()}:`;
      prefixes.push(prefix);
      const limiters = [client, admin].map((each) =>
        new RedisStore({ client: each, prefix }).createRateLimiter({
          keyPrefix: 'rpm',
          points: 3,
          duration: 60,
        }),
      );
      const outcomes = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) => limiters[i % 2]!.consume('cus_1')),
      );
      expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(3);
    });
  });

  describe('RedisStore connecting a node-redis client', () => {
    it('lets calls made while the client is still connecting wait for it, within the deadline', async () => {
      const fresh = nodeRedisClient(redisUrl);
      const connecting = fresh.connect();
      const store = new RedisStore({ client: fresh, prefix: `elb-test:${randomUUID()}:` });
      expect(fresh.isReady).toBe(false);
      expect(await store.getBalance('cus_1')).toBeUndefined();
      await connecting;
    });

    it('a client the app never connected fails each call at its deadline, saying to connect it', async () => {
      const never = nodeRedisClient(redisUrl);
      const store = new RedisStore({
        client: never,
        prefix: `elb-test:${randomUUID()}:`,
        commandTimeoutMs: 150,
      });
      await expect(store.getBalance('cus_1')).rejects.toThrow(
        /did not connect within 150 ms \(the node-redis client was never connected: call `await client.connect\(\)`/,
      );
    });

    it('does not close the injected client on close', async () => {
      const store = storeOn();
      await store.close();
      expect(client.isReady).toBe(true);
    });

    it.runIf(requireRedisBinaries('RedisStore on node-redis, Redis dies'))(
      'fails at once with a StoreError when its Redis dies; its rate limiter falls back to the insurance limiter',
      async () => {
        const server = await startRedisServer();
        try {
          const own = await connectedNodeRedisClient(server.url, {
            socket: { reconnectStrategy: () => 100 },
          });
          const store = new RedisStore({ client: own, prefix: 'elb-test:' });
          await store.syncBalance('cus_1', 100n, 1);
          await server.kill();
          await vitest.expect.poll(() => own.isReady).toBe(false);
          const started = performance.now();
          await expect(store.getBalance('cus_1')).rejects.toThrow(
            /Redis is not ready \(the client is reconnecting\)/,
          );
          await expect(store.claimWebhook('wh', MINUTE)).rejects.toBeInstanceOf(StoreError);
          expect(performance.now() - started).toBeLessThan(100);

          const limiter = store.createRateLimiter({
            keyPrefix: 'rl',
            points: 1,
            duration: 60,
            insuranceLimiter: new RateLimiterMemory({ points: 1, duration: 60 }),
          });
          await expect(limiter.consume('cus_1')).resolves.toMatchObject({ remainingPoints: 0 });
          await expect(limiter.consume('cus_1')).rejects.toMatchObject({ remainingPoints: 0 });
        } finally {
          await server.stop();
        }
      },
    );
  });
}
