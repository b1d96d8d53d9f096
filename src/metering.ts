import { ConfigError } from './errors.js';
import { displayUsd, type ModelPrice, type Money, parsePricePerMillion } from './money.js';

/** The two kinds of usage event of a request. */
export type MeterKind = 'input' | 'output';

/** Event names of the two usage events of a request. */
export interface MeterNames {
  /** @example 'llm.input_tokens' */
  input: string;
  /** @example 'llm.output_tokens' */
  output: string;
}

/**
 * One input and one output meter per model (`gpt-4o.input_tokens`, …), each event carrying the
 * real token count: what OpenAI does internally. Exact only for prices whose "tokens per credit"
 * is a finite decimal (see docs/metering-strategies.md); a `ConfigError` says so at startup.
 */
export interface PerModelStrategy {
  strategy: 'per-model';
}

/**
 * One input and one output meter for every model; each event's `tokens` is the real count times
 * the model's integer weight `price / base`. Exact for any pricing table.
 */
export interface WeightedStrategy {
  strategy: 'weighted';
  /** Event name of the input meter. @default 'llm.input_tokens' */
  input?: string;
  /** Event name of the output meter. @default 'llm.output_tokens' */
  output?: string;
  /**
   * The price of one weighted token, in USD per 1M tokens. It must divide every price and the
   * value of one credit. Pin it so that adding a model never changes the meaning of a meter unit.
   * @default the greatest common divisor of every price and of one credit's value
   * @example '0.05'
   */
  base?: string | number;
}

/** How usage events are metered: a strategy, chosen with one option. */
export type MeteringStrategy = PerModelStrategy | WeightedStrategy;

/** The `meters` shared option: event names, a function of the model, or a strategy. */
export type MetersOption = MeterNames | ((model: string) => MeterNames) | MeteringStrategy;

/** @returns the per-model strategy, for `meters`. */
export function perModelMeters(): PerModelStrategy {
  return { strategy: 'per-model' };
}

/** @returns the weighted single-meter strategy, for `meters`. */
export function weightedMeters(options: Omit<WeightedStrategy, 'strategy'> = {}): WeightedStrategy {
  return { strategy: 'weighted', ...options };
}

export const DEFAULT_METERS: MeterNames = { input: 'llm.input_tokens', output: 'llm.output_tokens' };

/** The per-model strategy's event names. */
export function perModelMeterNames(model: string): MeterNames {
  return { input: `${model}.input_tokens`, output: `${model}.output_tokens` };
}

/** How one model's usage of one kind becomes an event: its meter and the multiplier of its tokens. */
export interface ModelMetering {
  input: string;
  output: string;
  /** Meter units per input token (1 unless weighted). */
  inputWeight: bigint;
  outputWeight: bigint;
  /** Whether events carry weighted tokens (then `raw_tokens` and `weight` too). */
  weighted: boolean;
}

/**
 * The `meters` option, resolved once at startup. Callable as `(model) => MeterNames` too, like
 * the resolved option it replaces.
 */
export interface ResolvedMetering {
  (model: string): MeterNames;
  strategy: 'names' | 'per-model' | 'weighted';
  /** Weighted only: money per meter unit. */
  base: Money | undefined;
  forModel(model: string): ModelMetering;
}

/** A meter the metering needs on Dodo, with its exact rate. */
export interface MeterSpec {
  eventName: string;
  kind: MeterKind;
  /** The models whose events it sums, each with its weight. */
  models: { model: string; weight: bigint }[];
  /** Money per meter unit (0: free, no credits deducted). */
  unitPrice: Money;
  /** Dodo's "meter units per credit" as an exact decimal string; undefined when free. */
  unitsPerCredit: string | undefined;
  measurementUnit: string;
}

/** Dodo takes "meter units per credit" as a decimal string; we never send more digits than this. */
export const MAX_RATE_DECIMALS = 12;

const KINDS: readonly MeterKind[] = ['input', 'output'];
const STRATEGY_HINT =
  "`meters` must be { input, output } event names, a function of the model returning them, { strategy: 'per-model' } or { strategy: 'weighted', base? }";

function gcd(a: bigint, b: bigint): bigint {
  let [x, y] = [a < 0n ? -a : a, b < 0n ? -b : b];
  while (y !== 0n) [x, y] = [y, x % y];
  return x;
}

/**
 * `numerator / denominator` as an exact decimal string with at most `maxDecimals` decimals, or
 * undefined when it does not terminate within them.
 */
export function exactDecimal(
  numerator: bigint,
  denominator: bigint,
  maxDecimals = MAX_RATE_DECIMALS,
): string | undefined {
  for (let decimals = 0; decimals <= maxDecimals; decimals++) {
    const scaled = numerator * 10n ** BigInt(decimals);
    if (scaled % denominator !== 0n) continue;
    const digits = (scaled / denominator).toString().padStart(decimals + 1, '0');
    return decimals === 0 ? digits : `${digits.slice(0, -decimals)}.${digits.slice(-decimals)}`;
  }
  return undefined;
}

/** `numerator / denominator` to six significant decimals, for messages (never for money). */
function approximately(numerator: bigint, denominator: bigint): string {
  const scaled = (numerator * 1_000_000n) / denominator;
  const text = scaled.toString().padStart(7, '0');
  return `${text.slice(0, -6)}.${text.slice(-6)}…`;
}

function perMillion(price: Money): string {
  return `${displayUsd(price * 1_000_000n)} per 1M tokens`;
}

function validNames(value: unknown): value is MeterNames {
  const names = value as Partial<MeterNames> | null | undefined;
  return (
    typeof names?.input === 'string' && typeof names.output === 'string' && !!names.input && !!names.output
  );
}

/** The weighted strategy's base: the given one (checked), or the GCD of every price and one credit. */
function weightedBase(
  strategy: WeightedStrategy,
  prices: ReadonlyMap<string, ModelPrice>,
  perCredit: Money,
  where: string,
): Money {
  if (strategy.base === undefined) {
    let base = perCredit;
    for (const price of prices.values()) base = gcd(gcd(base, price.input), price.output);
    return base;
  }
  const base = parsePricePerMillion(strategy.base, `${where}.base`);
  if (base === 0n)
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `\`${where}.base\` must be greater than 0.`);
  if (perCredit % base !== 0n) {
    throw new ConfigError(
      'ERR_ELB_INEXACT_METER',
      `\`${where}.base\` (${perMillion(base)}) must divide the value of one credit (${displayUsd(perCredit)}); omit it to use the greatest common divisor of your prices.`,
    );
  }
  for (const [model, price] of prices) {
    for (const kind of KINDS) {
      if (price[kind] % base !== 0n) {
        throw new ConfigError(
          'ERR_ELB_INEXACT_METER',
          `\`${where}.base\` (${perMillion(base)}) does not divide ${model}'s ${kind} price (${perMillion(price[kind])}), so its weight would not be a whole number; omit \`base\` or choose one that divides every price.`,
        );
      }
    }
  }
  return base;
}

function metering(
  strategy: ResolvedMetering['strategy'],
  base: Money | undefined,
  forModel: (model: string) => ModelMetering,
): ResolvedMetering {
  const names = (model: string): MeterNames => {
    const { input, output } = forModel(model);
    return { input, output };
  };
  return Object.assign(names, { strategy, base, forModel });
}

/**
 * Resolves the `meters` option once, at startup. Under a strategy it also checks exactness
 * against `prices` (every priced model, and the fallback price under `fallbackName`) and throws
 * a `ConfigError` naming the model and the strategy that would fix it.
 */
export function resolveMetering(
  meters: MetersOption | undefined,
  prices: ReadonlyMap<string, ModelPrice> | undefined,
  perCredit: Money,
  where = 'meters',
  fallback?: { name: string; price: ModelPrice },
): ResolvedMetering {
  const unweighted = (names: MeterNames): ModelMetering =>
    Object.freeze({ ...names, inputWeight: 1n, outputWeight: 1n, weighted: false });
  const plain = (names: (model: string) => MeterNames): ResolvedMetering =>
    metering('names', undefined, (model) => unweighted(names(model)));
  // The same two names for every model: one object, not one per event.
  const fixed = (names: MeterNames): ResolvedMetering => {
    const same = unweighted(names);
    return metering('names', undefined, () => same);
  };
  if (meters === undefined) return fixed(DEFAULT_METERS);
  if (typeof meters === 'function') return plain(meters);
  if (meters === null || typeof meters !== 'object')
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${STRATEGY_HINT}.`);
  if (!('strategy' in meters)) {
    if (!validNames(meters)) throw new ConfigError('ERR_ELB_INVALID_OPTION', `${STRATEGY_HINT}.`);
    return fixed(meters);
  }
  const priced = new Map(prices ?? []);
  if (meters.strategy === 'per-model') {
    const resolved = metering('per-model', undefined, (model) => ({
      ...perModelMeterNames(model),
      inputWeight: 1n,
      outputWeight: 1n,
      weighted: false,
    }));
    if (fallback) {
      throw new ConfigError(
        'ERR_ELB_INEXACT_METER',
        `\`${fallback.name}\` prices models missing from \`pricing\`, but per-model meters exist on Dodo only for the models in \`pricing\`, so Dodo would not deduct their usage: list those models in \`pricing\`, or use { strategy: 'weighted' }.`,
      );
    }
    meterSpecs(resolved, priced, perCredit, where);
    return resolved;
  }
  if (meters.strategy !== 'weighted') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`${where}.strategy\` must be 'per-model' or 'weighted' (got ${JSON.stringify((meters as { strategy: unknown }).strategy)}).`,
    );
  }
  const names = {
    input: meters.input ?? DEFAULT_METERS.input,
    output: meters.output ?? DEFAULT_METERS.output,
  };
  if (!validNames(names)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `\`${where}.input\` and \`.output\` must be event names.`,
    );
  }
  const base = weightedBase(meters, priced, perCredit, where);
  if (fallback) {
    for (const kind of KINDS) {
      if (fallback.price[kind] % base !== 0n) {
        throw new ConfigError(
          'ERR_ELB_INEXACT_METER',
          `\`${fallback.name}.${kind}\` (${perMillion(fallback.price[kind])}) is not a multiple of the weighted meters' base (${perMillion(base)}): add the model to \`pricing\` or pin \`${where}.base\` to a divisor of it.`,
        );
      }
    }
  }
  const weights = (price: ModelPrice | undefined): ModelMetering => ({
    ...names,
    inputWeight: price ? price.input / base : 0n,
    outputWeight: price ? price.output / base : 0n,
    weighted: true,
  });
  const byModel = new Map([...priced].map(([model, price]) => [model, weights(price)]));
  const other = weights(fallback?.price);
  return metering('weighted', base, (model) => byModel.get(model) ?? other);
}

/**
 * The meters `metering` needs for the priced models, each with its exact "meter units per
 * credit" (`credit value / money per meter unit`). Throws a `ConfigError` when a meter would sum
 * models of different unit prices, or when its rate is not a finite decimal.
 */
export function meterSpecs(
  metering: ResolvedMetering,
  prices: ReadonlyMap<string, ModelPrice>,
  perCredit: Money,
  where = 'meters',
): MeterSpec[] {
  const specs = new Map<string, MeterSpec & { firstModel: string }>();
  for (const [model, price] of prices) {
    const meter = metering.forModel(model);
    for (const kind of KINDS) {
      const weight = kind === 'input' ? meter.inputWeight : meter.outputWeight;
      const eventName = meter[kind];
      const unitPrice = weight === 0n ? 0n : price[kind] / weight;
      const spec = specs.get(eventName);
      if (!spec) {
        specs.set(eventName, {
          eventName,
          kind,
          models: [{ model, weight }],
          unitPrice,
          unitsPerCredit: undefined,
          measurementUnit: meter.weighted ? 'weighted tokens' : 'tokens',
          firstModel: model,
        });
        continue;
      }
      if (weight !== 0n && spec.unitPrice !== 0n && spec.unitPrice !== unitPrice) {
        throw new ConfigError(
          'ERR_ELB_INEXACT_METER',
          `\`${where}\`: the meter "${eventName}" would sum ${spec.firstModel} (${perMillion(spec.unitPrice)}) and ${model} (${perMillion(unitPrice)}) ${kind} tokens, but one meter has one rate. Use { strategy: 'per-model' } or { strategy: 'weighted' }.`,
        );
      }
      if (spec.unitPrice === 0n) spec.unitPrice = unitPrice;
      spec.models.push({ model, weight });
    }
  }
  for (const spec of specs.values()) {
    if (spec.unitPrice === 0n) continue;
    spec.unitsPerCredit = exactDecimal(perCredit, spec.unitPrice);
    if (spec.unitsPerCredit !== undefined) continue;
    const model = spec.models.find((entry) => entry.weight !== 0n)?.model ?? spec.firstModel;
    const credits = displayUsd(perCredit);
    throw new ConfigError(
      'ERR_ELB_INEXACT_METER',
      metering.strategy === 'weighted'
        ? `\`${where}\`: the weighted meter "${spec.eventName}" has no exact rate: one credit (${credits}) over its base (${perMillion(spec.unitPrice)}) is ${approximately(perCredit, spec.unitPrice)} units. Omit \`base\` to use one that divides the credit's value.`
        : `\`${where}\`: ${model}'s ${spec.kind} tokens cannot be metered exactly on the meter "${spec.eventName}": at ${perMillion(spec.unitPrice)} one credit (${credits}) is ${approximately(perCredit, spec.unitPrice)} tokens, not a finite decimal for Dodo's "meter units per credit". Use { strategy: 'weighted' } (weightedMeters()), exact for any prices.`,
    );
  }
  return [...specs.values()].map(({ firstModel: _, ...spec }) => spec);
}

/**
 * The default meters carry raw token counts for every model, so Dodo deducts every model's usage
 * at the one rate its meter is linked at: exact only when every priced model costs the same.
 * @returns why the default would mis-bill this pricing table on Dodo, or `undefined`.
 */
export function defaultMetersProblem(
  meters: MetersOption | undefined,
  prices: ReadonlyMap<string, ModelPrice> | undefined,
): string | undefined {
  if (meters !== undefined || !prices || prices.size < 2) return undefined;
  const [first, ...rest] = [...prices.values()];
  if (rest.every((price) => price.input === first!.input && price.output === first!.output)) return undefined;
  return (
    `\`pricing\` names ${prices.size} models at different prices but \`meters\` is not set: the default meters ` +
    `(${DEFAULT_METERS.input}, ${DEFAULT_METERS.output}) carry raw token counts, so Dodo would deduct every ` +
    'model at one rate while the local balance charges each its own. Set `meters: weightedMeters()` (exact for ' +
    'any pricing table, what `express-llm-billing setup` creates with { "strategy": "weighted" }) or ' +
    '`perModelMeters()`; see docs/metering-strategies.md.'
  );
}
