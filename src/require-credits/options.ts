import type DodoPayments from 'dodopayments';
import type { Request } from 'express';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Money, PriceInput } from '../money.js';
import {
  positiveInteger,
  type ResolvedPricing,
  requireFunction,
  requireOption,
  resolveCustomerIdReader,
  resolveLogger,
  resolveModelPricing,
  resolveModelReader,
  resolveRequestIdReader,
  resolveStore,
  resolveUnitsPerCredit,
  type SharedOptions,
} from '../options.js';
import type { BillingStore } from '../store/types.js';
import { charactersOverFour, type TokenEstimator } from './estimate.js';

export interface RequireCreditsOptions extends SharedOptions {
  /**
   * How long a balance view is trusted before it is refreshed from Dodo in the background
   * (and before a refusal is double-checked with Dodo).
   * @default 30_000
   */
  balanceTtlMs?: number;
  /** Deadline of a balance call to Dodo. @default 3_000 */
  dodoTimeoutMs?: number;
  /**
   * How long a reservation lives if its process dies before the response ends. Longer than
   * your longest stream.
   * @default 600_000
   */
  reservationTtlMs?: number;
  /** Counts a text's tokens to estimate the input. @default characters / 4 */
  estimateTokens?: TokenEstimator;
  /**
   * Output tokens reserved when the request sets none of `max_tokens`,
   * `max_completion_tokens`, `max_output_tokens`.
   * @default 1024
   */
  defaultMaxOutputTokens?: number;
  /** The model a request is priced at. @default (req) => req.body?.model */
  model?: (req: Request) => string | undefined;
  /** Price for models missing from `pricing`; without it they are refused with 400. */
  defaultPrice?: PriceInput;
  /** Status of a refusal for lack of credits: 402, or 429 as OpenAI itself answers. @default 402 */
  insufficientStatus?: 402 | 429;
  /** Admit requests when the store or Dodo is unreachable (logged), instead of 503. @default false */
  failOpen?: boolean;
  /** `retry-after` seconds of a 503 `billing_unavailable`. @default 5 */
  retryAfterSeconds?: number;
  /** An id for the request, unique per request: it keys the reservation and the usage events. @default randomUUID */
  requestId?: (req: Request) => string;
}

export interface ResolvedRequireCreditsOptions {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  customerId: (req: Request) => string | undefined | Promise<string | undefined>;
  pricing: ResolvedPricing;
  perCredit: Money;
  balanceTtlMs: number;
  dodoTimeoutMs: number;
  reservationTtlMs: number;
  estimateTokens: TokenEstimator;
  defaultMaxOutputTokens: number;
  model: (req: Request) => string | undefined;
  insufficientStatus: 402 | 429;
  failOpen: boolean;
  retryAfterSeconds: number;
  requestId: ((req: Request) => string) | undefined;
  logger: Logger;
}

const NAME = 'requireCredits';

export function resolveRequireCreditsOptions(
  options: Readonly<RequireCreditsOptions>,
): ResolvedRequireCreditsOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: options must be an object.`);
  }
  const insufficientStatus = options.insufficientStatus ?? 402;
  if (insufficientStatus !== 402 && insufficientStatus !== 429) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${NAME}: \`insufficientStatus\` must be 402 or 429 (got ${insufficientStatus}).`,
    );
  }
  return {
    store: resolveStore(options, NAME),
    dodo: requireOption(options.dodo, 'dodo', NAME, 'a DodoPayments client, to read balances'),
    creditEntitlementId: requireOption(
      options.creditEntitlementId,
      'creditEntitlementId',
      NAME,
      'the id of the fiat credit entitlement whose balance is checked (cde_…)',
    ),
    customerId: resolveCustomerIdReader(options.customerId, NAME),
    pricing: resolveModelPricing(options.pricing, options.defaultPrice, NAME),
    perCredit: resolveUnitsPerCredit(options.creditsPerDollar),
    balanceTtlMs: positiveInteger(options.balanceTtlMs, 'balanceTtlMs', NAME, 30_000),
    dodoTimeoutMs: positiveInteger(options.dodoTimeoutMs, 'dodoTimeoutMs', NAME, 3_000),
    reservationTtlMs: positiveInteger(options.reservationTtlMs, 'reservationTtlMs', NAME, 600_000),
    estimateTokens:
      options.estimateTokens === undefined
        ? charactersOverFour
        : requireFunction(
            options.estimateTokens,
            'estimateTokens',
            NAME,
            'a function of a text returning its token count',
          ),
    defaultMaxOutputTokens: positiveInteger(
      options.defaultMaxOutputTokens,
      'defaultMaxOutputTokens',
      NAME,
      1024,
    ),
    model: resolveModelReader(options.model, NAME),
    insufficientStatus,
    failOpen: options.failOpen ?? false,
    retryAfterSeconds: positiveInteger(options.retryAfterSeconds, 'retryAfterSeconds', NAME, 5),
    requestId: resolveRequestIdReader(options.requestId, NAME),
    logger: resolveLogger(options.logger),
  };
}
