import { normalizeUsage } from '../meter-usage/usage.js';
import { type Endpoint, isRecord, lengthOf } from './endpoint.js';

/** Events whose `delta` is generated text (the 4-characters-a-token estimate counts them). */
const TEXT_DELTAS = new Set([
  'response.output_text.delta',
  'response.refusal.delta',
  'response.reasoning_text.delta',
  'response.reasoning_summary_text.delta',
  'response.function_call_arguments.delta',
]);

/** Events that close a response and carry its `usage`. */
const FINAL_EVENTS = new Set(['response.completed', 'response.incomplete', 'response.failed']);

/** Characters of text in a response's output items (messages, refusals, reasoning, tool arguments). */
function outputChars(response: Record<string, unknown>): number {
  if (!Array.isArray(response.output)) return 0;
  let chars = 0;
  for (const item of response.output) {
    if (!isRecord(item)) continue;
    chars += lengthOf(item.arguments);
    const parts = [
      ...(Array.isArray(item.content) ? item.content : []),
      ...(Array.isArray(item.summary) ? item.summary : []),
    ];
    for (const part of parts) {
      if (isRecord(part)) chars += lengthOf(part.text) + lengthOf(part.refusal);
    }
  }
  return chars;
}

/** `client.responses.create`: usage is in the response, or in a stream's final event. */
export const responses: Endpoint = {
  limitField: 'max_output_tokens',
  prepareStream(body) {
    return { body: { ...body }, hides: () => false };
  },
  readResult(result) {
    if (!isRecord(result)) return { usage: undefined, generatedBytes: 0 };
    return { usage: normalizeUsage(result.usage), generatedBytes: outputChars(result) };
  },
  readEvent(event) {
    if (!isRecord(event) || typeof event.type !== 'string') return { usage: undefined, generatedBytes: 0 };
    if (TEXT_DELTAS.has(event.type)) return { usage: undefined, generatedBytes: lengthOf(event.delta) };
    if (FINAL_EVENTS.has(event.type) && isRecord(event.response)) {
      return { usage: normalizeUsage(event.response.usage), generatedBytes: 0 };
    }
    return { usage: undefined, generatedBytes: 0 };
  },
};
