import { ConfigError } from '../errors.js';
import { type Money, parseUsd } from '../money.js';

/** A usage tier as the app writes it: data, validated at startup. */
export interface Tier {
  /** Shown in logs and the 429 message. @example 'tier-2' */
  name: string;
  /** Lifetime spend in USD that unlocks the tier (decimal string or exact number). */
  minSpend: string | number;
  /** Days since the first successful payment also required. @default 0 */
  minDaysSinceFirstPayment?: number;
  /** Requests per minute. */
  rpm: number;
  /** Tokens per minute (estimated at admission, corrected with the actual usage). */
  tpm?: number;
  /** Requests per day. */
  rpd?: number;
}

export interface ResolvedTier {
  name: string;
  minSpend: Money;
  minDaysSinceFirstPayment: number;
  rpm: number;
  tpm: number | undefined;
  rpd: number | undefined;
}

/**
 * The three tiers of Dodo's "OpenAI Billing Model" guide: $0 → 3 RPM, $50 → 10 RPM,
 * $250 → 50 RPM.
 */
export const GUIDE_TIERS: readonly Tier[] = Object.freeze([
  { name: 'tier-1', minSpend: '0', rpm: 3 },
  { name: 'tier-2', minSpend: '50', rpm: 10 },
  { name: 'tier-3', minSpend: '250', rpm: 50 },
]);

/**
 * The former name of {@link GUIDE_TIERS}, the same array.
 * @deprecated Use `GUIDE_TIERS`; `SEED_TIERS` is removed in the next minor release.
 */
export const SEED_TIERS: readonly Tier[] = GUIDE_TIERS;

/**
 * OpenAI's published usage tiers (spend and days since first payment), with the GPT-4o limits
 * OpenAI lists for each: adjust the limits to your own capacity.
 */
export const OPENAI_TIERS: readonly Tier[] = Object.freeze([
  { name: 'free', minSpend: '0', rpm: 3, rpd: 200, tpm: 40_000 },
  { name: 'tier-1', minSpend: '5', rpm: 500, tpm: 30_000 },
  { name: 'tier-2', minSpend: '50', minDaysSinceFirstPayment: 7, rpm: 5_000, tpm: 450_000 },
  { name: 'tier-3', minSpend: '100', minDaysSinceFirstPayment: 7, rpm: 5_000, tpm: 800_000 },
  { name: 'tier-4', minSpend: '250', minDaysSinceFirstPayment: 14, rpm: 10_000, tpm: 2_000_000 },
  { name: 'tier-5', minSpend: '1000', minDaysSinceFirstPayment: 30, rpm: 10_000, tpm: 30_000_000 },
]);

function limit(value: unknown, where: string, field: string, required: boolean): number | undefined {
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_TIER',
      `tierRateLimit: ${where}.${field} must be a positive integer (got ${String(value)}).`,
    );
  }
  return value;
}

/**
 * Validates the tiers: names unique, thresholds ascending from $0 (spend and days never lower
 * than the tier below), limits positive integers.
 */
export function resolveTiers(tiers: unknown): ResolvedTier[] {
  if (!Array.isArray(tiers) || tiers.length === 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_TIER',
      'tierRateLimit: `tiers` must be a non-empty array such as [{ name: "tier-1", minSpend: "0", rpm: 3 }, …] (or a preset: GUIDE_TIERS, OPENAI_TIERS).',
    );
  }
  const names = new Set<string>();
  const resolved = tiers.map((tier: Tier, index): ResolvedTier => {
    const where = `tiers[${index}]${typeof tier?.name === 'string' ? ` ("${tier.name}")` : ''}`;
    if (!tier || typeof tier.name !== 'string' || tier.name === '' || names.has(tier.name)) {
      throw new ConfigError(
        'ERR_ELB_INVALID_TIER',
        `tierRateLimit: ${where} needs a unique, non-empty \`name\`.`,
      );
    }
    names.add(tier.name);
    const days = tier.minDaysSinceFirstPayment ?? 0;
    if (!Number.isSafeInteger(days) || days < 0) {
      throw new ConfigError(
        'ERR_ELB_INVALID_TIER',
        `tierRateLimit: ${where}.minDaysSinceFirstPayment must be a whole number of days.`,
      );
    }
    return {
      name: tier.name,
      minSpend: parseUsd(tier.minSpend, `tierRateLimit: ${where}.minSpend`),
      minDaysSinceFirstPayment: days,
      rpm: limit(tier.rpm, where, 'rpm', true)!,
      tpm: limit(tier.tpm, where, 'tpm', false),
      rpd: limit(tier.rpd, where, 'rpd', false),
    };
  });
  if (resolved[0]!.minSpend !== 0n || resolved[0]!.minDaysSinceFirstPayment !== 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_TIER',
      'tierRateLimit: tiers[0] must start at minSpend "0" with no days requirement, so every customer has a tier.',
    );
  }
  for (let index = 1; index < resolved.length; index++) {
    const previous = resolved[index - 1]!;
    const tier = resolved[index]!;
    if (tier.minDaysSinceFirstPayment < previous.minDaysSinceFirstPayment) {
      throw new ConfigError(
        'ERR_ELB_INVALID_TIER',
        `tierRateLimit: tiers[${index}] ("${tier.name}").minDaysSinceFirstPayment (${tier.minDaysSinceFirstPayment}) must not be below tiers[${index - 1}] ("${previous.name}")'s (${previous.minDaysSinceFirstPayment}): a higher tier never asks for less.`,
      );
    }
    if (
      tier.minSpend < previous.minSpend ||
      (tier.minSpend === previous.minSpend &&
        tier.minDaysSinceFirstPayment <= previous.minDaysSinceFirstPayment)
    ) {
      throw new ConfigError(
        'ERR_ELB_INVALID_TIER',
        `tierRateLimit: tiers[${index}] ("${tier.name}") must require more than tiers[${index - 1}] ("${previous.name}"): order tiers by ascending minSpend.`,
      );
    }
  }
  return resolved;
}

const DAY_MS = 24 * 60 * 60_000;

/** The highest tier the customer's spend and payment history unlock. */
export function tierFor(
  tiers: readonly ResolvedTier[],
  spend: Money,
  firstPaymentAt: number | undefined,
  now: number,
): ResolvedTier {
  // Dodo stamps the payment with its own clock: one slightly ahead of ours is day 0, not day -1.
  const days = firstPaymentAt === undefined ? 0 : Math.max(0, Math.floor((now - firstPaymentAt) / DAY_MS));
  for (let index = tiers.length - 1; index > 0; index--) {
    const tier = tiers[index]!;
    if (spend >= tier.minSpend && days >= tier.minDaysSinceFirstPayment) return tier;
  }
  return tiers[0]!;
}
