import type DodoPayments from 'dodopayments';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { type BillingObserver, resolveObserver } from '../metrics/observer.js';
import { type Money, parseUsd } from '../money.js';
import {
  positiveInteger,
  requireOption,
  resolveLogger,
  resolveStore,
  resolveUnitsPerCredit,
  type SharedOptions,
} from '../options.js';
import type { BillingStore } from '../store/types.js';

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
  /**
   * How far below zero a customer's available balance may go, in US dollars: what concurrent
   * requests can be billed beyond the balance at most (with an input estimate that is a bound,
   * as the default one is). `"0"` refuses every request the balance does not cover.
   * @default '0'
   */
  overdraft?: string | number;
  /** Status of a refusal for lack of credits: 402, or 429 as OpenAI itself answers. @default 402 */
  insufficientStatus?: 402 | 429;
  /** Admit requests when the store or Dodo is unreachable (logged), instead of 503. @default false */
  failOpen?: boolean;
  /** `retry-after` seconds of a 503 `billing_unavailable`. @default 5 */
  retryAfterSeconds?: number;
}

export interface ResolvedRequireCreditsOptions {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  perCredit: Money;
  balanceTtlMs: number;
  dodoTimeoutMs: number;
  reservationTtlMs: number;
  overdraft: Money;
  insufficientStatus: 402 | 429;
  failOpen: boolean;
  retryAfterSeconds: number;
  logger: Logger;
  metrics: Required<BillingObserver> | undefined;
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
  const overdraft = parseUsd(options.overdraft ?? '0', 'overdraft');
  if (overdraft < 0n) {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: \`overdraft\` must not be negative.`);
  }
  requireOption(
    options.pricing,
    'pricing',
    NAME,
    "USD per 1M tokens per model, e.g. { 'gpt-4o': { input: '2.50', output: '10.00' } }",
  );
  return {
    store: resolveStore(options, NAME),
    dodo: requireOption(options.dodo, 'dodo', NAME, 'a DodoPayments client, to read balances'),
    creditEntitlementId: requireOption(
      options.creditEntitlementId,
      'creditEntitlementId',
      NAME,
      'the id of the fiat credit entitlement whose balance is checked (cde_…)',
    ),
    perCredit: resolveUnitsPerCredit(options.creditsPerDollar),
    balanceTtlMs: positiveInteger(options.balanceTtlMs, 'balanceTtlMs', NAME, 30_000),
    dodoTimeoutMs: positiveInteger(options.dodoTimeoutMs, 'dodoTimeoutMs', NAME, 3_000),
    reservationTtlMs: positiveInteger(options.reservationTtlMs, 'reservationTtlMs', NAME, 600_000),
    overdraft,
    insufficientStatus,
    failOpen: options.failOpen ?? false,
    retryAfterSeconds: positiveInteger(options.retryAfterSeconds, 'retryAfterSeconds', NAME, 5),
    logger: resolveLogger(options.logger),
    metrics: resolveObserver(options, resolveLogger(options.logger), NAME),
  };
}
