import { DODO_LIMITS } from '../dodo-limits.js';
import { ConfigError } from '../errors.js';
import { type MeterSpec, type MetersOption, meterSpecs, resolveMetering } from '../metering.js';
import {
  displayUsd,
  formatCredits,
  formatUsd,
  type Money,
  type PricingInput,
  parseUsd,
  resolvePricing,
  UNITS_PER_DOLLAR,
  unitsPerCredit,
} from '../money.js';

export type Interval = 'Day' | 'Week' | 'Month' | 'Year';

/**
 * The billing config file (`billing.config.json` or `.mjs`): what the app passes to
 * `createBilling` (`pricing`, `creditsPerDollar`, `meters`) plus what only `setup` reads.
 */
export interface BillingConfig {
  /** USD per 1M input and output tokens, per model. */
  pricing: PricingInput;
  /** Credits one US dollar buys. @default 100 (credits are cents) */
  creditsPerDollar?: string | number;
  /** `{ strategy: 'per-model' }` or `{ strategy: 'weighted', base? }` (or event names). @default { input: 'llm.input_tokens', output: 'llm.output_tokens' } */
  meters?: MetersOption;
  /** The fiat credit entitlement. Matched on Dodo by `name`. */
  creditEntitlement?: {
    /** @default 'USD credits' */
    name?: string;
    /** @default 'USD cents' when credits are cents */
    unit?: string;
    /** Decimals of a credit amount (0–10). @default as fine as one money unit allows, at most 10 */
    precision?: number;
    description?: string;
  };
  /** Top-up packs in US dollars, one one-time product each. @default ['5', '10', '50', '100'] */
  topUps?: readonly (string | number)[];
  /** Subscription plans, one recurring product each. @default [] */
  plans?: readonly PlanConfig[];
}

export interface PlanConfig {
  /** Stable key: the product is found again by `metadata.elb_key = 'plan-<key>'`. @example 'plus' */
  key: string;
  /** @example 'Plus' */
  name: string;
  /** USD per period (per seat: a subscription's quantity is its seats). @example '20.00' */
  price: string | number;
  /** @default 'Month' */
  interval?: Interval;
  /** Credits of the entitlement granted per period and seat. @default none */
  credits?: string | number;
  description?: string;
}

export interface EntitlementPlan {
  name: string;
  unit: string;
  precision: number;
  currency: 'USD';
  /** US dollars per credit, e.g. `"0.01"`. */
  pricePerUnit: string;
  description: string;
}

export interface MeterPlan extends MeterSpec {
  /** The meter's display name. */
  name: string;
  description: string;
}

export interface ProductPlan {
  /** `metadata.elb_key`: how the product is found again. */
  key: string;
  name: string;
  description: string;
  /** Minor units (cents). */
  priceCents: number;
  /** Credits granted per unit (decimal string), or undefined for none. */
  credits: string | undefined;
  /** Recurring products only. */
  interval?: Interval;
}

/** Everything `setup` wants to exist on Dodo, computed from the config alone. */
export interface SetupPlan {
  creditsPerDollar: string;
  /** Money per credit. */
  perCredit: Money;
  strategy: 'names' | 'per-model' | 'weighted';
  /** Weighted only: USD per 1M tokens of one meter unit. */
  base: string | undefined;
  entitlement: EntitlementPlan;
  meters: MeterPlan[];
  /**
   * The $0 usage-based product whose price links the meters to the entitlement (`elb_key:
   * 'metering'`): Dodo's meters deduct credits only from customers subscribed to it, so every
   * customer's API account is a subscription to it (see `createApiAccountCheckout`).
   */
  metering: { key: 'metering'; name: string; description: string } | undefined;
  topUps: ProductPlan[];
  plans: ProductPlan[];
}

export const MANAGED = 'Managed by express-llm-billing setup.';
export const DEFAULT_TOP_UPS = ['5', '10', '50', '100'] as const;
const CENTS: Money = UNITS_PER_DOLLAR / 100n;
const INTERVALS: readonly Interval[] = ['Day', 'Week', 'Month', 'Year'];
const KEY = /^[a-z0-9][a-z0-9-]{0,40}$/;

function fail(message: string): never {
  throw new ConfigError('ERR_ELB_INVALID_CONFIG', message);
}

function cents(value: string | number, field: string): number {
  const money = parseUsd(value, field);
  if (money <= 0n || money % CENTS !== 0n)
    fail(`\`${field}\` must be a positive amount in whole cents (got ${value}).`);
  return Number(money / CENTS);
}

function decimalsOf(text: string): number {
  return text.split('.')[1]?.length ?? 0;
}

/** Decimals of a credit amount that resolve one money unit (capped at Dodo's 10). */
function defaultPrecision(perCredit: Money): number {
  for (let digits = 0; digits <= 10; digits++) if (10n ** BigInt(digits) % perCredit === 0n) return digits;
  return 10;
}

function defaultUnit(creditsPerDollar: string): string {
  if (creditsPerDollar === '100') return 'USD cents';
  if (creditsPerDollar === '1') return 'USD';
  return `credits (${creditsPerDollar} per USD)`;
}

function credits(amount: Money, perCredit: Money, precision: number, field: string): string {
  const text = formatCredits(amount, perCredit);
  if (decimalsOf(text) > precision) {
    fail(
      `\`${field}\` grants ${text} credits, finer than the entitlement's precision (${precision} decimals).`,
    );
  }
  return text;
}

/**
 * Computes the objects `setup` creates or keeps on Dodo from the config alone: the fiat credit
 * entitlement, the meters with their exact "meter units per credit", the product linking them,
 * the top-up packs and the plans. Throws a `ConfigError` naming the field when the config is
 * wrong, or when a meter could not price a model exactly.
 */
export function planSetup(config: BillingConfig): SetupPlan {
  if (config === null || typeof config !== 'object') fail('The billing config must be an object.');
  const table = resolvePricing(config.pricing);
  const creditsPerDollar = String(config.creditsPerDollar ?? 100);
  const perCredit = unitsPerCredit(creditsPerDollar);
  const metering = resolveMetering(config.meters, table, perCredit);
  const specs = meterSpecs(metering, table, perCredit);

  const given = config.creditEntitlement ?? {};
  const precision = given.precision ?? defaultPrecision(perCredit);
  if (!Number.isInteger(precision) || precision < 0 || precision > 10) {
    fail(`\`creditEntitlement.precision\` must be an integer from 0 to 10 (got ${precision}).`);
  }
  const entitlement: EntitlementPlan = {
    name: given.name ?? 'USD credits',
    unit: given.unit ?? defaultUnit(creditsPerDollar),
    precision,
    currency: 'USD',
    pricePerUnit: formatUsd(perCredit),
    description: given.description ?? `Prepaid US dollar credits (${creditsPerDollar} per USD). ${MANAGED}`,
  };

  const linked = specs.filter((spec) => spec.unitsPerCredit !== undefined).length;
  if (linked > DODO_LIMITS.metersPerProduct) {
    fail(
      `The config links ${linked} meters to the credits, but one Dodo usage-based product carries at most ${DODO_LIMITS.metersPerProduct} (https://docs.dodopayments.com/features/credit-based-billing), and a customer's API account is one subscription to it: use { "strategy": "weighted" } (two meters for any number of models) — per-model meters fit one model.`,
    );
  }
  const base = metering.base === undefined ? undefined : formatUsd(metering.base * 1_000_000n);
  const meters: MeterPlan[] = specs.map((spec) => {
    const only = spec.models.length === 1 ? spec.models[0]?.model : undefined;
    const rate =
      spec.unitsPerCredit === undefined
        ? 'free'
        : `${spec.unitsPerCredit} ${spec.measurementUnit} per credit`;
    return {
      ...spec,
      name:
        metering.strategy === 'weighted'
          ? `LLM ${spec.kind} tokens (weighted)`
          : `${only ?? 'LLM'} ${spec.kind} tokens`,
      description:
        metering.strategy === 'weighted'
          ? `Sum of ${spec.kind} tokens × model weight (1 unit = $${base} per 1M tokens); ${rate}. ${MANAGED}`
          : `Sum of ${spec.kind} tokens of ${spec.models.map((entry) => entry.model).join(', ')}; ${rate}. ${MANAGED}`,
    };
  });

  const topUpInputs = config.topUps ?? DEFAULT_TOP_UPS;
  if (!Array.isArray(topUpInputs)) fail('`topUps` must be an array of US dollar amounts, e.g. ["5", "10"].');
  const topUps = topUpInputs.map((dollars, index): ProductPlan => {
    const field = `topUps[${index}]`;
    const priceCents = cents(dollars, field);
    const money = parseUsd(dollars, field);
    const granted = credits(money, perCredit, precision, field);
    return {
      key: `top-up-${formatUsd(money)}`,
      name: `${displayUsd(money)} credits`,
      description: `Top-up pack: ${granted} credits. ${MANAGED}`,
      priceCents,
      credits: granted,
    };
  });

  const planInputs = config.plans ?? [];
  if (!Array.isArray(planInputs))
    fail('`plans` must be an array of { key, name, price, interval?, credits? }.');
  const plans = planInputs.map((plan, index): ProductPlan => {
    const field = `plans[${index}]`;
    if (typeof plan?.key !== 'string' || !KEY.test(plan.key)) {
      fail(
        `\`${field}.key\` must be a short lowercase key such as "plus" (got ${JSON.stringify(plan?.key)}).`,
      );
    }
    if (typeof plan.name !== 'string' || plan.name.trim() === '') fail(`\`${field}.name\` is required.`);
    const interval = plan.interval ?? 'Month';
    if (!INTERVALS.includes(interval)) fail(`\`${field}.interval\` must be Day, Week, Month or Year.`);
    const granted =
      plan.credits === undefined
        ? undefined
        : credits(
            toMoney(plan.credits, perCredit, `${field}.credits`),
            perCredit,
            precision,
            `${field}.credits`,
          );
    return {
      key: `plan-${plan.key}`,
      name: plan.name,
      description: plan.description ?? `${plan.name} subscription. ${MANAGED}`,
      priceCents: cents(plan.price, `${field}.price`),
      credits: granted,
      interval,
    };
  });
  const keys = [...topUps, ...plans].map((product) => product.key);
  const duplicate = keys.find((key, index) => keys.indexOf(key) !== index);
  if (duplicate) fail(`Two products of the config share the key "${duplicate}".`);

  return {
    creditsPerDollar,
    perCredit,
    strategy: metering.strategy,
    base,
    entitlement,
    meters,
    metering: meters.some((meter) => meter.unitsPerCredit !== undefined)
      ? {
          key: 'metering',
          name: 'API usage',
          description: `The API account: $0 a month; its meters deduct usage from ${entitlement.name}. ${MANAGED}`,
        }
      : undefined,
    topUps,
    plans,
  };
}

/** A credit amount (decimal credits) as money, exactly. */
function toMoney(creditsAmount: string | number, perCredit: Money, field: string): Money {
  const text = String(creditsAmount).trim();
  const match = /^(\d+)(?:\.(\d+))?$/.exec(text);
  if (!match)
    fail(
      `\`${field}\` must be a non-negative decimal number of credits (got ${JSON.stringify(creditsAmount)}).`,
    );
  const [, whole = '0', fraction = ''] = match;
  const scaled = BigInt(`${whole}${fraction}`) * perCredit;
  const divisor = 10n ** BigInt(fraction.length);
  if (scaled % divisor !== 0n) fail(`\`${field}\` is finer than one money unit.`);
  return scaled / divisor;
}
