import type { ReportedUsage } from '../meter-usage/usage.js';

/** What tracking reads from one kind of OpenAI call (Chat Completions, Responses). */
export interface Endpoint {
  /**
   * The streaming request to send, with what tracking needs added, and which of the stream's
   * events the caller would not have received without that addition (they are hidden).
   */
  prepareStream(body: Readonly<Record<string, unknown>>): {
    body: Record<string, unknown>;
    hides: (event: unknown) => boolean;
  };
  /** The usage (when reported) and the generated characters of a JSON result. */
  readResult(result: unknown): { usage: ReportedUsage | undefined; generatedChars: number };
  /** The usage (when this event carries it) and the generated characters of one stream event. */
  readEvent(event: unknown): { usage: ReportedUsage | undefined; generatedChars: number };
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

export function lengthOf(text: unknown): number {
  return typeof text === 'string' ? text.length : 0;
}
