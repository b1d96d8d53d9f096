import type { Response } from 'express';
import { SseUsageParser } from './sse-usage-parser.js';

/** What passed through a response, as far as billing needs it. */
export class ResponseCapture {
  /** Set once the first chunk shows an event stream. */
  sse: SseUsageParser | undefined;
  /** The JSON body's chunks as written (strings are kept as they are: no copy). */
  private jsonParts: (string | Uint8Array)[] | undefined = [];
  private jsonSize = 0;
  private decided = false;
  private parsed: { body: unknown } | undefined;

  constructor(
    private readonly res: Response,
    private readonly maxJsonBytes: number,
  ) {}

  /**
   * The parsed JSON body, when the response was JSON and not larger than the limit. Parsed once
   * the response has ended, however many middlewares read its usage.
   */
  json(): unknown {
    if (this.parsed) return this.parsed.body;
    const body = this.parse();
    if (this.res.writableEnded) this.parsed = { body };
    return body;
  }

  private parse(): unknown {
    const parts = this.jsonParts;
    if (!parts || parts.length === 0 || this.sse) return undefined;
    try {
      const [only] = parts;
      if (parts.length === 1 && typeof only === 'string') return JSON.parse(only);
      return JSON.parse(
        Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : part))).toString(
          'utf8',
        ),
      );
    } catch {
      return undefined;
    }
  }

  observe(chunk: unknown): void {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
    if (!this.decided) this.decide();
    if (this.sse) {
      this.sse.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array));
      return;
    }
    if (!this.jsonParts) return;
    const part = chunk as string | Uint8Array;
    this.jsonSize += part.length;
    if (this.jsonSize > this.maxJsonBytes) this.jsonParts = undefined;
    else this.jsonParts.push(part);
  }

  private decide(): void {
    this.decided = true;
    const type = String(this.res.getHeader('content-type') ?? '').toLowerCase();
    if (type.includes('text/event-stream')) this.sse = new SseUsageParser();
    else if (!type.includes('json')) this.jsonParts = undefined;
  }
}

/** Where a response keeps its capture: in `res.locals`, a plain object, cheap to extend. */
const CAPTURE = Symbol('express-llm-billing.capture');

/**
 * Observes every chunk the handler writes, passing each through unchanged and at once: a
 * stream is never delayed or buffered by billing. One capture per response, however many
 * middlewares ask for it. Only `write` and `end` are wrapped: every own property added to a
 * response costs microseconds.
 */
export function captureResponse(res: Response, maxJsonBytes: number): ResponseCapture {
  const locals = res.locals as unknown as Record<symbol, ResponseCapture | undefined>;
  const existing = locals[CAPTURE];
  if (existing) return existing;
  const capture = new ResponseCapture(res, maxJsonBytes);
  locals[CAPTURE] = capture;
  const write = res.write as (chunk: unknown, encoding: unknown, callback: unknown) => boolean;
  const end = res.end as (chunk: unknown, encoding: unknown, callback: unknown) => Response;
  // Fixed parameters rather than rest arguments: no array per call. Node reads a missing
  // argument and an `undefined` one alike.
  res.write = function writeObserved(this: Response, chunk: unknown, encoding?: unknown, callback?: unknown) {
    capture.observe(chunk);
    return write.call(this, chunk, encoding, callback);
  } as Response['write'];
  res.end = function endObserved(this: Response, chunk?: unknown, encoding?: unknown, callback?: unknown) {
    capture.observe(chunk);
    return end.call(this, chunk, encoding, callback);
  } as Response['end'];
  return capture;
}
