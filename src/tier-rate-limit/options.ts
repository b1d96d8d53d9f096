import type { Request } from 'express';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import {
  resolveCustomerIdReader,
  resolveLogger,
  resolveModelReader,
  resolveRequestIdReader,
  resolveStore,
  type SharedOptions,
} from '../options.js';
import type { BillingStore } from '../store/types.js';
import { type ResolvedTier, resolveTiers, type Tier } from './tiers.js';

export interface TierRateLimitOptions extends Pick<SharedOptions, 'store' | 'customerId' | 'logger'> {
  /** The tiers, lowest first; presets: `GUIDE_TIERS`, `OPENAI_TIERS`. */
  tiers: readonly Tier[];
  /** Namespace of the limiter keys in the store. @default 'tier' */
  keyPrefix?: string;
  /** The model named in the 429 message. @default (req) => req.body?.model */
  model?: (req: Request) => string | undefined;
  /** An id for the request when no billing middleware ran before. @default randomUUID */
  requestId?: (req: Request) => string;
}

export interface ResolvedTierRateLimitOptions {
  store: BillingStore;
  customerId: (req: Request) => string | undefined | Promise<string | undefined>;
  tiers: ResolvedTier[];
  keyPrefix: string;
  model: (req: Request) => string | undefined;
  requestId: ((req: Request) => string) | undefined;
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
  return {
    store: resolveStore(options, NAME),
    customerId: resolveCustomerIdReader(options.customerId, NAME),
    tiers: resolveTiers(options.tiers),
    keyPrefix,
    model: resolveModelReader(options.model, NAME),
    requestId: resolveRequestIdReader(options.requestId, NAME),
    logger: resolveLogger(options.logger),
  };
}
