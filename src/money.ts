import { ConfigError } from './errors.js';

/**
 * Money is an exact integer count of **picodollars**: 1 unit = 10⁻¹² USD.
 *
 * Why this scale: a price of P USD per 1M tokens costs P × 10⁶ units per token, so any price
 * with up to six decimals (e.g. $0.0375 per 1M, a cached batch price) is an exact integer per
 * token, and the cost of N one-token requests equals the cost of one N-token request exactly.
 * Money never touches a JavaScript number: it is a `bigint` in code and an integer string in Redis.
 */
export type Money = bigint;

/** Decimal digits after the point that one money unit represents (10⁻¹² USD). */
export const MONEY_SCALE = 12;
/** Money units in one US dollar. */
export const UNITS_PER_DOLLAR: Money = 10n ** BigInt(MONEY_SCALE);

const TOKENS_PER_PRICE_UNIT = 1_000_000n;
const DECIMAL = /^([+-])?(\d+)(?:\.(\d+))?$/;
const SCIENTIFIC = /^([+-])?(\d+)(?:\.(\d+))?e([+-]?\d+)$/i;

/** A decimal number split exactly into an integer mantissa and a power-of-ten exponent. */
interface ExactDecimal {
  mantissa: bigint;
  /** value = mantissa / 10^decimals */
  decimals: number;
}

function parseExactDecimal(text: string): ExactDecimal | undefined {
  const plain = DECIMAL.exec(text);
  if (plain) {
    const [, sign, whole, fraction = ''] = plain;
    const mantissa = BigInt(`${whole}${fraction}`);
    return { mantissa: sign === '-' ? -mantissa : mantissa, decimals: fraction.length };
  }
  const scientific = SCIENTIFIC.exec(text);
  if (!scientific) return undefined;
  const [, sign, whole, fraction = '', exponentText] = scientific;
  let mantissa = BigInt(`${whole}${fraction}`);
  let decimals = fraction.length - Number(exponentText);
  if (decimals < 0) {
    mantissa *= 10n ** BigInt(-decimals);
    decimals = 0;
  }
  return { mantissa: sign === '-' ? -mantissa : mantissa, decimals };
}

function decimalText(value: string | number, optionName: string): string {
  if (typeof value === 'string') return value.trim();
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  throw new ConfigError(
    'ERR_ELB_INVALID_MONEY',
    `\`${optionName}\` must be a decimal string such as "2.50" (got ${describe(value)}).`,
  );
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  return String(value);
}

/**
 * Parses a decimal amount of US dollars (`"2.50"`, `"-0.000001"`, or a number whose decimal
 * string is exact, like `2.5`) into money units. Throws a `ConfigError` naming `optionName`
 * when the value is not a decimal or is finer than one unit.
 */
export function parseUsd(value: string | number, optionName: string): Money {
  const text = decimalText(value, optionName);
  const decimal = parseExactDecimal(text);
  if (!decimal) {
    throw new ConfigError(
      'ERR_ELB_INVALID_MONEY',
      `\`${optionName}\` must be a decimal amount of US dollars such as "2.50" (got ${describe(value)}).`,
    );
  }
  if (decimal.decimals > MONEY_SCALE) {
    const hint =
      typeof value === 'number'
        ? ' A JavaScript number lost precision here: pass the price as a decimal string.'
        : '';
    throw new ConfigError(
      'ERR_ELB_INEXACT_MONEY',
      `\`${optionName}\` (${describe(value)}) has more than ${MONEY_SCALE} decimal places of a dollar and cannot be represented exactly.${hint}`,
    );
  }
  return decimal.mantissa * 10n ** BigInt(MONEY_SCALE - decimal.decimals);
}

/** Price of one token of one kind, in money units: exact by construction. */
export type PerTokenPrice = Money;

/** Prices of one model, per token, in money units, and what bounds its cost. */
export interface ModelPrice {
  input: PerTokenPrice;
  output: PerTokenPrice;
  /** The most output tokens one completion of the model can generate, when known. */
  maxOutputTokens?: number;
  /** Input tokens allowed for each image, when the model's differ from the default. */
  imageTokens?: number;
  /** The model reasons: output it bills can be invisible in the text it streams. */
  reasoning?: boolean;
}

/** A model's price as the app writes it: USD per 1M tokens, decimal strings (or exact numbers). */
export interface PriceInput {
  /** USD per 1M input tokens, e.g. `"2.50"`. */
  input: string | number;
  /** USD per 1M output tokens, e.g. `"10.00"`. */
  output: string | number;
  /**
   * The most output tokens one completion can generate (OpenAI's model page says: 16,384 for
   * gpt-4o, 100,000 for o1). A request that sets no limit is bounded by it.
   * @default the `defaultMaxOutputTokens` setting
   */
  maxOutputTokens?: number;
  /**
   * Input tokens reserved for each image of a request (OpenAI bills images by size and detail:
   * up to 1,445 tokens on gpt-4o; gpt-4o-mini counts ~33× as many at its lower price).
   * @default the `imageTokens` setting (1,445)
   */
  imageTokens?: number;
  /**
   * The model reasons (o-series, gpt-5…): a stream cut before its usage is billed at least its
   * reserved output, since reasoning tokens never show in the text.
   * @default true for names starting with `o1`, `o3`, `o4`, `gpt-5`; false otherwise
   */
  reasoning?: boolean;
}

/** Pricing table as the app writes it: model name → USD per 1M input and output tokens. */
export type PricingInput = Readonly<Record<string, PriceInput>>;

/**
 * Converts a USD-per-1M-tokens price into an exact per-token price. Throws a `ConfigError`
 * naming `optionName` when the price is negative or not exact per token (more than six
 * decimals per 1M tokens).
 */
export function parsePricePerMillion(value: string | number, optionName: string): PerTokenPrice {
  const perMillion = parseUsd(value, optionName);
  if (perMillion < 0n) {
    throw new ConfigError(
      'ERR_ELB_INVALID_PRICE',
      `\`${optionName}\` must not be negative (got ${describe(value)}).`,
    );
  }
  if (perMillion % TOKENS_PER_PRICE_UNIT !== 0n) {
    throw new ConfigError(
      'ERR_ELB_INEXACT_MONEY',
      `\`${optionName}\` (${describe(value)}) has more than 6 decimal places per 1M tokens, so one token's cost is not exact.`,
    );
  }
  return perMillion / TOKENS_PER_PRICE_UNIT;
}

/** Validates a whole pricing table once, at startup. */
export function resolvePricing(
  pricing: PricingInput,
  optionName = 'pricing',
): ReadonlyMap<string, ModelPrice> {
  if (pricing === null || typeof pricing !== 'object' || Array.isArray(pricing)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_PRICING',
      `\`${optionName}\` must be an object of model → { input, output } prices in USD per 1M tokens, e.g. { 'gpt-4o': { input: '2.50', output: '10.00' } }.`,
    );
  }
  const table = new Map<string, ModelPrice>();
  for (const [model, price] of Object.entries(pricing)) {
    if (price === null || typeof price !== 'object') {
      throw new ConfigError(
        'ERR_ELB_INVALID_PRICING',
        `\`${optionName}["${model}"]\` must be { input, output } in USD per 1M tokens.`,
      );
    }
    const where = `${optionName}["${model}"]`;
    const resolved: ModelPrice = {
      input: parsePricePerMillion(price.input, `${where}.input`),
      output: parsePricePerMillion(price.output, `${where}.output`),
      reasoning: price.reasoning ?? isReasoningModelName(model),
    };
    const maxOutputTokens = optionalTokenCount(price.maxOutputTokens, `${where}.maxOutputTokens`);
    if (maxOutputTokens !== undefined) resolved.maxOutputTokens = maxOutputTokens;
    const imageTokens = optionalTokenCount(price.imageTokens, `${where}.imageTokens`);
    if (imageTokens !== undefined) resolved.imageTokens = imageTokens;
    if (typeof resolved.reasoning !== 'boolean') {
      throw new ConfigError('ERR_ELB_INVALID_PRICING', `\`${where}.reasoning\` must be true or false.`);
    }
    table.set(model, resolved);
  }
  if (table.size === 0) {
    throw new ConfigError('ERR_ELB_INVALID_PRICING', `\`${optionName}\` must price at least one model.`);
  }
  return table;
}

/** Model names of OpenAI's reasoning families, whose billed output can be invisible. */
const REASONING_MODEL = /^(o1|o3|o4|gpt-5)/;

/** Whether a model's name says it reasons (OpenAI's o-series and gpt-5 families). */
export function isReasoningModelName(model: string): boolean {
  return REASONING_MODEL.test(model);
}

function optionalTokenCount(value: unknown, optionName: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(
      'ERR_ELB_INVALID_PRICING',
      `\`${optionName}\` must be a positive integer number of tokens (got ${describe(value)}).`,
    );
  }
  return value;
}

function wholeTokens(tokens: number | bigint, what: string): bigint {
  if (typeof tokens === 'bigint') {
    if (tokens < 0n) throw new RangeError(`${what} must not be negative (got ${tokens}).`);
    return tokens;
  }
  if (!Number.isSafeInteger(tokens) || tokens < 0) {
    throw new RangeError(`${what} must be a non-negative integer (got ${tokens}).`);
  }
  return BigInt(tokens);
}

/** The exact cost of one request's tokens. */
export interface TokenCost {
  input: Money;
  output: Money;
  total: Money;
}

/** Exact cost of `inputTokens` and `outputTokens` at `price`. */
export function costOfTokens(
  price: ModelPrice,
  inputTokens: number | bigint,
  outputTokens: number | bigint,
): TokenCost {
  const input = price.input * wholeTokens(inputTokens, 'inputTokens');
  const output = price.output * wholeTokens(outputTokens, 'outputTokens');
  return { input, output, total: input + output };
}

/**
 * How many money units one Dodo credit is worth, from `creditsPerDollar` (100 when credits are
 * cents). It must divide 10¹² so that every credit amount converts exactly.
 */
export function unitsPerCredit(creditsPerDollar: string | number, optionName = 'creditsPerDollar'): Money {
  const text = decimalText(creditsPerDollar, optionName);
  const decimal = parseExactDecimal(text);
  const invalid = () =>
    new ConfigError(
      'ERR_ELB_INVALID_CREDITS_PER_DOLLAR',
      `\`${optionName}\` must be a positive number of credits per US dollar that divides 10^${MONEY_SCALE} (1, 100 or 1000 are typical; got ${describe(creditsPerDollar)}).`,
    );
  if (!decimal || decimal.mantissa <= 0n) throw invalid();
  // units per credit = 10^12 / (mantissa / 10^decimals)
  const numerator = UNITS_PER_DOLLAR * 10n ** BigInt(decimal.decimals);
  if (numerator % decimal.mantissa !== 0n) throw invalid();
  return numerator / decimal.mantissa;
}

/**
 * Parses a Dodo credit amount (a decimal string such as `"4999.985"`, possibly negative) into
 * money units. Digits finer than one unit are rounded toward negative infinity, so a balance
 * is never read as more than it is.
 */
export function parseCredits(credits: string, perCredit: Money): Money {
  const decimal = parseExactDecimal(String(credits).trim());
  if (!decimal) throw new TypeError(`Not a decimal credit amount: ${describe(credits)}.`);
  const scaled = decimal.mantissa * perCredit;
  const divisor = 10n ** BigInt(decimal.decimals);
  const quotient = scaled / divisor;
  // BigInt division truncates toward zero; step down for negative remainders (floor).
  return scaled % divisor < 0n ? quotient - 1n : quotient;
}

/** Formats an integer amount at `scale` decimals as the shortest exact decimal string. */
function formatScaled(amount: bigint, divisor: bigint, digits: number): string {
  const negative = amount < 0n;
  const magnitude = negative ? -amount : amount;
  const whole = magnitude / divisor;
  const fraction = (magnitude % divisor).toString().padStart(digits, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** Formats money as a Dodo credit amount, exactly (`"4999.985"`); the inverse of `parseCredits`. */
export function formatCredits(amount: Money, perCredit: Money): string {
  // perCredit divides 10^12, so some 10^digits (digits <= 12) is a multiple of it: exact.
  let digits = 0;
  while (10n ** BigInt(digits) % perCredit !== 0n) digits += 1;
  const divisor = 10n ** BigInt(digits);
  return formatScaled((amount * divisor) / perCredit, divisor, digits);
}

/** Formats money as an exact decimal amount of US dollars, e.g. `"4.99985"`. */
export function formatUsd(amount: Money): string {
  return formatScaled(amount, UNITS_PER_DOLLAR, MONEY_SCALE);
}

/** Options of {@link displayUsd}. */
export interface DisplayUsdOptions {
  /**
   * Round to this many decimals (0 to 12), half away from zero, and show exactly that many:
   * `2` shows cents, as people read money (`"$4.95"` for $4.9507147, `"-$0.05"` for
   * -$0.0492853). An amount that rounds to zero shows without a sign (`"$0.00"`).
   * @default undefined (exact: at least two decimals and as many more as needed)
   */
  decimals?: number;
}

/**
 * Formats money for people: dollars with at least two decimals and as many more as needed to
 * stay exact, e.g. `"$4.50"`, `"$0.0000025"`, `"-$1.00"`; or rounded to `options.decimals`
 * (`displayUsd(amount, { decimals: 2 })` → `"$4.95"`). Exact integer arithmetic, never a float.
 */
export function displayUsd(amount: Money, options: Readonly<DisplayUsdOptions> = {}): string {
  const { decimals } = options;
  let magnitude = amount < 0n ? -amount : amount;
  if (decimals !== undefined) {
    if (!Number.isSafeInteger(decimals) || decimals < 0 || decimals > MONEY_SCALE) {
      throw new RangeError(
        `displayUsd: \`decimals\` must be an integer from 0 to ${MONEY_SCALE} (got ${decimals}).`,
      );
    }
    const step = 10n ** BigInt(MONEY_SCALE - decimals);
    magnitude = ((magnitude + step / 2n) / step) * step;
  }
  const [whole, fraction = ''] = formatUsd(magnitude).split('.');
  const digits = decimals ?? Math.max(2, fraction.length);
  const sign = amount < 0n && magnitude !== 0n ? '-' : '';
  return `${sign}$${whole}${digits > 0 ? `.${fraction.padEnd(digits, '0')}` : ''}`;
}

/**
 * Converts an amount in a currency's minor units (Dodo's `total_amount`, e.g. cents) into money,
 * exactly. `exponent` is the currency's number of minor-unit digits (2 for USD).
 */
export function moneyFromMinorUnits(amount: number | bigint | string, exponent = 2): Money {
  const minor = typeof amount === 'bigint' ? amount : BigInt(amount);
  if (typeof amount === 'number' && !Number.isSafeInteger(amount)) {
    throw new RangeError(`Minor-unit amount must be an integer (got ${amount}).`);
  }
  return minor * 10n ** BigInt(MONEY_SCALE - exponent);
}

/** Parses money from its integer-string form (as stored in Redis). */
export function moneyFromString(text: string): Money {
  if (!/^-?\d+$/.test(text)) throw new TypeError(`Not an integer money amount: ${describe(text)}.`);
  return BigInt(text);
}
