import { costOfTokens, isReasoningModelName, type ModelPrice, type Money } from '../money.js';
import type { ResolvedPricing } from '../options.js';
import type { RequestSettings } from '../request-settings.js';
import { estimateInputTokens } from './input.js';
import { type OutputRequest, readOutputRequest } from './output.js';

export { BodyShapeError } from './body-walk.js';
export { charactersOverFour, type TokenEstimator, utf8ByteTokens } from './input.js';
export { type OutputLimitField, RequestFieldError } from './output.js';

/** The price of `model`: its `pricing` entry, else `defaultPrice`, else `undefined`. */
export function priceOfModel(
  pricing: ResolvedPricing | undefined,
  model: string | undefined,
): ModelPrice | undefined {
  if (!pricing || model === undefined) return undefined;
  const listed = pricing.table.get(model);
  if (listed) return listed;
  const fallback = pricing.fallback;
  // A model priced by `defaultPrice` reasons when its name says so, as a listed one would.
  return fallback && { ...fallback, reasoning: fallback.reasoning || isReasoningModelName(model) };
}

/**
 * What a request can cost at most, before it runs: its input (from the whole body) and the
 * output its choices can generate. Computed once per request, for every step that needs it.
 */
export class RequestEstimate {
  /** Input tokens: never fewer than the upstream counts, with the default estimator. */
  readonly inputTokens: number;
  readonly output: OutputRequest;
  readonly price: ModelPrice | undefined;

  constructor(
    readonly model: string | undefined,
    body: unknown,
    private readonly settings: RequestSettings,
  ) {
    this.price = priceOfModel(settings.pricing, model);
    this.output = readOutputRequest(body);
    this.inputTokens = estimateInputTokens(body, {
      estimateTokens: settings.estimateTokens,
      imageTokens: this.price?.imageTokens ?? settings.imageTokens,
    });
  }

  /** The model's own ceiling per completion: its `maxOutputTokens`, else the default. */
  get modelMaxOutputTokens(): number {
    return this.price?.maxOutputTokens ?? this.settings.defaultMaxOutputTokens;
  }

  /** Whether the package bounds the output by writing a limit into the request. */
  get writesLimit(): boolean {
    return this.output.limit === undefined && this.settings.outputLimit === 'write';
  }

  /**
   * Output tokens per completion the request may generate: its own limit (no more than the
   * model can generate), else the model's ceiling.
   */
  get maxOutputPerChoice(): number {
    const ceiling = this.modelMaxOutputTokens;
    const own = this.output.limit;
    return own === undefined ? ceiling : Math.min(own, this.price?.maxOutputTokens ?? own);
  }

  /** Every token the request may be billed: input and all its choices' output. */
  get maxTokens(): number {
    return this.inputTokens + this.output.choices * this.maxOutputPerChoice;
  }

  /** The most the request may cost at `price`. */
  maxCost(price = this.price): Money {
    return price
      ? costOfTokens(price, this.inputTokens, this.output.choices * this.maxOutputPerChoice).total
      : 0n;
  }

  /** The smallest output per choice a written limit may shrink to (`minOutputTokens`). */
  get minOutputPerChoice(): number {
    return Math.min(this.settings.minOutputTokens, this.maxOutputPerChoice);
  }

  /**
   * The least a request the package writes a limit into may hold: its input and
   * `minOutputTokens` per choice. A request with its own limit holds its maximum or nothing.
   */
  minCost(price = this.price): Money {
    if (!price || !this.writesLimit) return this.maxCost(price);
    return costOfTokens(price, this.inputTokens, this.output.choices * this.minOutputPerChoice).total;
  }

  /** Output tokens per choice that `reserved` pays for (floored), within the request's maximum. */
  outputPerChoiceFor(reserved: Money, price = this.price): number {
    if (!price || price.output === 0n) return this.maxOutputPerChoice;
    const forOutput = reserved - price.input * BigInt(this.inputTokens);
    const perChoice = forOutput / (price.output * BigInt(this.output.choices));
    const bounded = perChoice > BigInt(this.maxOutputPerChoice) ? this.maxOutputPerChoice : Number(perChoice);
    return Math.max(0, bounded);
  }
}

/** The most output a request body allows: its choices times its own limit; `undefined` without one. */
export function readOutputLimit(body: unknown): number | undefined {
  try {
    const output = readOutputRequest(body);
    return output.limit === undefined ? undefined : output.choices * output.limit;
  } catch {
    return undefined;
  }
}
