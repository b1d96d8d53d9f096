import { normalizeUsage } from '../meter-usage/usage.js';
import { type Endpoint, isRecord, lengthOf } from './endpoint.js';

/** UTF-8 bytes of text a Chat Completions message or delta carries (content, refusal, reasoning, tool arguments). */
function generatedBytesOf(message: unknown): number {
  if (!isRecord(message)) return 0;
  let chars = lengthOf(message.content) + lengthOf(message.refusal) + lengthOf(message.reasoning_content);
  if (Array.isArray(message.tool_calls)) {
    for (const call of message.tool_calls) {
      if (isRecord(call) && isRecord(call.function)) chars += lengthOf(call.function.arguments);
    }
  }
  return chars;
}

function choicesOf(value: unknown): unknown[] {
  return isRecord(value) && Array.isArray(value.choices) ? value.choices : [];
}

/** The usage-only chunk OpenAI sends last with `include_usage`: empty `choices`, `usage` set. */
function isUsageChunk(chunk: unknown): boolean {
  return (
    isRecord(chunk) && Array.isArray(chunk.choices) && chunk.choices.length === 0 && isRecord(chunk.usage)
  );
}

/**
 * `client.chat.completions.create`. A stream gets `stream_options.include_usage` when the
 * caller did not set it; the usage chunk it adds is then read and hidden, so a caller that
 * reads `chunk.choices[0]` of every chunk sees exactly the chunks it asked for.
 */
export const chatCompletions: Endpoint = {
  limitField: 'max_completion_tokens',
  prepareStream(body) {
    const streamOptions = isRecord(body.stream_options) ? body.stream_options : {};
    if (streamOptions.include_usage !== undefined) return { body: { ...body }, hides: () => false };
    return {
      body: { ...body, stream_options: { ...streamOptions, include_usage: true } },
      hides: isUsageChunk,
    };
  },
  readResult(result) {
    let chars = 0;
    for (const choice of choicesOf(result))
      chars += generatedBytesOf(isRecord(choice) ? choice.message : undefined);
    return { usage: normalizeUsage(isRecord(result) ? result.usage : undefined), generatedBytes: chars };
  },
  readEvent(chunk) {
    let chars = 0;
    for (const choice of choicesOf(chunk))
      chars += generatedBytesOf(isRecord(choice) ? choice.delta : undefined);
    return { usage: normalizeUsage(isRecord(chunk) ? chunk.usage : undefined), generatedBytes: chars };
  },
};
