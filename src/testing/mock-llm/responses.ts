import type { SseEvent } from './stream.js';
import type { MockCompletion } from './tokens.js';

/** What one Responses API answer needs besides the completion. */
export interface ResponsesAnswer {
  id: string;
  messageId: string;
  createdAt: number;
  model: string;
  completion: MockCompletion;
  /** The request's echoed fields. */
  request: { instructions?: unknown; max_output_tokens?: unknown; metadata?: unknown };
  /** `false` leaves `usage` null (the "omit usage" fault). */
  withUsage: boolean;
}

/** Responses API `usage`. */
export function responsesUsage(completion: MockCompletion) {
  return {
    input_tokens: completion.promptTokens,
    input_tokens_details: { cached_tokens: completion.cachedTokens },
    output_tokens: completion.completionTokens,
    output_tokens_details: { reasoning_tokens: completion.reasoningTokens },
    total_tokens: completion.totalTokens,
  };
}

type Phase = 'in_progress' | 'done';

function outputText(text: string) {
  return { type: 'output_text', text, annotations: [], logprobs: [] };
}

function message(answer: ResponsesAnswer, phase: Phase) {
  const { completion } = answer;
  const status =
    phase === 'in_progress'
      ? 'in_progress'
      : completion.finishReason === 'length'
        ? 'incomplete'
        : 'completed';
  return {
    id: answer.messageId,
    type: 'message',
    status,
    role: 'assistant',
    content: phase === 'in_progress' ? [] : [outputText(completion.text)],
  };
}

/**
 * A `response` object: the subset of fields clients read (status, output, usage, the echoed
 * request settings). A reply cut by `max_output_tokens` is `incomplete`, as OpenAI reports it.
 */
export function responseBody(answer: ResponsesAnswer, phase: Phase = 'done') {
  const { completion, request } = answer;
  const truncated = completion.finishReason === 'length';
  const status = phase === 'in_progress' ? 'in_progress' : truncated ? 'incomplete' : 'completed';
  return {
    id: answer.id,
    object: 'response',
    created_at: answer.createdAt,
    status,
    error: null,
    incomplete_details: phase === 'done' && truncated ? { reason: 'max_output_tokens' } : null,
    instructions: typeof request.instructions === 'string' ? request.instructions : null,
    max_output_tokens: typeof request.max_output_tokens === 'number' ? request.max_output_tokens : null,
    model: answer.model,
    output: phase === 'done' ? [message(answer, 'done')] : [],
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    service_tier: 'default',
    store: false,
    temperature: 1,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: [],
    top_p: 1,
    truncation: 'disabled',
    usage: phase === 'done' && answer.withUsage ? responsesUsage(completion) : null,
    user: null,
    metadata: typeof request.metadata === 'object' && request.metadata !== null ? request.metadata : {},
  };
}

/**
 * The semantic events of a streamed response, each as `event: <type>` plus its JSON with a
 * `sequence_number`: `response.created`, `response.in_progress`, the output item and content
 * part being added, one `response.output_text.delta` per token, the `.done` events, and last
 * `response.completed` (or `response.incomplete`) whose `response.usage` carries the usage.
 */
export function* responsesEvents(answer: ResponsesAnswer): Generator<SseEvent> {
  const { completion } = answer;
  let sequence = 0;
  const event = (type: string, fields: object, tokens = 0): SseEvent => ({
    event: type,
    data: JSON.stringify({ type, sequence_number: sequence++, ...fields }),
    tokens,
  });
  const at = { item_id: answer.messageId, output_index: 0, content_index: 0 };

  yield event('response.created', { response: responseBody(answer, 'in_progress') });
  yield event('response.in_progress', { response: responseBody(answer, 'in_progress') });
  yield event('response.output_item.added', { output_index: 0, item: message(answer, 'in_progress') });
  yield event('response.content_part.added', { ...at, part: outputText('') });
  // Reasoning happens before the first visible token, so that token carries their time.
  let unpaced = completion.reasoningTokens;
  for (const [index, token] of completion.tokens.entries()) {
    const delta = index === 0 ? token : ` ${token}`;
    yield {
      ...event('response.output_text.delta', { ...at, delta, logprobs: [] }, 1 + unpaced),
      visible: true,
    };
    unpaced = 0;
  }
  yield event('response.output_text.done', { ...at, text: completion.text, logprobs: [] }, unpaced);
  yield event('response.content_part.done', { ...at, part: outputText(completion.text) });
  yield event('response.output_item.done', { output_index: 0, item: message(answer, 'done') });
  const final = completion.finishReason === 'length' ? 'response.incomplete' : 'response.completed';
  yield event(final, { response: responseBody(answer, 'done') });
}
