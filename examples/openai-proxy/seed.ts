import {
  type MeterNames,
  type Money,
  type PricingInput,
  parsePricePerMillion,
  type SoftCapPlan,
  unitsPerCredit,
} from '../../src/index.js';

/** The seed's price table: USD per 1M input and output tokens. */
export const PRICING: PricingInput = {
  'gpt-4o': { input: '2.50', output: '10.00' },
  'gpt-4o-mini': { input: '0.15', output: '0.60' },
  o1: { input: '15.00', output: '60.00' },
};

/** Credits are cents, as in the seed: a $50 pack issues 5000 credits. */
export const CREDITS_PER_DOLLAR = 100;

/** The seed's top-up packs, in US dollars. */
export const PACK_DOLLARS = ['5', '10', '50', '100'] as const;

/** One meter per model and kind (the seed's "separate meters" option), so each has its own rate. */
export function meterNames(model: string): MeterNames {
  return { input: `${model}.input_tokens`, output: `${model}.output_tokens` };
}

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

/** Decimal places of a meter rate that does not terminate (e.g. $0.15/1M → 66666.666… per cent). */
const RATE_DECIMALS = 12;

/**
 * Dodo's "meter units per credit" for a price: how many tokens one credit buys, computed in
 * exact integers (`credit value / price per token`, both in picodollars). Rates that do not
 * terminate are rounded half up at 12 decimals. `undefined` for a free price (nothing to deduct).
 *
 * @example meterUnitsPerCredit('2.50') === '4000' // $2.50 per 1M tokens, 1 credit = 1 cent
 */
export function meterUnitsPerCredit(
  pricePerMillion: string | number,
  creditsPerDollar: number = CREDITS_PER_DOLLAR,
): string | undefined {
  const perToken: Money = parsePricePerMillion(pricePerMillion, 'pricePerMillion');
  if (perToken === 0n) return undefined;
  const perCredit: Money = unitsPerCredit(creditsPerDollar);
  const scale = 10n ** BigInt(RATE_DECIMALS);
  const scaled = (perCredit * scale * 2n + perToken) / (perToken * 2n); // round half up
  const whole = scaled / scale;
  const fraction = (scaled % scale).toString().padStart(RATE_DECIMALS, '0').replace(/0+$/, '');
  return fraction ? `${whole}.${fraction}` : String(whole);
}
