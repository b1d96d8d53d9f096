import type { Request } from 'express';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { resolveLogger, resolveModelReader, resolveStore, type SharedOptions } from '../options.js';
import type { BillingStore } from '../store/types.js';
import { type ResolvedTier, resolveTiers, type Tier } from './tiers.js';

export interface TierRateLimitOptions extends SharedOptions {
  /** The tiers, lowest first; presets: `GUIDE_TIERS`, `OPENAI_TIERS`. */
  tiers: readonly Tier[];
  /** Namespace of the limiter keys in the store. @default 'tier' */
  keyPrefix?: string;
  /**
   * What happens while the store cannot count (Redis down or stalled past its deadline).
   * `'fail-closed'` answers 503 `billing_unavailable`: no instance admits more than the limit.
   * `{ instances: n }` limits each process on its own to its share of every limit (rounded up),
   * so `n` processes together stay within the limits.
   * @default 'fail-closed'
   */
  whenStoreDown?: 'fail-closed' | { instances: number };
}

export interface ResolvedTierRateLimitOptions {
  store: BillingStore;
  tiers: ResolvedTier[];
  keyPrefix: string;
  whenStoreDown: 'fail-closed' | { instances: number };
  /** The model named in the 429 message. */
  model: (req: Request) => string | undefined;
  logger: Logger;
}

const NAME = 'tierRateLimit';

export function resolveTierRateLimitOptions(
  options: Readonly<TierRateLimitOptions>,
): ResolvedTierRateLimitOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: options must be an object.`);
  }
  const keyPrefix = options.keyPrefix ?? 'tier';
  if (typeof keyPrefix !== 'string' || keyPrefix === '') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: \`keyPrefix\` must be a non-empty string.`);
  }
  const whenStoreDown = options.whenStoreDown ?? 'fail-closed';
  if (
    whenStoreDown !== 'fail-closed' &&
    !(
      typeof whenStoreDown === 'object' &&
      whenStoreDown !== null &&
      Number.isSafeInteger(whenStoreDown.instances) &&
      whenStoreDown.instances > 0
    )
  ) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${NAME}: \`whenStoreDown\` must be 'fail-closed' or { instances: n } with n the number of processes (got ${JSON.stringify(whenStoreDown)}).`,
    );
  }
  return {
    store: resolveStore(options, NAME),
    tiers: resolveTiers(options.tiers),
    keyPrefix,
    whenStoreDown,
    model: resolveModelReader(options.model, NAME),
    logger: resolveLogger(options.logger),
  };
}
