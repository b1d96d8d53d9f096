import { formatCredits } from '../../money.js';

/**
 * Credit amounts inside the emulator are exact integers of **10⁻¹² credit** ("credit units").
 * Dodo's API speaks decimal strings (`"4999.985"`); they are parsed into credit units and
 * formatted back with the shortest exact decimal, so no amount ever touches a float.
 */
export type CreditUnits = bigint;

/** Decimal digits one credit unit represents. */
export const CREDIT_DECIMALS = 12;
/** Credit units in one credit. */
export const UNITS_PER_CREDIT: CreditUnits = 10n ** BigInt(CREDIT_DECIMALS);

const DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

/** An exact decimal: `value = mantissa / 10^decimals`. */
export interface ExactDecimal {
  mantissa: bigint;
  decimals: number;
}

/**
 * Reads a decimal given as a string (or a number whose shortest form is exact, like `2.5`).
 * Returns a reason instead of a value when it is not a plain decimal.
 */
export function readDecimal(value: unknown): ExactDecimal | string {
  let text: string;
  if (typeof value === 'string') text = value.trim();
  else if (typeof value === 'number' && Number.isFinite(value)) text = String(value);
  else if (typeof value === 'bigint') text = value.toString();
  else return `expected a decimal string such as "12.5" (got ${describe(value)})`;
  const match = DECIMAL.exec(text);
  if (!match) return `expected a decimal string such as "12.5" (got ${describe(value)})`;
  const [, sign, whole, fraction = ''] = match;
  const mantissa = BigInt(`${whole}${fraction}`);
  return { mantissa: sign ? -mantissa : mantissa, decimals: fraction.length };
}

/** Reads a rate or a percentage: a non-negative decimal, or undefined when it is not one. */
export function readRate(value: unknown): ExactDecimal | undefined {
  const decimal = readDecimal(value);
  return typeof decimal === 'string' || decimal.mantissa < 0n ? undefined : decimal;
}

/** Reads a credit amount into credit units; a reason string when it is not exact. */
export function readCredits(value: unknown, maxDecimals = CREDIT_DECIMALS): CreditUnits | string {
  const decimal = readDecimal(value);
  if (typeof decimal === 'string') return decimal;
  if (decimal.decimals > maxDecimals) {
    return `${describe(value)} has more than ${maxDecimals} decimal places`;
  }
  return decimal.mantissa * 10n ** BigInt(CREDIT_DECIMALS - decimal.decimals);
}

/** Formats credit units as Dodo's decimal string, exactly (`"4999.985"`). */
export function formatCreditUnits(units: CreditUnits): string {
  return formatCredits(units, UNITS_PER_CREDIT);
}

/** Formats a number of units at `decimals` as the shortest exact decimal string. */
export function formatScaled(mantissa: bigint, decimals: number): string {
  const negative = mantissa < 0n;
  const magnitude = negative ? -mantissa : mantissa;
  const divisor = 10n ** BigInt(decimals);
  const fraction = (magnitude % divisor).toString().padStart(decimals, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${magnitude / divisor}${fraction ? `.${fraction}` : ''}`;
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
