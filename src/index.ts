export type { AlertsOptions, BalanceAlert, BalanceThreshold, BillingAlert } from './alerts/index.js';
export {
  type ApiAccount,
  type ApiAccountCheckout,
  type ApiAccountCheckoutOptions,
  createApiAccountCheckout,
  type FindApiAccountOptions,
  findApiAccount,
} from './api-account.js';
export type {
  AutoRecharge,
  AutoRechargeInput,
  AutoRechargeOptions,
  RechargeCallbacks,
  RechargeLimitReport,
  RechargeReport,
} from './auto-recharge/options.js';
export { enableRequestBillingContext, RequestBilling, type UsageRecord } from './billing-context.js';
export {
  type Billing,
  type BillingOptions,
  type Budget,
  type BudgetInput,
  type ChainOptions,
  createBilling,
} from './create-billing.js';
export {
  type DodoWebhookEventOf,
  type DodoWebhooksOptions,
  dodoWebhooks,
  keepRawBody,
  type WebhookHandlers,
} from './dodo-webhooks/index.js';
export { BillingError, ConfigError, StoreError } from './errors.js';
export type { OutputLimitField } from './estimate/index.js';
export type { RequestBillingLocal } from './express-locals.js';
export type { Logger } from './logger.js';
export { type MeterUsageMiddleware, type MeterUsageOptions, meterUsage } from './meter-usage/index.js';
export {
  type MeteringStrategy,
  type MetersOption,
  type PerModelStrategy,
  perModelMeters,
  type WeightedStrategy,
  weightedMeters,
} from './metering.js';
export type { BillingObserver, ObservedStore } from './metrics/observer.js';
export {
  type PrometheusMetrics,
  type PrometheusMetricsOptions,
  prometheusMetrics,
  usdForMetrics,
} from './metrics/prometheus.js';
export {
  costOfTokens,
  type DisplayUsdOptions,
  displayUsd,
  formatCredits,
  formatUsd,
  MONEY_SCALE,
  type ModelPrice,
  type Money,
  moneyFromMinorUnits,
  moneyFromString,
  type PriceInput,
  type PricingInput,
  parseCredits,
  parsePricePerMillion,
  parseUsd,
  resolvePricing,
  type TokenCost,
  UNITS_PER_DOLLAR,
  unitsPerCredit,
} from './money.js';
export type { MeterNames, SharedOptions } from './options.js';
export type { ReconcileOptions } from './reconcile/options.js';
export type { ReconcileCorrection, ReconcileReport } from './reconcile/reconciler.js';
export type { RequestSettingsOptions } from './request-settings.js';
export {
  charactersOverFour,
  type RequireCreditsOptions,
  requireCredits,
  type TokenEstimator,
  utf8ByteTokens,
} from './require-credits/index.js';
export {
  type SoftCapPlan,
  type SoftCapRouterOptions,
  softCapRouter,
  type UsageCap,
} from './soft-cap-router/index.js';
export { spendDayPeriod } from './spend/day-period.js';
export {
  type DaySpend,
  MAX_SPEND_DAYS,
  type ModelSpend,
  type SpendRange,
  type SpendReport,
} from './spend/index.js';
export { MemoryStore, type MemoryStoreOptions, type MemoryStoreUsage } from './store/memory.js';
export {
  type NodeRedisClient,
  type NodeRedisCluster,
  RedisStore,
  type RedisStoreOptions,
} from './store/redis.js';
export { subscriptionPeriod } from './store/subscription-period.js';
export type * from './store/types.js';
export {
  GUIDE_TIERS,
  OPENAI_TIERS,
  openAIDuration,
  SEED_TIERS,
  type Tier,
  type TierRateLimitOptions,
  tierRateLimit,
} from './tier-rate-limit/index.js';
export {
  currentRequestBilling,
  type OpenAIClientLike,
  type TrackOpenAIOptions,
  trackOpenAI,
  usageRecordOf,
} from './track-openai/index.js';
