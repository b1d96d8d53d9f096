import type { Response } from 'express';
import { SseUsageParser } from './sse-usage-parser.js';

/** What passed through a response, as far as billing needs it. */
export class ResponseCapture {
  /** Set once the first chunk shows an event stream. */
  sse: SseUsageParser | undefined;
  private jsonChunks: Buffer[] | undefined = [];
  private jsonBytes = 0;
  private decided = false;
  /** The object given to `res.json()`: read as it is, instead of re-parsing what it became. */
  private jsonBody: { value: unknown } | undefined;

  constructor(
    private readonly res: Response,
    private readonly maxJsonBytes: number,
  ) {}

  /** The parsed JSON body, when the response was JSON and not larger than the limit. */
  json(): unknown {
    if (this.jsonBody) return this.jsonBody.value;
    if (!this.jsonChunks || this.sse) return undefined;
    try {
      return JSON.parse(Buffer.concat(this.jsonChunks, this.jsonBytes).toString('utf8'));
    } catch {
      return undefined;
    }
  }

  observeJson(body: unknown): void {
    this.jsonBody = { value: body };
    this.jsonChunks = undefined;
  }

  observe(chunk: unknown, encoding: unknown): void {
    if (chunk === undefined || chunk === null || typeof chunk === 'function' || this.jsonBody) return;
    if (!this.decided) this.decide();
    if (this.sse) {
      this.sse.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array));
      return;
    }
    if (!this.jsonChunks) return;
    const buffer =
      typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : Buffer.from(chunk as Uint8Array);
    this.jsonBytes += buffer.length;
    if (this.jsonBytes > this.maxJsonBytes) this.jsonChunks = undefined;
    else this.jsonChunks.push(buffer);
  }

  private decide(): void {
    this.decided = true;
    const type = String(this.res.getHeader('content-type') ?? '').toLowerCase();
    if (type.includes('text/event-stream')) this.sse = new SseUsageParser();
    else if (!type.includes('json')) this.jsonChunks = undefined;
  }
}

/** Where a response keeps its capture: a property, as a WeakMap entry per response burdens the GC. */
const CAPTURE = Symbol('express-llm-billing.capture');
type CapturedResponse = Response & { [CAPTURE]?: ResponseCapture };

/**
 * Observes every chunk the handler writes, passing each through unchanged and at once: a
 * stream is never delayed or buffered by billing. One capture per response, however many
 * middlewares ask for it.
 */
export function captureResponse(res: Response, maxJsonBytes: number): ResponseCapture {
  const existing = (res as CapturedResponse)[CAPTURE];
  if (existing) return existing;
  const capture = new ResponseCapture(res, maxJsonBytes);
  (res as CapturedResponse)[CAPTURE] = capture;
  const json = res.json;
  const write = res.write;
  const end = res.end;
  res.json = function jsonObserved(this: Response, body: unknown) {
    capture.observeJson(body);
    return json.call(this, body);
  };
  res.write = function writeObserved(this: Response, chunk: unknown, ...rest: unknown[]) {
    capture.observe(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Response['write'];
  res.end = function endObserved(this: Response, chunk?: unknown, ...rest: unknown[]) {
    capture.observe(chunk, rest[0]);
    return (end as (...args: unknown[]) => Response).call(this, chunk, ...rest);
  } as Response['end'];
  return capture;
}
