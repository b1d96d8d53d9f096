/** A request field the package cannot bill as given: answered 400 naming the field. */
export class RequestFieldError extends Error {
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(message);
    this.name = 'RequestFieldError';
  }
}

/** The request fields that limit output tokens, per choice. */
export type OutputLimitField = 'max_completion_tokens' | 'max_output_tokens' | 'max_tokens';

const LIMIT_FIELDS: readonly OutputLimitField[] = [
  'max_completion_tokens',
  'max_output_tokens',
  'max_tokens',
];

/** OpenAI's own bounds on `n` and `best_of`. */
const MAX_CHOICES = 128;
const MAX_BEST_OF = 20;

/** What a request says about the output it may generate. */
export interface OutputRequest {
  /**
   * Completions the upstream generates and bills: `n` (Chat, Completions), or `best_of` when
   * larger (Completions generates `best_of` and returns `n`). 1 when neither is set.
   */
  choices: number;
  /**
   * The request's own output limit per choice, the largest of the limit fields it sets (the
   * upstream reads one of them; the bound must hold whichever). `undefined` when it sets none.
   */
  limit: number | undefined;
  /** Where a limit goes when the package writes one: the field of the request's API. */
  limitField: OutputLimitField;
}

function positiveInteger(body: Record<string, unknown>, field: string, max: number): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new RequestFieldError(
      field,
      `\`${field}\` must be an integer from 1 to ${max} (got ${JSON.stringify(value)?.slice(0, 40)}).`,
    );
  }
  return value;
}

/**
 * Reads `n`, `best_of` and the output limit fields of an OpenAI-shaped body (Chat Completions,
 * Responses, Completions, Anthropic Messages). A field with a value no upstream accepts is a
 * `RequestFieldError` rather than a guess.
 */
export function readOutputRequest(body: unknown): OutputRequest {
  const request = (body !== null && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const n = positiveInteger(request, 'n', MAX_CHOICES) ?? 1;
  const bestOf = positiveInteger(request, 'best_of', MAX_BEST_OF) ?? 1;
  let limit: number | undefined;
  for (const field of LIMIT_FIELDS) {
    const value = positiveInteger(request, field, Number.MAX_SAFE_INTEGER);
    if (value !== undefined) limit = Math.max(limit ?? 0, value);
  }
  return { choices: Math.max(n, bestOf), limit, limitField: limitFieldOf(request) };
}

/** Chat Completions: `max_completion_tokens`; Responses: `max_output_tokens`; else `max_tokens`. */
function limitFieldOf(request: Record<string, unknown>): OutputLimitField {
  if (Array.isArray(request.messages)) return 'max_completion_tokens';
  if (request.input !== undefined) return 'max_output_tokens';
  return 'max_tokens';
}
