import type { Cluster, Redis } from 'ioredis';
import { ConfigError } from '../errors.js';
import { connectionFor } from './redis-client.js';
import type { NodeRedisClient, NodeRedisCluster } from './redis-client-node-redis.js';

export type { NodeRedisClient, NodeRedisCluster } from './redis-client-node-redis.js';

/** Options of `RedisStore`. */
export interface RedisStoreOptions {
  /**
   * The Redis client, from either library:
   * - ioredis 5 or 6: `new Redis(url)` for a single Redis, `new Cluster(nodes)` for Redis Cluster
   *   (the store defines its scripts on it);
   * - node-redis (`redis`) 5 or later: `createClient({ url })` or `createCluster({ rootNodes })`,
   *   connected by the app (`await client.connect()`).
   *
   * The store never quits it (`close()` leaves it open).
   * @example new RedisStore({ client: new Redis(process.env.REDIS_URL) })
   * @example new RedisStore({ client: await createClient({ url: process.env.REDIS_URL }).connect() })
   */
  client: Redis | Cluster | NodeRedisClient | NodeRedisCluster;
  /**
   * Prepended to every key, so several apps or test runs can share one Redis. Must not contain
   * `{` or `}` (Redis Cluster would take it as the hash tag).
   * @default 'elb:'
   */
  prefix?: string;
  /**
   * Number of outbox shards (hash-tag slots) customers are spread over. Changing it on existing
   * data moves customers to other shards: choose it once.
   * @default 16
   */
  shards?: number;
  /**
   * Deadline of every store operation, in ms. A Redis that is down, slow or not connected makes
   * the operation fail with a `StoreError` within it, never hang.
   * @default 1000
   */
  commandTimeoutMs?: number;
  /** Clock in ms since the epoch; tests inject a fake one. @default Date.now */
  now?: () => number;
}

/** Validates RedisStore options once, at construction, naming the option that is wrong. */
export function resolveRedisStoreOptions(options: Readonly<RedisStoreOptions>) {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      'RedisStore needs options: `new RedisStore({ client })`.',
    );
  }
  const { client, prefix = 'elb:', shards = 16, commandTimeoutMs = 1000, now = Date.now } = options;
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`prefix\` must be a string without \`{\` or \`}\` (Redis Cluster would read it as the hash tag; got ${JSON.stringify(prefix)}).`,
    );
  }
  if (!Number.isSafeInteger(shards) || shards <= 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`shards\` must be a positive integer (got ${String(shards)}).`,
    );
  }
  if (typeof commandTimeoutMs !== 'number' || !Number.isFinite(commandTimeoutMs) || commandTimeoutMs <= 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`commandTimeoutMs\` must be a positive number of milliseconds (got ${String(commandTimeoutMs)}).`,
    );
  }
  if (typeof now !== 'function') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', '`now` must be a function returning ms since the epoch.');
  }
  // Last: it defines the scripts on an ioredis client, and starts a `lazyConnect` one.
  const connection = connectionFor(client);
  return { connection, prefix, shards, commandTimeoutMs, now };
}
