import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

/** One server-sent event. */
export interface SseEvent {
  event?: string;
  data: string;
  /** Generated tokens (reasoning included) this event waits for: they set its pace. */
  tokens?: number;
  /** It carries one token of the visible reply. */
  visible?: boolean;
}

export interface SseControl {
  /** Aborted when the client goes away or the mock closes: every pending timer is dropped. */
  signal: AbortSignal;
  /** Generation speed; `Infinity` sends every event at once. */
  tokensPerSecond: number;
  /** Destroy the socket right after this many events (a connection lost mid-stream). */
  cutAfterEvents?: number;
  /** Called after each event is written. */
  onEvent(event: SseEvent): void;
  /** Called just before the socket is destroyed on purpose. */
  onCut(): void;
  headers: Readonly<Record<string, string>>;
}

export type SseOutcome = 'completed' | 'cut' | 'aborted';

function format({ event, data }: SseEvent): string {
  return `${event === undefined ? '' : `event: ${event}\n`}data: ${data}\n\n`;
}

/**
 * Writes `events` as `text/event-stream`, pacing token-carrying events at `tokensPerSecond`.
 * Waits go through the abort signal, so a client that disconnects stops the generation at once
 * instead of leaving timers running until the reply would have ended.
 */
export async function writeSse(
  res: ServerResponse,
  events: Iterable<SseEvent>,
  control: SseControl,
): Promise<SseOutcome> {
  const { signal, tokensPerSecond, cutAfterEvents } = control;
  res.writeHead(200, {
    ...control.headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  res.flushHeaders();

  const msPerToken = Number.isFinite(tokensPerSecond) ? 1000 / tokensPerSecond : 0;
  const start = performance.now();
  const cutNow = (sent: number) => cutAfterEvents !== undefined && sent >= cutAfterEvents;
  let tokensDue = 0;
  let sent = 0;
  let lastWrite = Promise.resolve();
  try {
    for (const event of events) {
      if (cutNow(sent)) break;
      tokensDue += event.tokens ?? 0;
      // Each token is due at a fixed offset from the start, so timer granularity never slows
      // the average rate: several tokens go out together when their times have passed.
      const wait = start + tokensDue * msPerToken - performance.now();
      if (wait >= 1) await sleep(wait, undefined, { signal });
      if (signal.aborted) return 'aborted';
      // The write's callback runs once Node has handed the bytes to the kernel, which still
      // sends them before the close: a cut then lands exactly after the last event written.
      lastWrite = new Promise((resolve) => res.write(format(event), () => resolve()));
      sent += 1;
      control.onEvent(event);
    }
  } catch (error) {
    if (signal.aborted) return 'aborted';
    throw error;
  }
  if (cutNow(sent)) {
    await lastWrite;
    control.onCut();
    res.socket?.destroy();
    return 'cut';
  }
  res.end();
  return 'completed';
}

/** Waits `ms` (nothing when under 1 ms); resolves `false` when aborted first. */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  if (!(ms >= 1)) return true;
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}
