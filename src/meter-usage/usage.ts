/** Token counts read from a provider's `usage` object. */
export interface ReportedUsage {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens?: number;
  reasoningTokens?: number;
}

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/**
 * Normalises a `usage` object of any of the shapes LLM APIs answer with:
 * - Chat Completions: `prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`,
 *   `completion_tokens_details.reasoning_tokens`;
 * - Responses API: `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
 *   `output_tokens_details.reasoning_tokens`;
 * - Anthropic Messages: `input_tokens`, `output_tokens`, `cache_read_input_tokens`,
 *   `cache_creation_input_tokens` (Anthropic's `input_tokens` excludes cached tokens, so they are
 *   added back: every input token is billed).
 */
export function normalizeUsage(usage: unknown): ReportedUsage | undefined {
  if (usage === null || typeof usage !== 'object') return undefined;
  const fields = usage as Record<string, unknown>;
  const details = (name: string, key: string) =>
    count((fields[name] as Record<string, unknown> | null | undefined)?.[key]);

  const promptTokens = count(fields.prompt_tokens);
  const completionTokens = count(fields.completion_tokens);
  if (promptTokens !== undefined || completionTokens !== undefined) {
    return withOptional({
      inputTokens: promptTokens ?? 0,
      outputTokens: completionTokens ?? 0,
      cachedInputTokens: details('prompt_tokens_details', 'cached_tokens'),
      reasoningTokens: details('completion_tokens_details', 'reasoning_tokens'),
    });
  }

  const inputTokens = count(fields.input_tokens);
  const outputTokens = count(fields.output_tokens);
  if (inputTokens === undefined && outputTokens === undefined) return undefined;
  const cacheRead = count(fields.cache_read_input_tokens);
  const cacheCreation = count(fields.cache_creation_input_tokens);
  if (cacheRead !== undefined || cacheCreation !== undefined) {
    return withOptional({
      inputTokens: (inputTokens ?? 0) + (cacheRead ?? 0) + (cacheCreation ?? 0),
      outputTokens: outputTokens ?? 0,
      cachedInputTokens: cacheRead,
    });
  }
  return withOptional({
    inputTokens: inputTokens ?? 0,
    outputTokens: outputTokens ?? 0,
    cachedInputTokens: details('input_tokens_details', 'cached_tokens'),
    reasoningTokens: details('output_tokens_details', 'reasoning_tokens'),
  });
}

function withOptional(usage: {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens: number | undefined;
  reasoningTokens?: number | undefined;
}): ReportedUsage {
  const result: ReportedUsage = { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens };
  if (usage.cachedInputTokens !== undefined) result.cachedInputTokens = usage.cachedInputTokens;
  if (usage.reasoningTokens !== undefined) result.reasoningTokens = usage.reasoningTokens;
  return result;
}
