import { randomUUID } from 'node:crypto';
import { setTimeout as setTimeoutReal } from 'node:timers';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import * as vitest from 'vitest';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, StoreError } from '../src/errors.js';
import { RedisStore, type RedisStoreOptions } from '../src/store/redis.js';
import { fnv1a32, RedisKeyspace } from '../src/store/redis-keys.js';
import bignum from '../src/store/scripts/bignum.lua';
import { describeStoreConformance } from '../src/testing/index.js';
import {
  deleteKeysWithPrefix,
  requireRedis,
  requireRedisBinaries,
  startRedisServer,
  whenReady,
} from './support/redis.js';

const MINUTE = 60_000;
const redisUrl = await requireRedis('RedisStore');

if (!redisUrl) {
  describe.skip('RedisStore (no Redis available)', () => {
    it('needs Redis', () => {});
  });
} else {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const prefixes: string[] = [];
  const throwaway: Redis[] = [];

  const storeOn = async (options: Partial<RedisStoreOptions> = {}) => {
    await whenReady(client);
    const prefix = `elb-test:${randomUUID()}:`;
    prefixes.push(prefix);
    return new RedisStore({ client, prefix, ...options });
  };

  /** A client to a port nothing listens on: it never becomes ready. */
  const unreachableClient = () => {
    const unreachable = new Redis({ host: '127.0.0.1', port: 1, retryStrategy: () => 200 });
    unreachable.on('error', () => {});
    throwaway.push(unreachable);
    return unreachable;
  };

  afterAll(async () => {
    for (const prefix of prefixes) await deleteKeysWithPrefix(client, prefix);
    for (const other of throwaway) other.disconnect();
    await client.quit();
  });

  describeStoreConformance(
    'redis',
    {
      createStore: (now) => storeOn({ now }),
      createUnreachableStore: () =>
        new RedisStore({ client: unreachableClient(), prefix: `elb-test:${randomUUID()}:` }),
    },
    vitest,
  );

  describe('RedisStore options', () => {
    it('names the option that is wrong', () => {
      const build = (options: Partial<RedisStoreOptions>) => () => new RedisStore({ client, ...options });
      expect(build({ prefix: 'app:{x}:' })).toThrow(ConfigError);
      expect(build({ prefix: 'app:{x}:' })).toThrow(/`prefix`/);
      expect(build({ shards: 0 })).toThrow(/`shards` must be a positive integer/);
      expect(build({ shards: 1.5 })).toThrow(/`shards`/);
      expect(build({ commandTimeoutMs: -1 })).toThrow(/`commandTimeoutMs`/);
      expect(() => new RedisStore({ client: {} as Redis })).toThrow(/`client` must be an ioredis client/);
    });
  });

  describe('RedisStore key layout', () => {
    it('hashes ids with FNV-1a over UTF-8 bytes', () => {
      // Reference values of 32-bit FNV-1a.
      expect(fnv1a32('')).toBe(0x811c9dc5);
      expect(fnv1a32('a')).toBe(0xe40c292c);
      expect(fnv1a32('foobar')).toBe(0xbf9cf968);
      expect(fnv1a32('é')).not.toBe(fnv1a32('e'));
    });

    it('puts every key of a customer and its outbox under one shard tag, before the id', () => {
      const keyspace = new RedisKeyspace('elb:', 16);
      for (const id of ['{cus}', 'a:b', '__proto__', '客户']) {
        const keys = keyspace.customer(id);
        const tag = `{s${keyspace.shardOf(id)}}`;
        const all = [
          keys.balance,
          keys.reservationExpiries,
          keys.reservationAmounts,
          keys.appliedIds,
          keys.spend,
          keys.spendIds,
          keys.subscriptions,
          keys.usage('2026-11'),
          keys.outbox.ready,
          keys.outbox.meta,
        ];
        for (const key of all) expect(key.indexOf('{')).toBe(`elb:`.length);
        for (const key of all) expect(key.startsWith(`elb:${tag}:`)).toBe(true);
      }
    });

    it('never lets two customers or periods share a usage key', () => {
      const keyspace = new RedisKeyspace('elb:', 1);
      expect(keyspace.customer('a:usage:x').usage('y')).not.toBe(keyspace.customer('a').usage('x:usage:x:y'));
      expect(keyspace.customer('a:b').usage('c')).not.toBe(keyspace.customer('a').usage('b:c'));
    });
  });

  describe('RedisStore exact money in Lua', () => {
    it('adds, subtracts, multiplies and compares like BigInt, across the fast path’s 2^52 edge and far beyond 2^53', async () => {
      await whenReady(client);
      // Chained, so plain numbers and limbs meet in every combination.
      const script = `${bignum}
        local a, b = bignum_parse(ARGV[1]), bignum_parse(ARGV[2])
        local sum = bignum_add(a, b)
        return { bignum_tostring(sum), bignum_tostring(bignum_sub(a, b)), bignum_cmp(a, b),
          bignum_tostring(bignum_sub(sum, b)), bignum_cmp(sum, a), bignum_tostring(bignum_mul_small(a, 9999)),
          bignum_sign(bignum_sub(a, b)) }`;
      const edge = 2n ** 52n;
      const amount = fc.oneof(
        fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }),
        fc.bigInt({ min: -10_000_000n, max: 10_000_000n }),
        fc.bigInt({ min: edge - 2_000n, max: edge + 2_000n }),
        fc.bigInt({ min: -edge - 2_000n, max: -edge + 2_000n }),
        fc.bigInt({ min: -(2n ** 54n), max: 2n ** 54n }),
        fc.constantFrom(
          0n,
          9_999_999n,
          10_000_000n,
          -10_000_000n,
          2n ** 53n,
          2n ** 53n + 1n,
          2n ** 63n,
          -(2n ** 64n),
        ),
      );
      await fc.assert(
        fc.asyncProperty(amount, amount, async (a, b) => {
          const [sum, difference, order, back, grew, product, sign] = (await client.eval(
            script,
            0,
            a.toString(),
            b.toString(),
          )) as [string, string, number, string, number, string, number];
          const cmp = (x: bigint, y: bigint) => (x < y ? -1 : x > y ? 1 : 0);
          expect(sum).toBe((a + b).toString());
          expect(difference).toBe((a - b).toString());
          expect(order).toBe(cmp(a, b));
          expect(back).toBe(a.toString());
          expect(grew).toBe(cmp(a + b, a));
          expect(product).toBe((a * 9999n).toString());
          expect(sign).toBe(cmp(a - b, 0n));
        }),
        { numRuns: 600 },
      );
    });

    it('keeps usage counters exact beyond int64', async () => {
      const store = await storeOn();
      const huge = 2n ** 70n + 1n;
      await store.addUsage('cus_1', { period: 'p', counters: { cost: huge }, ttlMs: MINUTE });
      await store.addUsage('cus_1', { period: 'p', counters: { cost: huge, refund: -huge }, ttlMs: MINUTE });
      expect(await store.getUsage('cus_1', 'p')).toEqual({ cost: 2n * huge, refund: -huge });
    });

    it('keeps usage counters exact across the int64 edge, where HINCRBY hands over to bignum', async () => {
      const store = await storeOn();
      const int64 = 2n ** 63n;
      const amount = fc.oneof(
        fc.bigInt({ min: int64 - 3n, max: int64 + 3n }),
        fc.bigInt({ min: -int64 - 3n, max: -int64 + 3n }),
        fc.bigInt({ min: -(2n ** 62n), max: 2n ** 62n }),
        fc.bigInt({ min: -1_000n, max: 1_000n }),
      );
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(amount, { minLength: 1, maxLength: 8 }), async (amounts) => {
          const period = `p${run++}`;
          for (const cost of amounts)
            await store.addUsage('cus_1', { period, counters: { cost }, ttlMs: MINUTE });
          const total = amounts.reduce((sum, cost) => sum + cost, 0n);
          expect((await store.getUsage('cus_1', period)).cost ?? 0n).toBe(total);
        }),
        { numRuns: 150 },
      );
    });

    it('refuses a malformed amount with a StoreError instead of storing it', async () => {
      const store = await storeOn();
      await store.syncBalance('cus_1', 100n, 1);
      const spy = store as unknown as { keys: RedisKeyspace };
      await client.hset(spy.keys.customer('cus_1').balance, 'balance', '1.5');
      await expect(store.reserve('cus_1', 'r1', 1n, MINUTE)).rejects.toBeInstanceOf(StoreError);
    });
  });

  describe('RedisStore under fake timers', () => {
    it("answers while a test's fake timers hold setImmediate (the socket's uncork does not wait for them)", async () => {
      const store = await storeOn();
      vitest.vi.useFakeTimers();
      try {
        const answer = await Promise.race([
          store.syncBalance('cus_fake_timers', 5n, 1).then(() => 'answered'),
          new Promise((resolve) => globalThis.queueMicrotask(() => setTimeoutReal(resolve, 2_000, 'stuck'))),
        ]);
        expect(answer).toBe('answered');
      } finally {
        vitest.vi.useRealTimers();
      }
    });
  });

  describe('RedisStore scripts', () => {
    /**
     * The script commands (EVAL or EVALSHA) the client wrote while `work` ran. ioredis decides
     * between them when it writes to the socket, so names are read once the work is done.
     */
    async function scriptCommandsSent(work: () => Promise<unknown>): Promise<string[]> {
      const commands: { name: string }[] = [];
      const original = client.sendCommand.bind(client);
      client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
        commands.push(command);
        return (original as (...args: unknown[]) => unknown)(command, ...rest);
      }) as typeof client.sendCommand;
      try {
        await work().catch(() => {});
      } finally {
        client.sendCommand = original;
      }
      return commands.map((command) => command.name).filter((name) => name === 'eval' || name === 'evalsha');
    }

    it('runs EVALSHA and falls back to EVAL after SCRIPT FLUSH', async () => {
      const store = await storeOn();
      await store.syncBalance('cus_1', 100n, 1);
      // ioredis sends EVAL the first time a script runs on a connection, EVALSHA afterwards.
      expect(await scriptCommandsSent(() => store.getBalance('cus_1'))).toEqual(['eval']);
      expect(await scriptCommandsSent(() => store.getBalance('cus_1'))).toEqual(['evalsha']);
      await client.script('FLUSH');
      const sent = await scriptCommandsSent(async () => {
        expect((await store.getBalance('cus_1'))?.balance).toBe(100n);
      });
      expect(sent).toEqual(['evalsha', 'eval']);
      expect(await store.reserve('cus_1', 'r1', 10n, MINUTE)).toMatchObject({ ok: true });
    });

    it('retries only on NOSCRIPT: a script error fails once, as a StoreError with its cause', async () => {
      const store = await storeOn();
      await store.syncBalance('cus_1', 100n, 1);
      await store.getBalance('cus_1');
      const keys = (store as unknown as { keys: RedisKeyspace }).keys.customer('cus_1');
      await client.del(keys.reservationExpiries);
      await client.set(keys.reservationExpiries, 'not a zset');
      let failure: unknown;
      const sent = await scriptCommandsSent(() =>
        store.getBalance('cus_1').catch((error: unknown) => {
          failure = error;
          throw error;
        }),
      );
      expect(sent).toEqual(['evalsha']);
      expect(failure).toBeInstanceOf(StoreError);
      expect((failure as StoreError).cause).toBeInstanceOf(Error);
      expect(String((failure as StoreError).cause)).toMatch(/WRONGTYPE/);
    });
  });

  describe('RedisStore deadlines', () => {
    it('fails within commandTimeoutMs when Redis stops answering', async () => {
      const store = await storeOn({ commandTimeoutMs: 200 });
      await store.syncBalance('cus_1', 100n, 1);
      const admin = new Redis(redisUrl);
      throwaway.push(admin);
      await admin.client('PAUSE', 500, 'ALL');
      try {
        const started = performance.now();
        await expect(store.reserve('cus_1', 'r1', 1n, MINUTE)).rejects.toThrow(/within 200 ms/);
        expect(performance.now() - started).toBeLessThan(900);
      } finally {
        await admin.client('UNPAUSE');
      }
    });

    it.runIf(requireRedisBinaries('RedisStore deadlines'))(
      'fails at once with a StoreError when its Redis dies; its rate limiter falls back to the insurance limiter',
      async () => {
        const server = await startRedisServer();
        const own = new Redis(server.url, { maxRetriesPerRequest: 1, retryStrategy: () => 100 });
        own.on('error', () => {});
        throwaway.push(own);
        try {
          await whenReady(own);
          const store = new RedisStore({ client: own, prefix: 'elb-test:' });
          await store.syncBalance('cus_1', 100n, 1);
          await server.kill();
          await new Promise((resolve) => setTimeout(resolve, 50));
          const started = performance.now();
          await expect(store.getBalance('cus_1')).rejects.toBeInstanceOf(StoreError);
          await expect(store.claimWebhook('wh', MINUTE)).rejects.toBeInstanceOf(StoreError);
          expect(performance.now() - started).toBeLessThan(1000);

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

  describe('RedisStore on a shared client', () => {
    it('connects a lazyConnect client instead of failing on it forever', async () => {
      const lazy = new Redis(redisUrl, { lazyConnect: true });
      throwaway.push(lazy);
      const store = new RedisStore({ client: lazy, prefix: `elb-test:${randomUUID()}:` });
      await whenReady(lazy);
      expect(await store.getBalance('cus_1')).toBeUndefined();
    });

    it('lets calls made while a new client is still connecting wait for it, within the deadline', async () => {
      const fresh = new Redis(redisUrl);
      throwaway.push(fresh);
      const store = new RedisStore({ client: fresh, prefix: `elb-test:${randomUUID()}:` });
      expect(fresh.status).not.toBe('ready');
      expect(await store.getBalance('cus_1')).toBeUndefined();
    });

    it('does not quit the injected client on close, and isolates prefixes', async () => {
      const first = await storeOn();
      const second = await storeOn();
      await first.syncBalance('cus_1', 5n, 1);
      await first.close();
      expect(client.status).toBe('ready');
      expect(await second.getBalance('cus_1')).toBeUndefined();
      expect((await first.getBalance('cus_1'))?.balance).toBe(5n);
    });
  });
}
