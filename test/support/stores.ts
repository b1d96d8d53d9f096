import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { BillingStore } from '../../src/store/types.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from './redis.js';

/**
 * The stores a money-path test runs on, for `describe.each`: a fresh MemoryStore, and a
 * RedisStore on keys of its own (removed after the file) when Redis can be had — always under
 * CI. Call at the top level of a test file.
 */
export async function storesUnderTest(what: string): Promise<[string, () => Promise<BillingStore>][]> {
  const stores: [string, () => Promise<BillingStore>][] = [['MemoryStore', async () => new MemoryStore()]];
  const redisUrl = await requireRedis(`${what} on RedisStore`);
  if (!redisUrl) return stores;
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const prefix = `elb-test:${randomUUID()}:`;
  afterAll(async () => {
    await deleteKeysWithPrefix(redis, prefix);
    await redis.quit();
  });
  stores.push([
    'RedisStore',
    async () => {
      await whenReady(redis);
      return new RedisStore({ client: redis, prefix: `${prefix}${randomUUID()}:` });
    },
  ]);
  return stores;
}
