import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ResolvedMetering } from '../metering.js';
import type { PriceInput, PricingInput } from '../money.js';
import {
  positiveInteger,
  type ResolvedPricing,
  resolveLogger,
  resolveMeters,
  resolveModelPricing,
  resolveStore,
  type SharedOptions,
} from '../options.js';
import type { BillingStore } from '../store/types.js';

/** Options of `trackOpenAI`. Every field is optional: without any, calls made outside a request pass through. */
export interface TrackOpenAIOptions {
  /**
   * The Dodo customer billed for calls made outside any request (a batch job, a queue worker).
   * Inside a request, the request's own customer is always billed. Needs `store` and `pricing`.
   * @default undefined (calls outside a request pass through, unbilled)
   * @example trackOpenAI(new OpenAI(), { customerId: 'cus_batch', store, pricing })
   */
  customerId?: string;
  /**
   * The store whose atomic `settle` and outbox bill the calls that cannot ride on a request's
   * own settlement: calls for `customerId`, and calls that finish after their request's
   * response ended (a background call the handler did not await). The outbox is delivered by
   * the store's flusher, which `meterUsage` (or `createBilling(…).flush()`) runs.
   * @default undefined (such request calls are logged as errors, with their usage)
   */
  store?: BillingStore;
  /** USD per 1M tokens per model, as for the middlewares. Required with `store`. */
  pricing?: PricingInput;
  /** Price for models missing from `pricing` (their events are still sent to Dodo). @default undefined */
  defaultPrice?: PriceInput;
  /**
   * How the usage events are metered: the same `meters` as the middlewares' (event names, or a
   * strategy such as `weightedMeters()`).
   * @default { input: 'llm.input_tokens', output: 'llm.output_tokens' }
   */
  meters?: SharedOptions['meters'];
  /** Credits one US dollar buys, as for the middlewares (weighted meters are priced with it). @default 100 */
  creditsPerDollar?: SharedOptions['creditsPerDollar'];
  /** Where tracking failures and unbilled late calls are reported. @default console */
  logger?: Logger;
  /**
   * How long a stream the caller stopped reading (or whose request ended first) is read on in
   * the background to its usage — what the upstream bills — before it is aborted and billed an
   * estimate. Needs `store` and `pricing` (the call is then billed on its own).
   * @default 60_000
   */
  abandonedStreamTimeoutMs?: number;
}

/** What settling outside a request's own settlement needs. */
export interface OutsideSettlementConfig {
  store: BillingStore;
  pricing: ResolvedPricing;
  meters: ResolvedMetering;
  logger: Logger;
}

export interface ResolvedTrackOpenAIOptions {
  customerId: string | undefined;
  settlement: OutsideSettlementConfig | undefined;
  logger: Logger;
  abandonedStreamTimeoutMs: number;
}

const NAME = 'trackOpenAI';

export function resolveTrackOpenAIOptions(options: Readonly<TrackOpenAIOptions>): ResolvedTrackOpenAIOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: options must be an object.`);
  }
  const { customerId } = options;
  if (customerId !== undefined && (typeof customerId !== 'string' || customerId === '')) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${NAME}: \`customerId\` must be the Dodo customer id (a string) billed for calls made outside a request; inside a request the request's own customer is billed (got ${typeof customerId}).`,
    );
  }
  const logger = resolveLogger(options.logger);
  const abandonedStreamTimeoutMs = positiveInteger(
    options.abandonedStreamTimeoutMs,
    'abandonedStreamTimeoutMs',
    NAME,
    60_000,
  );
  const wantsSettlement =
    customerId !== undefined || options.store !== undefined || options.pricing !== undefined;
  if (!wantsSettlement) return { customerId, settlement: undefined, logger, abandonedStreamTimeoutMs };
  const store = resolveStore(options, NAME);
  const pricing = resolveModelPricing(options.pricing, options.defaultPrice, NAME);
  return {
    customerId,
    settlement: { store, pricing, meters: resolveMeters(options, pricing, NAME), logger },
    logger,
    abandonedStreamTimeoutMs,
  };
}
