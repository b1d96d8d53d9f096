import type { SseEvent } from './stream.js';
import type { MockCompletion } from './tokens.js';

/** What one answer needs besides the completion: ids and the request's stream settings. */
export interface ChatAnswer {
  id: string;
  created: number;
  model: string;
  completion: MockCompletion;
  /** `false` drops `usage` (the "omit usage" fault). */
  withUsage: boolean;
}

export const SYSTEM_FINGERPRINT = 'fp_mock_llm';

/** Chat Completions `usage`, with every detail field OpenAI sends. */
export function chatUsage(completion: MockCompletion) {
  return {
    prompt_tokens: completion.promptTokens,
    completion_tokens: completion.completionTokens,
    total_tokens: completion.totalTokens,
    prompt_tokens_details: { cached_tokens: completion.cachedTokens, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: completion.reasoningTokens,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

/** A `chat.completion` object, with `n` choices (each the same completion). */
export function chatCompletionBody({ id, created, model, completion, withUsage }: ChatAnswer) {
  return {
    id,
    object: 'chat.completion',
    created,
    model,
    choices: Array.from({ length: completion.choices }, (_, index) => ({
      index,
      message: { role: 'assistant', content: completion.text, refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: completion.finishReason,
    })),
    ...(withUsage ? { usage: chatUsage(completion) } : {}),
    service_tier: 'default',
    system_fingerprint: SYSTEM_FINGERPRINT,
  };
}

/**
 * The stream OpenAI sends: a role chunk, one chunk per token, a finish chunk with an empty
 * delta, then — only with `stream_options.include_usage` — a usage chunk with empty `choices`
 * (every earlier chunk then carries `usage: null`), then `data: [DONE]`.
 */
export function* chatCompletionEvents(answer: ChatAnswer, includeUsage: boolean): Generator<SseEvent> {
  const { id, created, model, completion } = answer;
  const chunkOf = (choices: object[], usage: { usage?: object | null }) =>
    JSON.stringify({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      service_tier: 'default',
      system_fingerprint: SYSTEM_FINGERPRINT,
      choices,
      ...usage,
    });
  const usageField = includeUsage ? { usage: null } : {};
  const choices = Array.from({ length: completion.choices }, (_, index) => index);
  // Every choice advances together, as OpenAI interleaves them: one chunk per choice per step.
  const chunk = (delta: object, finishReason: string | null) =>
    chunkOf(
      choices.map((index) => ({ index, delta, logprobs: null, finish_reason: finishReason })),
      usageField,
    );

  yield { data: chunk({ role: 'assistant', content: '', refusal: null }, null) };
  // Reasoning happens before the first visible token, so that token carries their time.
  let unpaced = completion.reasoningTokens;
  for (const [index, token] of completion.tokens.entries()) {
    yield {
      data: chunk({ content: index === 0 ? token : ` ${token}` }, null),
      tokens: completion.choices + unpaced,
      visible: true,
    };
    unpaced = 0;
  }
  yield { data: chunk({}, completion.finishReason), tokens: unpaced };
  if (includeUsage && answer.withUsage) {
    yield { data: chunkOf([], { usage: chatUsage(completion) }) };
  }
  yield { data: '[DONE]' };
}
