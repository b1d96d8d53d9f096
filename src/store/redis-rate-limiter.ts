import { RateLimiterRedis } from 'rate-limiter-flexible';
import type { RedisCalls } from './redis-calls.js';

type RateLimiterRedisOptions = ConstructorParameters<typeof RateLimiterRedis>[0];

/** The storage primitives every method of a `rate-limiter-flexible` store limiter goes through. */
interface StorePrimitives {
  _upsert(rlKey: string, points: number, msDuration: number, forceExpire?: boolean): Promise<unknown>;
  _get(rlKey: string): Promise<unknown>;
  _delete(rlKey: string): Promise<boolean>;
}

/** `RateLimiterRedis`'s own primitives, which this class puts under the store's deadline. */
const redisPrimitives = RateLimiterRedis.prototype as unknown as StorePrimitives;

/**
 * `RateLimiterRedis` whose every call to Redis (consume, penalty, reward, get, set, block,
 * delete: they all go through `_upsert`, `_get` or `_delete`) runs as a RedisStore operation:
 *
 * - under the store's deadline, so a stalled Redis never hangs a request;
 * - after the client's first connection, waited for within the deadline, so instances that are
 *   still connecting share one count instead of each falling back to its own;
 * - failing with a `StoreError`, which `rate-limiter-flexible` hands to the `insuranceLimiter`
 *   when one is given, and otherwise rejects with (never a `RateLimiterRes`);
 * - and a consume (or penalty) abandoned at its deadline is given back: its reward is queued
 *   behind it on the connection, so when a stalled Redis resumes the late increment is undone
 *   at once instead of counting against the customer for the rest of the window. A `set` or
 *   `block` cannot be undone (the previous value is unknown); a late reward gives back what its
 *   caller meant to give back.
 */
export class RedisStoreRateLimiter extends RateLimiterRedis {
  constructor(
    private readonly calls: RedisCalls,
    options: RateLimiterRedisOptions,
  ) {
    // `rejectIfRedisNotReady` stays off: `calls.run` decides (waits for the first connection,
    // fails at once after a disconnect).
    super({ ...options, rejectIfRedisNotReady: false });
  }

  _upsert(rlKey: string, points: number, msDuration: number, forceExpire = false): Promise<unknown> {
    const upsert = () => redisPrimitives._upsert.call(this, rlKey, points, msDuration, forceExpire);
    if (forceExpire || !(Number(points) > 0)) return this.calls.run('rate limiter', upsert);
    const giveBack = () => redisPrimitives._upsert.call(this, rlKey, -Number(points), msDuration, false);
    return this.calls.run('rate limiter consume', (attempt) =>
      attempt.write(upsert, { send: giveBack, kind: 'once', until: Number.POSITIVE_INFINITY }),
    );
  }

  _get(rlKey: string): Promise<unknown> {
    return this.calls.run('rate limiter get', () => redisPrimitives._get.call(this, rlKey));
  }

  _delete(rlKey: string): Promise<boolean> {
    return this.calls.run('rate limiter delete', () => redisPrimitives._delete.call(this, rlKey));
  }
}
