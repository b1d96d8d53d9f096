import type { Request } from 'express';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { requireFunction, resolveLogger, resolveStore, type SharedOptions } from '../options.js';
import type { BillingStore } from '../store/types.js';
import { type ResolvedTier, resolveTiers, type Tier } from './tiers.js';

export interface TierRateLimitOptions extends Pick<SharedOptions, 'store' | 'customerId' | 'logger'> {
  /** The tiers, lowest first; presets: `SEED_TIERS`, `OPENAI_TIERS`. */
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

function modelFromBody(req: Request): string | undefined {
  const model = (req.body as { model?: unknown } | undefined)?.model;
  return typeof model === 'string' && model !== '' ? model : undefined;
}

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
    customerId: requireFunction(
      options.customerId,
      'customerId',
      NAME,
      'a function of the request returning the Dodo customer id from your own authentication',
    ),
    tiers: resolveTiers(options.tiers),
    keyPrefix,
    model:
      options.model === undefined
        ? modelFromBody
        : requireFunction(options.model, 'model', NAME, 'a function of the request returning the model name'),
    requestId:
      options.requestId === undefined
        ? undefined
        : requireFunction(
            options.requestId,
            'requestId',
            NAME,
            'a function of the request returning a unique id',
          ),
    logger: resolveLogger(options.logger),
  };
}
