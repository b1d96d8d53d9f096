import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { type Money, parseUsd } from '../money.js';
import { positiveInteger, resolveLogger, resolveStore, type SharedOptions } from '../options.js';
import type { BillingStore } from '../store/types.js';

/**
 * A usage cap per billing period: tokens, or US dollars of usage at your pricing (a USD cap is
 * counted by `meterUsage`, which knows the prices; a token cap also works with the router alone).
 */
export type UsageCap = number | { tokens: number } | { usd: string | number };

/** What a subscription plan allows before its requests are routed to smaller models. */
export interface SoftCapPlan {
  /** Past this, requests go to the smaller model. @example { tokens: 2_000_000 } */
  softCap: UsageCap;
  /** Multiply the caps by the subscription's seats (Team plans). @default false */
  perSeat?: boolean;
  /** Model → smaller model used past the soft cap. @example { 'gpt-4o': 'gpt-4o-mini', o1: 'o1-mini' } */
  downgrade: Readonly<Record<string, string>>;
  /** Past this, requests are refused with 429 `usage_cap_exceeded`. */
  hardCap?: UsageCap;
}

export interface SoftCapRouterOptions extends SharedOptions {
  /** Plans keyed by Dodo product id. */
  plans: Readonly<Record<string, SoftCapPlan>>;
  /**
   * Whether subscribers' requests also spend prepaid credits. By default a subscription covers
   * its usage: `requireCredits` admits without reserving and no credit-deducting events are sent.
   * @default false
   */
  chargeSubscribers?: boolean;
  /** Response header naming the requested model when it was downgraded. @default 'x-llm-billing-downgraded-from' */
  header?: string;
  /**
   * Subscription statuses that count as subscribed. `past_due` is Dodo's grace period after a
   * failed renewal: the plan is kept until its `past_due_ends_at`; `on_hold` and `paused` pass
   * through, billed from credits. @default ['active', 'past_due']
   */
  activeStatuses?: readonly string[];
  /** How long a period's counters are kept. @default 62 days */
  usageRetentionMs?: number;
}

export interface ResolvedCap {
  unit: 'tokens' | 'cost';
  amount: bigint;
}

export interface ResolvedPlan {
  softCap: ResolvedCap;
  hardCap: ResolvedCap | undefined;
  perSeat: boolean;
  downgrade: ReadonlyMap<string, string>;
}

export interface ResolvedSoftCapRouterOptions {
  store: BillingStore;
  plans: ReadonlyMap<string, ResolvedPlan>;
  chargeSubscribers: boolean;
  header: string;
  activeStatuses: ReadonlySet<string>;
  usageRetentionMs: number;
  logger: Logger;
}

const NAME = 'softCapRouter';

function resolveCap(cap: UsageCap, name: string): ResolvedCap {
  if (typeof cap === 'number' || (typeof cap === 'object' && cap !== null && 'tokens' in cap)) {
    const tokens = typeof cap === 'number' ? cap : cap.tokens;
    if (!Number.isSafeInteger(tokens) || tokens <= 0) {
      throw new ConfigError(
        'ERR_ELB_INVALID_PLAN',
        `${NAME}: \`${name}\` must be a positive number of tokens (got ${String(tokens)}).`,
      );
    }
    return { unit: 'tokens', amount: BigInt(tokens) };
  }
  if (typeof cap === 'object' && cap !== null && 'usd' in cap) {
    const amount: Money = parseUsd(cap.usd, `${name}.usd`);
    if (amount <= 0n)
      throw new ConfigError('ERR_ELB_INVALID_PLAN', `${NAME}: \`${name}.usd\` must be positive.`);
    return { unit: 'cost', amount };
  }
  throw new ConfigError(
    'ERR_ELB_INVALID_PLAN',
    `${NAME}: \`${name}\` must be { tokens: n } or { usd: "20.00" }.`,
  );
}

function resolvePlans(plans: unknown): Map<string, ResolvedPlan> {
  if (!plans || typeof plans !== 'object' || Array.isArray(plans) || Object.keys(plans).length === 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_PLAN',
      `${NAME}: \`plans\` must map Dodo product ids to { softCap, downgrade, perSeat?, hardCap? }, e.g. { prod_plus: { softCap: { tokens: 2_000_000 }, downgrade: { 'gpt-4o': 'gpt-4o-mini' } } }.`,
    );
  }
  const resolved = new Map<string, ResolvedPlan>();
  for (const [productId, plan] of Object.entries(plans as Record<string, SoftCapPlan>)) {
    const where = `plans["${productId}"]`;
    if (!plan || typeof plan !== 'object' || !plan.downgrade || typeof plan.downgrade !== 'object') {
      throw new ConfigError(
        'ERR_ELB_INVALID_PLAN',
        `${NAME}: \`${where}.downgrade\` must map models to smaller models.`,
      );
    }
    const softCap = resolveCap(plan.softCap, `${where}.softCap`);
    const hardCap = plan.hardCap === undefined ? undefined : resolveCap(plan.hardCap, `${where}.hardCap`);
    if (hardCap && (hardCap.unit !== softCap.unit || hardCap.amount < softCap.amount)) {
      throw new ConfigError(
        'ERR_ELB_INVALID_PLAN',
        `${NAME}: \`${where}.hardCap\` must be in the same unit as softCap and not below it.`,
      );
    }
    resolved.set(productId, {
      softCap,
      hardCap,
      perSeat: plan.perSeat === true,
      downgrade: new Map(Object.entries(plan.downgrade)),
    });
  }
  return resolved;
}

export function resolveSoftCapRouterOptions(
  options: Readonly<SoftCapRouterOptions>,
): ResolvedSoftCapRouterOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: options must be an object.`);
  }
  return {
    store: resolveStore(options, NAME),
    plans: resolvePlans(options.plans),
    chargeSubscribers: options.chargeSubscribers ?? false,
    header: options.header ?? 'x-llm-billing-downgraded-from',
    activeStatuses: new Set(options.activeStatuses ?? ['active', 'past_due']),
    usageRetentionMs: positiveInteger(
      options.usageRetentionMs,
      'usageRetentionMs',
      NAME,
      62 * 24 * 60 * 60_000,
    ),
    logger: resolveLogger(options.logger),
  };
}
