import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Money } from '../money.js';
import type { OutboxStats } from '../store/types.js';

/** What an observer may read at its own pace (at a scrape): the outbox of a store. */
export interface ObservedStore {
  now(): number;
  outboxStats(): Promise<OutboxStats>;
}

/**
 * What the middlewares tell an observer (`metrics` option), as it happens. Every method is
 * optional and called synchronously with plain values (no object built for it, nothing
 * awaited): it must be cheap. A method that throws is logged once and never reaches the request.
 * `prometheusMetrics()` implements it; an app can implement it for another metrics system.
 * Money is exact (`bigint` money units, see `MONEY_SCALE`); converting it is the observer's job.
 */
export interface BillingObserver {
  /**
   * Called at startup by each `createBilling` (and standalone middleware) using the observer:
   * its store (for the outbox gauges, read when the observer wants) and its priced models (the
   * model labels worth keeping apart).
   */
  attach?(source: { store: ObservedStore; models: readonly string[] }): void;
  /** A request passed the billing chain's admission (once per request). */
  admitted?(model: string | undefined): void;
  /**
   * A request was answered by the billing chain instead of the app's handler: `reason` is the
   * OpenAI error code of the answer (`insufficient_quota`, `budget_exceeded`,
   * `rate_limit_exceeded`, `billing_unavailable`, `invalid_api_key`, …), `status` its HTTP status.
   */
  refused?(reason: string, status: number): void;
  /** Credits held for an admitted request. */
  reserved?(model: string | undefined, amount: Money): void;
  /** Credits a request spent on one model (several calls: once per model), when settled. */
  settled?(model: string, amount: Money, estimated: boolean): void;
  /** What a request spent minus what its admission held (negative: the hold was larger). */
  estimateError?(model: string | undefined, settledMinusReserved: Money): void;
  /** How old the balance view an admission decided on was (ms since Dodo's balance was read). */
  balanceViewAge?(ageMs: number): void;
  /** Usage events Dodo refused, moved to the dead letters. */
  deadLettered?(count: number): void;
  /** A verified webhook was applied (its type is Dodo's event type). */
  webhookApplied?(type: string): void;
  /** A webhook delivery was refused or failed (`reason`: the code answered, e.g. `invalid_webhook_signature`). */
  webhookRefused?(reason: string): void;
  /**
   * A call to Dodo ended: `operation` is the SDK method (`usageEvents.ingest`, …), `error`
   * `undefined` on success, else `timeout`, `http_<status>` or `network`.
   */
  dodoCall?(operation: string, seconds: number, error: string | undefined): void;
  /**
   * The reconciliation job compared one customer's balance view with Dodo: `drift` is what it
   * corrected the view by (0 when the view was right; negative when it was too high).
   */
  reconciled?(drift: Money): void;
  /**
   * An auto-recharge ended (`succeeded`, `failed`, `requires_action`), or was not made because
   * it would pass the customer's monthly limit (`monthly_limit`). `amount` is what it charged
   * (or would have); counted once per recharge, in whichever process finished it.
   */
  recharge?(outcome: 'succeeded' | 'failed' | 'requires_action' | 'monthly_limit', amount: Money): void;
}

const METHODS = [
  'attach',
  'admitted',
  'refused',
  'reserved',
  'settled',
  'estimateError',
  'balanceViewAge',
  'deadLettered',
  'webhookApplied',
  'webhookRefused',
  'dodoCall',
  'reconciled',
  'recharge',
] as const;

type Guarded = Required<BillingObserver>;

const guarded = new WeakMap<BillingObserver, Guarded>();

/**
 * The observer as the middlewares call it: each method present, and none able to throw into a
 * request (a failure is logged once per method, with what to fix). One wrapper per observer.
 */
function guard(observer: BillingObserver, logger: Logger): Guarded {
  let wrapper = guarded.get(observer);
  if (wrapper) return wrapper;
  const failed = new Set<string>();
  const noop = () => {};
  wrapper = {} as Guarded;
  for (const method of METHODS) {
    const implementation = observer[method] as ((...args: unknown[]) => void) | undefined;
    (wrapper as Record<string, unknown>)[method] = implementation
      ? (...args: unknown[]) => {
          try {
            implementation.apply(observer, args);
          } catch (error) {
            if (failed.has(method)) return;
            failed.add(method);
            logger.warn(
              `metrics: the observer's ${method}() threw; the request went on, and this is said once. Fix the observer given as \`metrics\`.`,
              { error },
            );
          }
        }
      : noop;
  }
  guarded.set(observer, wrapper);
  return wrapper;
}

/**
 * The `metrics` option, checked at startup and guarded, attached to the store and the priced
 * models it will see; `undefined` when none is given (then no call is made anywhere).
 */
export function resolveObserver(
  options: {
    metrics?: BillingObserver | undefined;
    store?: ObservedStore | undefined;
    pricing?: object | undefined;
  },
  logger: Logger,
  middleware: string,
): Required<BillingObserver> | undefined {
  const observer = options.metrics;
  if (observer === undefined) return undefined;
  if (observer === null || typeof observer !== 'object') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${middleware}: \`metrics\` must be an observer such as \`prometheusMetrics()\` (got ${String(observer)}).`,
    );
  }
  for (const method of METHODS) {
    const value = observer[method];
    if (value !== undefined && typeof value !== 'function') {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        `${middleware}: \`metrics.${method}\` must be a function when given.`,
      );
    }
  }
  const wrapper = guard(observer, logger);
  // The observer keeps each store and model once, however many middlewares share them.
  if (options.store && typeof options.store === 'object')
    wrapper.attach({ store: options.store, models: Object.keys(options.pricing ?? {}) });
  return wrapper;
}

/** How a failed Dodo call is labelled: a timeout, an HTTP status, or the network. */
export function dodoErrorLabel(error: unknown, timedOut: boolean): string {
  if (timedOut) return 'timeout';
  const status = (error as { status?: unknown } | null)?.status;
  return typeof status === 'number' ? `http_${status}` : 'network';
}
