import { ConfigError } from '../errors.js';
import type { Money } from '../money.js';

/** A fraction of an amount, exact: `numerator / denominator`, a power of ten. */
export interface Fraction {
  numerator: bigint;
  denominator: bigint;
  /** Its canonical decimal text (`"0.1"` for `"0.10"` or `0.1`), as alerts report it. */
  text: string;
}

/** Decimal places a fraction may have: finer shares of a top-up are below a cent anyway. */
const MAX_DECIMALS = 12;
const DECIMAL = /^(\d+)(?:\.(\d+))?$/;

/**
 * Parses a share such as `"0.25"` (or a number whose decimal string is exact, like `0.25`)
 * without a float: the digits become an integer over a power of ten. Throws a `ConfigError`
 * naming `optionName` unless it is a decimal greater than 0 and at most 1.
 */
export function parseFraction(value: unknown, optionName: string): Fraction {
  const text =
    typeof value === 'string'
      ? value.trim()
      : typeof value === 'number' && Number.isFinite(value)
        ? String(value)
        : undefined;
  const match = text === undefined ? null : DECIMAL.exec(text);
  const [, whole = '', decimals = ''] = match ?? [];
  const numerator = match ? BigInt(whole + decimals) : 0n;
  const denominator = 10n ** BigInt(decimals.length);
  if (!match || decimals.length > MAX_DECIMALS || numerator <= 0n || numerator > denominator) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`${optionName}\` must be a decimal share of the last top-up greater than 0 and at most 1, with at most ${MAX_DECIMALS} decimals, such as "0.1" for 10 % (got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}).`,
    );
  }
  const trimmed = decimals.replace(/0+$/, '');
  return {
    numerator,
    denominator,
    text: `${BigInt(whole)}${trimmed === '' ? '' : `.${trimmed}`}`,
  };
}

/** `amount × fraction`, rounded down to a money unit (10⁻¹² USD). */
export function fractionOf(amount: Money, fraction: Fraction): Money {
  return (amount * fraction.numerator) / fraction.denominator;
}
