import type DodoPayments from 'dodopayments';
import type { Request } from 'express';
import type { AlertsOptions } from './alerts/index.js';
import type { AutoRechargeOptions } from './auto-recharge/options.js';
import { ConfigError } from './errors.js';
import { consoleLogger, type Logger } from './logger.js';
import { type MetersOption, type ResolvedMetering, resolveMetering } from './metering.js';
import type { BillingObserver } from './metrics/observer.js';
import { type ModelPrice, type Money, type PricingInput, resolvePricing, unitsPerCredit } from './money.js';
import type { RequestSettingsOptions } from './request-settings.js';
import type { BillingStore } from './store/types.js';

export { DEFAULT_METERS, type MeterNames } from './metering.js';

/**
 * Settings shared by the middlewares (bind them once with `createBilling`): the store and Dodo,
 * and the per-request settings (`customerId`, `requestId`, `pricing`, the estimator…) that every
 * middleware must read the same way. Each middleware reads the ones it needs and says at startup
 * which is missing.
 */
export interface SharedOptions extends RequestSettingsOptions {
  /** Where balances, reservations, the outbox and counters live. */
  store: BillingStore;
  /** A `DodoPayments` client from the `dodopayments` SDK. */
  dodo?: DodoPayments;
  /** The fiat credit entitlement whose balance is checked. */
  creditEntitlementId?: string;
  /** How many credits one US dollar buys (100 when credits are cents). @default 100 */
  creditsPerDollar?: string | number;
  /**
   * How usage events are metered on Dodo. A strategy priced from `pricing`, exact to the unit
   * (docs/metering-strategies.md): `{ strategy: 'per-model' }` (`perModelMeters()`: one input and
   * one output meter per model, `gpt-4o.input_tokens`, …) or `{ strategy: 'weighted', base? }`
   * (`weightedMeters()`: one input and one output meter, tokens times the model's integer weight).
   * Or, as before, fixed event names, or a function of the model returning them (their rates are
   * then yours to keep right).
   * @default { input: 'llm.input_tokens', output: 'llm.output_tokens' }
   * @example meters: weightedMeters()
   */
  meters?: MetersOption;
  /** Webhook secret(s); several during key rotation. @default the `dodo` client's `webhookKey` */
  webhookKey?: string | readonly string[];
  /** Where fail-open passes, retries and dead letters are reported. @default console */
  logger?: Logger;
  /**
   * Alerts fired as requests settle: low balances, each once per crossing across processes.
   * @example alerts: { balanceBelow: ['5.00', '1.00'], on: (alert) => notify(alert.customerId, alert) }
   */
  alerts?: AlertsOptions;
  /**
   * Auto-recharge (with `createBilling`): customers who opted in (`billing.setAutoRecharge`) are
   * charged on their saved payment method when their available balance falls below their
   * threshold, off the request path, once at a time across processes.
   * @example autoRecharge: { usagePlanProductId, on: { failed: (report) => email(report.customerId) } }
   */
  autoRecharge?: AutoRechargeOptions;
  /**
   * An observer told what the middlewares do (admissions, refusals, reserved and settled
   * amounts, webhooks, Dodo calls, the outbox): `prometheusMetrics()` for Prometheus
   * (docs/metrics.md), or an object of your own. Without it, nothing is measured.
   * @example metrics: prometheusMetrics()
   */
  metrics?: BillingObserver;
}

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

/**
 * Resolves `meters` once, at startup; under a strategy, checks that Dodo's meters can price every
 * model of `pricing` exactly as the local cost does (a `ConfigError` names the model otherwise).
 */
export function resolveMeters(
  options: Pick<SharedOptions, 'meters' | 'creditsPerDollar'>,
  pricing: ResolvedPricing,
  middleware: string,
): ResolvedMetering;
/**
 * The former form, without pricing: fine for event names and per-model meters; weighted meters
 * need the pricing (the three-argument form) and are refused here rather than mis-billed.
 * @deprecated pass the options and the resolved pricing
 */
export function resolveMeters(meters: SharedOptions['meters'], middleware: string): ResolvedMetering;
export function resolveMeters(
  ...args:
    | [
        options: Pick<SharedOptions, 'meters' | 'creditsPerDollar'>,
        pricing: ResolvedPricing,
        middleware: string,
      ]
    | [meters: SharedOptions['meters'], middleware: string]
): ResolvedMetering {
  const [options, pricing, middleware] = args.length === 3 ? args : [{ meters: args[0] }, undefined, args[1]];
  try {
    if (!pricing && isStrategy(options.meters, 'weighted')) {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        '`meters`: weighted meters are priced from `pricing`; this middleware resolved them without it.',
      );
    }
    return resolveMetering(
      options.meters,
      pricing?.table,
      resolveUnitsPerCredit(options.creditsPerDollar),
      'meters',
      pricing?.fallback && { name: 'defaultPrice', price: pricing.fallback },
    );
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(error.code, `${middleware}: ${error.message}`);
    throw error;
  }
}

function isStrategy(meters: SharedOptions['meters'], strategy: string): boolean {
  return (
    typeof meters === 'object' && meters !== null && 'strategy' in meters && meters.strategy === strategy
  );
}

export function resolveUnitsPerCredit(creditsPerDollar: SharedOptions['creditsPerDollar']): Money {
  return unitsPerCredit(creditsPerDollar ?? 100, 'creditsPerDollar');
}

export function resolveLogger(logger: Logger | undefined): Logger {
  return logger ?? consoleLogger;
}

/** The model named in an OpenAI-shaped JSON body (`req.body.model`). */
export function modelFromBody(req: Request): string | undefined {
  const model = (req.body as { model?: unknown } | undefined)?.model;
  return typeof model === 'string' && model !== '' ? model : undefined;
}

/** An optional function option: `undefined` when absent, a startup error when not a function. */
export function optionalFunction<F>(
  value: unknown,
  name: string,
  middleware: string,
  hint: string,
): F | undefined {
  return value === undefined ? undefined : requireFunction<F>(value, name, middleware, hint);
}

/** `customerId(req)`: required by every middleware, read from the app's own authentication. */
export function resolveCustomerIdReader(
  value: unknown,
  middleware: string,
): (req: Request) => string | undefined | Promise<string | undefined> {
  return requireFunction(
    value,
    'customerId',
    middleware,
    'a function of the request returning the Dodo customer id from your own authentication',
  );
}

/** `requestId(req)`: optional; without it each request gets a random id. */
export function resolveRequestIdReader(
  value: unknown,
  middleware: string,
): ((req: Request) => string) | undefined {
  return optionalFunction(value, 'requestId', middleware, 'a function of the request returning a unique id');
}

/** `model(req)`: the model a request names, `req.body.model` by default. */
export function resolveModelReader(value: unknown, middleware: string): (req: Request) => string | undefined {
  return (
    optionalFunction(value, 'model', middleware, 'a function of the request returning the model name') ??
    modelFromBody
  );
}
