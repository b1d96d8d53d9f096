import type { PricingInput, SoftCapPlan } from '../../src/index.js';
import type { BillingConfig } from '../../src/setup/plan.js';
import config from './billing.config.json' with { type: 'json' };

/**
 * The billing of Dodo's "OpenAI Billing Model" guide, in the file `express-llm-billing setup
 * --config` reads: prices (USD per 1M tokens), credits are cents, weighted meters, the packs and
 * the plans. The app prices with the same table, so what Dodo deducts and what the app charges
 * agree to the unit.
 */
export const BILLING_CONFIG = config as BillingConfig;

/** The guide's price table: USD per 1M input and output tokens. */
export const PRICING: PricingInput = BILLING_CONFIG.pricing;

/** Credits are cents, as in the guide: a $50 pack issues 5000 credits. */
export const CREDITS_PER_DOLLAR = Number(BILLING_CONFIG.creditsPerDollar);

/** The guide's top-up packs, in US dollars. */
export const PACK_DOLLARS = BILLING_CONFIG.topUps!.map(String);

/**
 * One input and one output meter for every model, each event's tokens weighted by the model's
 * price (the guide's "weighted events" option, made exact: see docs/metering-strategies.md).
 * Per-model meters cannot price GPT-4o-mini or o1 exactly in cents.
 */
export const METERS = BILLING_CONFIG.meters!;

/**
 * Soft caps of the subscription plans: Plus ($20/mo) and Team ($25/seat/mo). Past the cap a
 * request for a large model is served by a smaller one instead of being refused.
 */
export const PLAN_CAPS = {
  plus: { softCap: { tokens: 2_000_000 }, downgrade: { 'gpt-4o': 'gpt-4o-mini', o1: 'gpt-4o' } },
  team: {
    softCap: { tokens: 1_000_000 },
    perSeat: true,
    downgrade: { 'gpt-4o': 'gpt-4o-mini', o1: 'gpt-4o' },
  },
} as const satisfies Record<string, SoftCapPlan>;

export type PlanName = keyof typeof PLAN_CAPS;
