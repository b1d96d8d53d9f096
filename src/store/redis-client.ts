import { ConfigError } from '../errors.js';
import { IoredisConnection } from './redis-client-ioredis.js';
import {
  isNodeRedisClient,
  isNodeRedisCluster,
  type NodeRedisClient,
  type NodeRedisCluster,
  NodeRedisConnection,
  unsupportedNodeRedisClient,
} from './redis-client-node-redis.js';
import type { ScriptArgument, ScriptName } from './redis-scripts.js';

/**
 * What RedisStore needs of a Redis client, whichever library it comes from: its scripts, the
 * four plain commands it reads and writes with, and enough of the connection's state to keep
 * its deadline and undo promises (see redis-calls.ts). One implementation per library; the
 * Lua, the keys and every reply parser above this interface are shared.
 */
export interface RedisConnection {
  /** `'ioredis'` or `'node-redis'`, for messages. */
  readonly library: string;
  /**
   * Runs one of the store's scripts: EVALSHA, and EVAL only on a NOSCRIPT reply (after a
   * restart or `SCRIPT FLUSH`). `args` are KEYS then ARGV, with the KEYS count first for the
   * scripts that take a variable number of keys. Replies are RESP2-shaped: strings, integers as
   * numbers, arrays, `null`.
   */
  script(name: ScriptName, args: readonly ScriptArgument[]): Promise<unknown>;
  /** HGETALL as field/value pairs. */
  hgetall(key: string): Promise<[string, string][]>;
  hmget(key: string, fields: readonly string[]): Promise<(string | null)[]>;
  hvals(key: string): Promise<string[]>;
  /** SET key value PX ttlMs. */
  setPx(key: string, value: string, ttlMs: number): Promise<void>;
  /** Connected and ready for commands now. */
  isReady(): boolean;
  /**
   * Still making its first connection (or, for a client connected by the app, not yet asked
   * to): a call waits for it within its deadline instead of failing at once.
   */
  isStarting(): boolean;
  /** The connection's state in words, for the error of a call made while it is not ready. */
  describeState(): string;
  /** Why a call waited for the first connection in vain, when the app can fix it; or ''. */
  connectHint(): string;
  /** Calls `listener` once, when the client is ready for commands; returns the cancel. */
  onceReady(listener: () => void): () => void;
  /** Calls `listener` once, when a connection attempt fails or the client ends; returns the cancel. */
  onceFailure(listener: (error?: unknown) => void): () => void;
  /**
   * Calls `listener` once, when a command that failed for want of a connection is worth sending
   * again (after a reconnect, and after the library resent what it resends); returns the cancel.
   */
  afterReconnect(listener: () => void): () => void;
  /**
   * Lets the commands sent until the end of this turn of the event loop leave in one socket
   * write (a request's admission sends its script and its rate-limit counts together, and under
   * load many requests are handled in one turn): each write is a system call, which costs more
   * than the command's own work in Redis. Order is kept.
   */
  coalesceWritesThisTurn(): void;
  /** Whether an error is Redis's own reply (the command ran, or was refused): not worth a retry. */
  isReplyError(error: unknown): boolean;
  /** The client and flags `rate-limiter-flexible`'s `RateLimiterRedis` needs for it. */
  readonly rateLimiterClient: { storeClient: unknown; useRedisPackage?: boolean };
}

/** The clients `RedisStore` accepts, as the caller hands them over. */
export type AnyRedisClient = object;

function isIoredisClient(client: object): boolean {
  return typeof (client as { defineCommand?: unknown }).defineCommand === 'function';
}

/**
 * The connection for the client given to `new RedisStore({ client })`, by what it has (no
 * library is imported: either one is an optional peer): ioredis defines commands, a node-redis
 * client has `isReady`, a node-redis cluster routes `sendCommand` by key.
 */
export function connectionFor(client: unknown): RedisConnection {
  if (client !== null && typeof client === 'object') {
    if (isIoredisClient(client)) return new IoredisConnection(client as never);
    const unsupported = unsupportedNodeRedisClient(client);
    if (unsupported) {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        `\`client\` is a node-redis ${unsupported}, which RedisStore does not support: it sends the undo of a call abandoned at its deadline behind that call on the same connection, and ${unsupported === 'client pool' ? 'a pool' : 'Sentinel'} may use another. Pass a single client (\`createClient({ url })\`${unsupported === 'client pool' ? '' : ' on the master'}) or a cluster client (\`createCluster({ rootNodes })\`).`,
      );
    }
    if (isNodeRedisCluster(client)) return new NodeRedisConnection(client as NodeRedisCluster, true);
    if (isNodeRedisClient(client)) return new NodeRedisConnection(client as NodeRedisClient, false);
  }
  throw new ConfigError(
    'ERR_ELB_INVALID_OPTION',
    '`client` must be an ioredis client (`new Redis(url)` or `new Cluster(nodes)` from `ioredis`) or a node-redis client (`createClient({ url })` or `createCluster({ rootNodes })` from `redis`, 5 or 6).',
  );
}
