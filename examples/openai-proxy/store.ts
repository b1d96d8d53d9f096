import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { type BillingStore, MemoryStore, RedisStore } from '../../src/index.js';
import { ExampleConfigError } from './config.js';

/** The store the proxy runs on, and what the startup banner says about it. */
export interface StorePart {
  kind: 'memory' | 'redis';
  store: BillingStore;
  /** One line for the banner, without secrets. */
  description: string;
  close(): Promise<void>;
}

/** A Redis URL as it can be printed: the password replaced by `***`. */
export function redactedUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

async function connect(url: string): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const quiet = () => {}; // the failed connect() below reports the startup error itself
  redis.on('error', quiet);
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    throw new ExampleConfigError('REDIS_URL', `Redis does not answer: ${(error as Error).message}`);
  }
  redis.off('error', quiet);
  redis.on('error', (error: Error) => console.error(`Redis: ${error.message}`));
  return redis;
}

/** Deletes every key under `prefix` (SCAN, never KEYS: Redis keeps answering others meanwhile). */
async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

/**
 * A memory store, or a `RedisStore` on `REDIS_URL`. With the Dodo emulator (`forThisRunOnly`),
 * whose customers live as long as the process, the store uses a prefix of its own and deletes
 * its keys when it closes: another run's balances or unsent usage never meet this run's emulator.
 */
export async function openStore(
  redisUrl: string | undefined,
  options: { forThisRunOnly: boolean },
): Promise<StorePart> {
  if (redisUrl === undefined) {
    return {
      kind: 'memory',
      store: new MemoryStore(),
      description: 'in this process (set REDIS_URL for Redis)',
      close: async () => {},
    };
  }
  const redis = await connect(redisUrl);
  const prefix = options.forThisRunOnly ? `elb-demo:${randomUUID()}:` : undefined;
  return {
    kind: 'redis',
    store: new RedisStore({ client: redis, ...(prefix ? { prefix } : {}) }),
    description: `${redactedUrl(redisUrl)} (REDIS_URL)${prefix ? `, this run's keys under ${prefix}*` : ''}`,
    close: async () => {
      try {
        if (prefix) await deleteKeys(redis, prefix);
      } finally {
        redis.disconnect();
      }
    },
  };
}
