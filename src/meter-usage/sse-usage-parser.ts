import { StringDecoder } from 'node:string_decoder';
import { normalizeUsage, type ReportedUsage } from './usage.js';

/** A single SSE line longer than this is skipped, so a pathological stream cannot grow memory. */
const MAX_LINE_CHARS = 1_000_000;

/**
 * Reads usage out of a server-sent-event stream as its chunks pass, keeping only the current
 * unfinished line: OpenAI's usage chunk (after the finish chunk, before `[DONE]`), the
 * Responses API's `response.completed`, Anthropic's `message_start` + `message_delta`. It also
 * estimates the generated text's tokens, to bill a stream that is cut before its usage arrives.
 */
export class SseUsageParser {
  /** Usage the stream reported, once it has. */
  usage: ReportedUsage | undefined;
  /** The model the stream says it ran. */
  model: string | undefined;
  /** Tokens of generated text (content, reasoning, tool-call arguments) seen so far, estimated. */
  generatedTokens = 0;
  /** The stream said `[DONE]`. */
  done = false;
  private readonly decoder = new StringDecoder('utf8');
  private line = '';
  private skippingLongLine = false;
  private anthropicInput: ReportedUsage | undefined;

  /** `countTokens` estimates the generated text's tokens, delta by delta. */
  constructor(private readonly countTokens: (text: string) => number) {}

  push(chunk: Buffer | string): void {
    const text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    let start = 0;
    for (let newline = text.indexOf('\n', start); newline !== -1; newline = text.indexOf('\n', start)) {
      this.appendToLine(text.slice(start, newline));
      this.endLine();
      start = newline + 1;
    }
    this.appendToLine(text.slice(start));
  }

  private appendToLine(part: string): void {
    if (this.skippingLongLine) return;
    this.line += part;
    if (this.line.length > MAX_LINE_CHARS) {
      this.line = '';
      this.skippingLongLine = true;
    }
  }

  private endLine(): void {
    const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line;
    this.line = '';
    if (this.skippingLongLine) {
      this.skippingLongLine = false;
      return;
    }
    if (!line.startsWith('data:')) return;
    const data = line.slice(line.charAt(5) === ' ' ? 6 : 5);
    if (data === '[DONE]') {
      this.done = true;
      return;
    }
    if (data === '') return;
    let payload: unknown;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    if (payload !== null && typeof payload === 'object') this.read(payload as Record<string, unknown>);
  }

  private read(event: Record<string, unknown>): void {
    if (typeof event.model === 'string') this.model = event.model;
    switch (event.type) {
      case 'response.output_text.delta':
      case 'response.reasoning_text.delta':
      case 'response.function_call_arguments.delta':
        this.countText(event.delta);
        return;
      case 'response.completed':
      case 'response.incomplete': {
        const response = event.response as Record<string, unknown> | undefined;
        if (typeof response?.model === 'string') this.model = response.model;
        this.usage = normalizeUsage(response?.usage) ?? this.usage;
        return;
      }
      case 'message_start': {
        const message = event.message as Record<string, unknown> | undefined;
        if (typeof message?.model === 'string') this.model = message.model;
        this.anthropicInput = normalizeUsage(message?.usage);
        return;
      }
      case 'content_block_delta': {
        const delta = event.delta as Record<string, unknown> | undefined;
        this.countText(delta?.text ?? delta?.thinking ?? delta?.partial_json);
        return;
      }
      case 'message_delta': {
        const output = normalizeUsage({ input_tokens: 0, ...(event.usage as object) });
        if (output) {
          this.usage = { ...(this.anthropicInput ?? { inputTokens: 0 }), outputTokens: output.outputTokens };
        }
        return;
      }
    }
    // Chat Completions chunks.
    if (Array.isArray(event.choices)) {
      for (const choice of event.choices as { delta?: Record<string, unknown> }[]) {
        const delta = choice?.delta;
        if (!delta) continue;
        this.countText(delta.content);
        this.countText(delta.reasoning_content);
        this.countText(delta.refusal);
        if (Array.isArray(delta.tool_calls)) {
          for (const call of delta.tool_calls as { function?: { arguments?: unknown } }[]) {
            this.countText(call?.function?.arguments);
          }
        }
      }
    }
    const usage = normalizeUsage(event.usage);
    if (usage) this.usage = usage;
  }

  private countText(text: unknown): void {
    if (typeof text === 'string' && text !== '') this.generatedTokens += this.countTokens(text);
  }
}
