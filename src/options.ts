import type DodoPayments from 'dodopayments';
import type { Request } from 'express';
import { ConfigError } from './errors.js';
import { consoleLogger, type Logger } from './logger.js';
import { type ModelPrice, type Money, type PricingInput, resolvePricing, unitsPerCredit } from './money.js';
import type { BillingStore } from './store/types.js';

/** Event names of the two usage events of a request. */
export interface MeterNames {
  /** @example 'llm.input_tokens' */
  input: string;
  /** @example 'llm.output_tokens' */
  output: string;
}

/**
 * Settings shared by the middlewares (bind them once with `createBilling`). Each middleware
 * reads the ones it needs and says at startup which is missing.
 */
export interface SharedOptions {
  /** Where balances, reservations, the outbox and counters live. */
  store: BillingStore;
  /** A `DodoPayments` client from the `dodopayments` SDK. */
  dodo?: DodoPayments;
  /** The fiat credit entitlement whose balance is checked. */
  creditEntitlementId?: string;
  /**
   * The Dodo customer id of the caller, from the app's own authentication (never from the
   * request body), or `undefined` when the caller is unknown.
   * @example (req) => req.user?.dodoCustomerId
   */
  customerId?: (req: Request) => string | undefined | Promise<string | undefined>;
  /**
   * USD per 1M input and output tokens, per model: decimal strings, or numbers whose decimal
   * string is exact.
   * @example { 'gpt-4o': { input: '2.50', output: '10.00' } }
   */
  pricing?: PricingInput;
  /** How many credits one US dollar buys (100 when credits are cents). @default 100 */
  creditsPerDollar?: string | number;
  /**
   * Event names of the input and output usage events, or a function of the model for one meter
   * per model.
   * @default { input: 'llm.input_tokens', output: 'llm.output_tokens' }
   */
  meters?: MeterNames | ((model: string) => MeterNames);
  /** Webhook secret(s); several during key rotation. @default the `dodo` client's `webhookKey` */
  webhookKey?: string | readonly string[];
  /** Where fail-open passes, retries and dead letters are reported. @default console */
  logger?: Logger;
}

export const DEFAULT_METERS: MeterNames = { input: 'llm.input_tokens', output: 'llm.output_tokens' };

/** What a middleware named `middleware` requires of the shared options, checked at startup. */
export function requireOption<T>(
  value: T | undefined | null,
  name: string,
  middleware: string,
  hint: string,
): T {
  if (value === undefined || value === null || value === '') {
    throw new ConfigError('ERR_ELB_MISSING_OPTION', `${middleware}: \`${name}\` is required — ${hint}.`);
  }
  return value;
}

export function requireFunction<F>(value: unknown, name: string, middleware: string, hint: string): F {
  if (typeof value !== 'function') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${middleware}: \`${name}\` must be a function — ${hint}.`,
    );
  }
  return value as F;
}

export function resolveStore(options: { store?: BillingStore }, middleware: string): BillingStore {
  const store = options.store;
  if (!store || typeof store.reserve !== 'function' || typeof store.settle !== 'function') {
    throw new ConfigError(
      'ERR_ELB_MISSING_OPTION',
      `${middleware}: \`store\` must be a BillingStore — \`new MemoryStore()\` for one process or \`new RedisStore({ client })\` for several.`,
    );
  }
  return store;
}

export function positiveInteger(value: unknown, name: string, middleware: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${middleware}: \`${name}\` must be a positive integer (got ${String(value)}).`,
    );
  }
  return value;
}

/** The pricing table, validated, plus the price used for models it does not list. */
export interface ResolvedPricing {
  table: ReadonlyMap<string, ModelPrice>;
  fallback: ModelPrice | undefined;
}

export function resolveModelPricing(
  pricing: PricingInput | undefined,
  defaultPrice: PricingInput[string] | undefined,
  middleware: string,
): ResolvedPricing {
  const table = resolvePricing(
    requireOption(
      pricing,
      'pricing',
      middleware,
      "USD per 1M tokens per model, e.g. { 'gpt-4o': { input: '2.50', output: '10.00' } }",
    ),
  );
  const fallback =
    defaultPrice === undefined
      ? undefined
      : resolvePricing({ default: defaultPrice }, 'defaultPrice').get('default');
  return { table, fallback };
}

export function priceOf(pricing: ResolvedPricing, model: string | undefined): ModelPrice | undefined {
  return (model === undefined ? undefined : pricing.table.get(model)) ?? pricing.fallback;
}

export function resolveMeters(
  meters: SharedOptions['meters'],
  middleware: string,
): (model: string) => MeterNames {
  if (meters === undefined) return () => DEFAULT_METERS;
  if (typeof meters === 'function') return meters;
  if (
    typeof meters?.input !== 'string' ||
    typeof meters?.output !== 'string' ||
    !meters.input ||
    !meters.output
  ) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${middleware}: \`meters\` must be { input, output } event names or a function of the model returning them.`,
    );
  }
  return () => meters;
}

export function resolveUnitsPerCredit(creditsPerDollar: SharedOptions['creditsPerDollar']): Money {
  return unitsPerCredit(creditsPerDollar ?? 100, 'creditsPerDollar');
}

export function resolveLogger(logger: Logger | undefined): Logger {
  return logger ?? consoleLogger;
}
