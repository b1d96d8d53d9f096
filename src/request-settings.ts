import type { Request } from 'express';
import { ConfigError } from './errors.js';
import { type TokenEstimator, utf8ByteTokens } from './estimate/input.js';
import type { OutputLimitField } from './estimate/output.js';
import type { PriceInput, PricingInput } from './money.js';
import {
  optionalFunction,
  positiveInteger,
  type ResolvedPricing,
  requireFunction,
  resolveCustomerIdReader,
  resolveModelPricing,
  resolveModelReader,
  resolveRequestIdReader,
} from './options.js';

/**
 * How a request is billed, whatever middleware looks at it: resolved once per `createBilling`
 * (or per standalone middleware) and shared by every step that runs for the request, so that
 * what a request is billed never depends on which middleware runs first.
 */
export interface RequestSettingsOptions {
  /**
   * The Dodo customer id of the caller, from the app's own authentication (never from the
   * request body), or `undefined` when the caller is unknown.
   * @example (req) => req.user?.dodoCustomerId
   */
  customerId?: (req: Request) => string | undefined | Promise<string | undefined>;
  /**
   * The request's id: an idempotency key scoped to the customer. A request under an id that is
   * in flight or already billed is refused with 409 (it is the same request: billed once, and
   * never a free one). It keys the reservation and the usage events' ids; at most 128
   * printable ASCII characters.
   * @default a random UUID per request
   * @example (req) => req.get('idempotency-key') ?? randomUUID()
   */
  requestId?: (req: Request) => string;
  /** The model a request is priced at. @default (req) => req.body?.model */
  model?: (req: Request) => string | undefined;
  /**
   * Counts a text's tokens, to estimate a request's input (and the output of a stream cut
   * before its usage). The default counts UTF-8 bytes, an upper bound for OpenAI's tokenizers;
   * a real tokenizer (such as `tiktoken`) holds less money while a request runs.
   * @default utf8ByteTokens
   */
  estimateTokens?: TokenEstimator;
  /** Input tokens held for each image of a request (per model in `pricing`). @default 1445 */
  imageTokens?: number;
  /**
   * Output tokens per completion for a model whose `pricing` entry gives no `maxOutputTokens`,
   * when the request sets no limit of its own.
   * @default 4096
   */
  defaultMaxOutputTokens?: number;
  /**
   * How the output of a request that sets no limit of its own is bounded.
   * - `'write'` (default): the package writes the limit it reserved into the request the
   *   handler forwards (`max_completion_tokens` for Chat Completions, `max_output_tokens` for
   *   the Responses API, `max_tokens` otherwise). It reserves the model's `maxOutputTokens`
   *   when the balance covers it, less when it does not (down to `minOutputTokens`): a
   *   customer low on credit gets a shorter answer rather than a 402. Needs a handler that
   *   forwards `req.body` (a proxy) or calls through `trackOpenAI`.
   * - `'reserve'`: the request is left as it is, and the model's whole `maxOutputTokens` is
   *   reserved: a request the balance cannot cover at that size is refused.
   * @default 'write'
   */
  outputLimit?: 'write' | 'reserve';
  /** Where a written limit goes, when the upstream reads another field than the default. */
  outputLimitField?: OutputLimitField;
  /** The smallest output allowance `'write'` shrinks a limit to before refusing. @default 16 */
  minOutputTokens?: number;
  /**
   * Largest JSON response buffered and parsed for its usage; larger ones are estimated. A body
   * given to `res.json` is read as the object it is, whatever its size. @default 8 MiB
   */
  maxJsonBytes?: number;
  /**
   * USD per 1M input and output tokens per model (decimal strings), and what bounds each
   * model's cost: `maxOutputTokens`, `imageTokens`, `reasoning`.
   * @example { 'gpt-4o': { input: '2.50', output: '10.00', maxOutputTokens: 16384 } }
   */
  pricing?: PricingInput;
  /** Price for models missing from `pricing`; without it they are refused with 400. */
  defaultPrice?: PriceInput;
  /**
   * The API key (or project, team…) a request is billed to, for its budget: a key with a budget
   * set (`billing.setBudget`) holds each request against it, and refuses past its hard limit.
   * @example (req) => req.apiKey?.id
   */
  budgetKey?: (req: Request) => string | undefined;
}

export interface RequestSettings {
  customerId: (req: Request) => string | undefined | Promise<string | undefined>;
  requestId: ((req: Request) => string) | undefined;
  model: (req: Request) => string | undefined;
  estimateTokens: TokenEstimator;
  imageTokens: number;
  defaultMaxOutputTokens: number;
  outputLimit: 'write' | 'reserve';
  outputLimitField: OutputLimitField | undefined;
  minOutputTokens: number;
  maxJsonBytes: number;
  /** `undefined` when no pricing was given (a rate limit alone needs none). */
  pricing: ResolvedPricing | undefined;
  budgetKey: ((req: Request) => string | undefined) | undefined;
  /** The settings the options gave; the others are defaults, which never contradict a given one. */
  explicit: ReadonlySet<(typeof REQUEST_SETTING_KEYS)[number]>;
}

/** The options that are per-request settings: one value per request, whoever reads it. */
export const REQUEST_SETTING_KEYS = [
  'customerId',
  'requestId',
  'model',
  'estimateTokens',
  'imageTokens',
  'defaultMaxOutputTokens',
  'outputLimit',
  'outputLimitField',
  'minOutputTokens',
  'maxJsonBytes',
  'pricing',
  'defaultPrice',
  'budgetKey',
] as const satisfies readonly (keyof RequestSettingsOptions)[];

const OUTPUT_LIMIT_FIELDS: readonly OutputLimitField[] = [
  'max_completion_tokens',
  'max_output_tokens',
  'max_tokens',
];

export function resolveRequestSettings(options: RequestSettingsOptions, middleware: string): RequestSettings {
  const outputLimit = options.outputLimit ?? 'write';
  if (outputLimit !== 'write' && outputLimit !== 'reserve') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${middleware}: \`outputLimit\` must be 'write' or 'reserve' (got ${String(outputLimit)}).`,
    );
  }
  const outputLimitField = options.outputLimitField;
  if (outputLimitField !== undefined && !OUTPUT_LIMIT_FIELDS.includes(outputLimitField)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${middleware}: \`outputLimitField\` must be one of ${OUTPUT_LIMIT_FIELDS.join(', ')}.`,
    );
  }
  return {
    customerId: resolveCustomerIdReader(options.customerId, middleware),
    requestId: resolveRequestIdReader(options.requestId, middleware),
    model: resolveModelReader(options.model, middleware),
    estimateTokens:
      options.estimateTokens === undefined
        ? utf8ByteTokens
        : requireFunction(
            options.estimateTokens,
            'estimateTokens',
            middleware,
            'a function of a text returning its token count',
          ),
    imageTokens: positiveInteger(options.imageTokens, 'imageTokens', middleware, 1445),
    defaultMaxOutputTokens: positiveInteger(
      options.defaultMaxOutputTokens,
      'defaultMaxOutputTokens',
      middleware,
      4096,
    ),
    outputLimit,
    outputLimitField,
    minOutputTokens: positiveInteger(options.minOutputTokens, 'minOutputTokens', middleware, 16),
    maxJsonBytes: positiveInteger(options.maxJsonBytes, 'maxJsonBytes', middleware, 8 * 1024 * 1024),
    pricing:
      options.pricing === undefined && options.defaultPrice === undefined
        ? undefined
        : resolveModelPricing(options.pricing, options.defaultPrice, middleware),
    budgetKey: optionalFunction(
      options.budgetKey,
      'budgetKey',
      middleware,
      'a function of the request returning its API key or project',
    ),
    explicit: new Set(REQUEST_SETTING_KEYS.filter((key) => options[key] !== undefined)),
  };
}

/** Longest request id: it becomes part of event ids and event metadata, which Dodo bounds. */
export const MAX_REQUEST_ID_CHARS = 128;
const REQUEST_ID = /^[\x21-\x7e]+$/;
/** Longest model name: it is event metadata (Dodo: 500 characters) and names counters. */
export const MAX_MODEL_CHARS = 128;
const MODEL_NAME = /^[A-Za-z0-9._:/@+-]+$/;

/** Why `id` cannot be a request id, or `undefined` when it can. */
export function requestIdProblem(id: unknown): string | undefined {
  if (typeof id !== 'string' || id.length === 0) return 'The request id must be a non-empty string.';
  if (id.length > MAX_REQUEST_ID_CHARS || !REQUEST_ID.test(id)) {
    return `The request id must be 1 to ${MAX_REQUEST_ID_CHARS} printable ASCII characters without spaces.`;
  }
  return undefined;
}

/** Why `model` cannot be billed as a model name, or `undefined` when it can. */
export function modelNameProblem(model: string): string | undefined {
  if (model.length > MAX_MODEL_CHARS || !MODEL_NAME.test(model)) {
    return `The model name must be 1 to ${MAX_MODEL_CHARS} characters among letters, digits and . _ : / @ + -.`;
  }
  return undefined;
}
