import type { OutgoingHttpHeaders } from 'node:http';
import type { Response } from 'express';
import { SseUsageParser } from './sse-usage-parser.js';
import { normalizeUsage, type ReportedUsage } from './usage.js';

/** What a body given to `res.json` reported, read from the object as it was sent. */
export interface JsonReport {
  model: unknown;
  usage: ReportedUsage;
}

/** What a response's body is, as far as billing reads it. */
type BodyKind = 'json' | 'sse' | 'other';

/** Event-stream fields a body can open with (the stream's first line). */
const SSE_START = /^(?:data|event|id|retry):|^:/;

/**
 * What passed through a response, as far as billing needs it: the JSON body (up to a limit) or
 * the event stream's usage, and the tail — the moment before the response's last bytes leave,
 * when `meterUsage` writes the settlement.
 */
export class ResponseCapture {
  /** Set once the body shows an event stream. */
  sse: SseUsageParser | undefined;
  /**
   * Runs before the response's last bytes leave (the final `end`, or the event that carries a
   * stream's usage or its `[DONE]`); the rest of the response waits for it. Set by `meterUsage`.
   */
  tail: (() => Promise<void>) | undefined;
  /** Whether the handler has ended the response (its `end` was called), whatever the socket did. */
  handlerEnded = false;
  /**
   * Rewrites the stream's usage event as it leaves, once the tail has run: `undefined` drops it
   * (a usage chunk the client did not ask for), an object replaces it (the usage with its cost).
   */
  rewriteUsageEvent: ((event: Record<string, unknown>) => Record<string, unknown> | undefined) | undefined;
  /**
   * The model and usage of the object the handler gave `res.json`, read before Express
   * serialised it: the body that then passes is not buffered nor parsed again.
   */
  reported: JsonReport | undefined;
  private kind: BodyKind | undefined;
  /** The JSON body's chunks as written (strings are kept as they are: no copy). */
  private jsonParts: (string | Uint8Array)[] | undefined = [];
  private jsonSize = 0;
  private parsed: { body: unknown } | undefined;
  private tailStarted = false;
  private headersAtEnd: { statusCode: number; headers: OutgoingHttpHeaders } | undefined;
  private readonly handlerEndListeners: (() => void)[] = [];

  constructor(
    private readonly res: Response,
    private readonly maxJsonBytes: number,
    private readonly countGenerated: (text: string) => number,
  ) {}

  /**
   * The parsed JSON body, when the response was JSON and not larger than the limit. Parsed once
   * the handler has ended the response, however many middlewares read its usage.
   */
  json(): unknown {
    if (this.parsed) return this.parsed.body;
    const body = this.parse();
    if (this.handlerEnded) this.parsed = { body };
    return body;
  }

  /** Calls `listener` when the handler ends the response (at once if it has). */
  onHandlerEnd(listener: () => void): void {
    if (this.handlerEnded) listener();
    else this.handlerEndListeners.push(listener);
  }

  /**
   * Reads the object a handler gives `res.json`, when what Express sends is exactly its
   * serialisation as far as billing reads it: nothing written before, a plain object whose
   * `usage` is a plain object of counts, no `toJSON` on either and no `json replacer` setting.
   * Anything else is read from the bytes that pass, as before. The usage is copied now, so a
   * handler that changes the object afterwards does not change what it is billed.
   */
  takeJson(body: unknown): boolean {
    if (this.reported || this.kind !== undefined || this.res.headersSent || !isPlainObject(body))
      return false;
    const usage = body.usage;
    if (!isPlainObject(usage) || typeof body.toJSON === 'function' || typeof usage.toJSON === 'function')
      return false;
    if (this.res.app?.get('json replacer') !== undefined) return false;
    const reported = normalizeUsage(usage);
    if (reported) this.reported = { model: body.model, usage: reported };
    return reported !== undefined;
  }

  /** The `res.json` call that took the body failed before sending (a body JSON cannot encode). */
  dropJson(): void {
    this.reported = undefined;
  }

  private parse(): unknown {
    const parts = this.jsonParts;
    if (!parts || parts.length === 0 || this.kind !== 'json') return undefined;
    try {
      const [only] = parts;
      if (parts.length === 1 && typeof only === 'string') return JSON.parse(only);
      // One chunk (what `res.send` writes): decoded where it is, not copied first.
      if (parts.length === 1 && only instanceof Uint8Array)
        return JSON.parse(Buffer.from(only.buffer, only.byteOffset, only.byteLength).toString('utf8'));
      return JSON.parse(
        Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : part))).toString(
          'utf8',
        ),
      );
    } catch {
      return undefined;
    }
  }

  /**
   * Reads a chunk the handler writes. Returns true when the chunk completes what a stream bills
   * (its usage, or its `[DONE]`): the tail runs before it is passed on.
   */
  observe(chunk: unknown): boolean {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return false;
    const part = chunk as string | Uint8Array;
    if (part.length === 0) return false;
    this.kind ??= this.decide(part);
    if (this.kind === 'sse') {
      this.sse ??= new SseUsageParser(this.countGenerated);
      const sse = this.sse;
      const hadUsage = sse.usage !== undefined;
      sse.push(typeof part === 'string' ? part : Buffer.from(part));
      return (!hadUsage && sse.usage !== undefined) || sse.done;
    }
    if (this.kind === 'json' && this.jsonParts) {
      if (this.reported) {
        // Read from the object already: its bytes are not kept.
        this.jsonParts = undefined;
        return false;
      }
      this.jsonSize += part.length;
      if (this.jsonSize > this.maxJsonBytes) this.jsonParts = undefined;
      else this.jsonParts.push(part);
    }
    return false;
  }

  /**
   * The body's kind: from its content type when the handler set it with `setHeader` (or
   * `res.json`, `res.type`), else from its first bytes (a handler that passed its headers to
   * `writeHead` alone leaves nothing `getHeader` can read).
   */
  private decide(first: string | Uint8Array): BodyKind {
    const type = String(this.res.getHeader('content-type') ?? '').toLowerCase();
    if (type.includes('text/event-stream')) return 'sse';
    if (type.includes('json')) return 'json';
    if (type !== '') return 'other';
    const start = (
      typeof first === 'string' ? first.slice(0, 64) : Buffer.from(first.subarray(0, 64)).toString('utf8')
    ).trimStart();
    if (start.startsWith('{') || start.startsWith('[')) return 'json';
    if (SSE_START.test(start)) return 'sse';
    return 'other';
  }

  /**
   * The chunk that completed a stream's usage, with its usage event rewritten by
   * `rewriteUsageEvent`. Only whole events in the chunk are read; a chunk whose usage event is
   * split across writes passes as it is.
   */
  rewrite(chunk: unknown): unknown {
    const rewrite = this.rewriteUsageEvent;
    if (!rewrite || chunk === undefined || chunk === null || typeof chunk === 'function') return chunk;
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    let changed = false;
    const events = text.split('\n\n').flatMap((event) => {
      const match = /^data: ?(\{.*\})$/s.exec(event);
      if (!match) return [event];
      let payload: Record<string, unknown>;
      try {
        payload = JSON.parse(match[1]!) as Record<string, unknown>;
      } catch {
        return [event];
      }
      const isUsageChunk =
        Array.isArray(payload.choices) &&
        payload.choices.length === 0 &&
        typeof payload.usage === 'object' &&
        payload.usage !== null;
      if (!isUsageChunk) return [event];
      changed = true;
      const replaced = rewrite(payload);
      return replaced ? [`data: ${JSON.stringify(replaced)}`] : [];
    });
    return changed ? events.join('\n\n') : chunk;
  }

  /** Keeps the headers the handler's answer ends with, while its end waits for the tail. */
  rememberHeaders(): void {
    this.headersAtEnd = { statusCode: this.res.statusCode, headers: this.res.getHeaders() };
  }

  /** Puts back the headers the handler's answer ended with (see `rememberHeaders`). */
  restoreHeaders(): void {
    const kept = this.headersAtEnd;
    if (!kept || this.res.headersSent) return;
    this.res.statusCode = kept.statusCode;
    for (const name of this.res.getHeaderNames()) if (!(name in kept.headers)) this.res.removeHeader(name);
    for (const [name, value] of Object.entries(kept.headers))
      if (value !== undefined && this.res.getHeader(name) !== value) this.res.setHeader(name, value);
  }

  /** Marks the handler's end, once. */
  handlerEnd(): void {
    if (this.handlerEnded) return;
    this.handlerEnded = true;
    for (const listener of this.handlerEndListeners.splice(0)) listener();
  }

  /** Runs the tail once; later calls wait for the same run. */
  runTail(): Promise<void> {
    if (this.tailStarted || !this.tail) return Promise.resolve();
    this.tailStarted = true;
    return this.tail();
  }
}

/** What Node throws when a handler sets a header of an answer already sent. */
function answeredTwice(): Error {
  return Object.assign(new Error('Cannot set headers after they are sent to the client'), {
    code: 'ERR_HTTP_HEADERS_SENT',
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** Where a response keeps its capture: in `res.locals`, a plain object, cheap to extend. */
const CAPTURE = Symbol('express-llm-billing.capture');

type Write = (chunk: unknown, encoding: unknown, callback: unknown) => boolean;
type End = (chunk: unknown, encoding: unknown, callback: unknown) => Response;
type Json = (body: unknown) => Response;

/**
 * Observes every chunk the handler writes, passing each through unchanged and at once — until
 * the tail: the chunk that completes a stream's usage (or its `[DONE]`), or the response's
 * final `end`, waits for the tail (the settlement) to be written first, and what the handler
 * writes meanwhile follows in order. One capture per response, however many middlewares ask.
 * Only `write`, `end` and `json` are wrapped: every own property added to a response costs
 * microseconds.
 */
export function captureResponse(
  res: Response,
  maxJsonBytes: number,
  countGenerated: (text: string) => number = (text) => Buffer.byteLength(text, 'utf8'),
): ResponseCapture {
  const locals = res.locals as unknown as Record<symbol, ResponseCapture | undefined>;
  const existing = locals[CAPTURE];
  if (existing) return existing;
  const capture = new ResponseCapture(res, maxJsonBytes, countGenerated);
  locals[CAPTURE] = capture;
  const write = res.write as Write;
  const end = res.end as End;
  const json = res.json as Json;
  /** Writes waiting for the tail, in order; `undefined` when nothing waits. */
  let held: (() => void)[] | undefined;
  const holdUntilTail = (then: () => void) => {
    held = [then];
    capture.runTail().then(release, release);
  };
  const release = () => {
    const waiting = held ?? [];
    held = undefined;
    for (const resume of waiting) resume();
  };
  // Fixed parameters rather than rest arguments: no array per call. Node reads a missing
  // argument and an `undefined` one alike.
  res.write = function writeObserved(this: Response, chunk: unknown, encoding?: unknown, callback?: unknown) {
    if (held) {
      held.push(() => write.call(this, chunk, encoding, callback));
      return true;
    }
    if (capture.observe(chunk) && capture.tail) {
      holdUntilTail(() => write.call(this, capture.rewrite(chunk), encoding, callback));
      return true;
    }
    return write.call(this, chunk, encoding, callback);
  } as Response['write'];
  res.json = function jsonObserved(this: Response, body?: unknown, legacyBody?: unknown) {
    // Express 4's deprecated `res.json(status, body)`: read from the bytes then.
    if (legacyBody !== undefined)
      return (json as (...args: unknown[]) => Response).call(this, body, legacyBody);
    const taken = capture.takeJson(body);
    try {
      return json.call(this, body);
    } catch (error) {
      if (taken) capture.dropJson();
      throw error;
    }
  } as Response['json'];
  res.end = function endObserved(this: Response, chunk?: unknown, encoding?: unknown, callback?: unknown) {
    if (held) {
      if (capture.handlerEnded) {
        // A second answer while the first waits for its settlement. Without the wait the first
        // would be out, and Express would refuse this one at its first header, synchronously:
        // refused the same way, with the headers it set put back, so that the first answer
        // leaves as it was (a Content-Length of this body would corrupt it).
        capture.restoreHeaders();
        throw answeredTwice();
      }
      held.push(() => {
        end.call(this, chunk, encoding, callback);
      });
      capture.handlerEnd();
      return this;
    }
    capture.observe(chunk);
    capture.handlerEnd();
    if (capture.tail) {
      capture.rememberHeaders();
      holdUntilTail(() => {
        end.call(this, chunk, encoding, callback);
      });
      return this;
    }
    return end.call(this, chunk, encoding, callback);
  } as Response['end'];
  return capture;
}
