import type { UsageRecord } from '../billing-context.js';
import { normalizeUsage } from '../meter-usage/usage.js';

/**
 * A `UsageRecord` from the `usage` object an LLM SDK returns, for `billing.record(…)`:
 * OpenAI Chat Completions (`prompt_tokens`, `completion_tokens`, their `_details`), the
 * Responses API (`input_tokens`, `output_tokens`, their `_details`), or Anthropic Messages
 * (`input_tokens`, `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`;
 * Anthropic's `input_tokens` leaves cached tokens out, so they are added back: every input
 * token is billed, and `cachedInputTokens` keeps the cache reads).
 *
 * @example
 * const message = await anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 1024, messages });
 * res.locals.billing.record(usageRecordOf('claude-sonnet-4-5', message.usage));
 */
export function usageRecordOf(model: string, usage: unknown): UsageRecord {
  const counts = normalizeUsage(usage);
  if (!counts) {
    throw new TypeError(
      'usageRecordOf: `usage` has no token counts (expected OpenAI `prompt_tokens`/`completion_tokens` or `input_tokens`/`output_tokens`).',
    );
  }
  return { model, ...counts };
}
