import { randomBytes } from 'node:crypto';
import { invalid } from './errors.js';

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * What every part of the emulator shares: the clock, id generation, and the bookkeeping of
 * asynchronous work (meter deductions, webhook deliveries) so that `settle()` can wait for it
 * and `close()` can stop it without leaving a timer behind.
 */
export class Runtime {
  readonly businessId: string;
  readonly brandId = 'bra_emulator';
  readonly now: () => number;
  private readonly timers = new Set<NodeJS.Timeout>();
  private pending = 0;
  private idleWaiters: Array<() => void> = [];
  private closedFlag = false;

  constructor(businessId: string, now: () => number) {
    this.businessId = businessId;
    this.now = now;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** A Dodo-looking id: prefix, underscore, 21 random alphanumerics (`cus_TV52uJWWXt2yIoBBxpjaa`). */
  id(prefix: string): string {
    const bytes = randomBytes(21);
    let text = '';
    for (const byte of bytes) text += ID_ALPHABET[byte % ID_ALPHABET.length];
    return `${prefix}_${text}`;
  }

  /** The emulator's current time (or `ms`) as an ISO-8601 string. */
  iso(ms: number = this.now()): string {
    return new Date(ms).toISOString();
  }

  /** Runs `task` after `ms`, counted as pending work until it settles. Ignored once closed. */
  later(ms: number, task: () => unknown): void {
    if (this.closedFlag) return;
    this.pending += 1;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      Promise.resolve()
        .then(task)
        .catch(() => undefined)
        .finally(() => this.finish());
    }, ms);
    this.timers.add(timer);
  }

  /** Counts `promise` as pending work until it settles. */
  track<T>(promise: Promise<T>): Promise<T> {
    this.pending += 1;
    return promise.finally(() => this.finish());
  }

  private finish(): void {
    this.pending = Math.max(0, this.pending - 1);
    if (this.pending > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once no asynchronous work is pending (new work started meanwhile is waited for too). */
  async settle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending > 0) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(
          `settle(): ${this.pending} meter deduction(s) or webhook delivery(ies) still pending after ${timeoutMs} ms.`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      // Let work scheduled by the work that just finished register itself before re-checking.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Stops every timer; later work is refused. */
  close(): void {
    this.closedFlag = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.pending = 0;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }
}

/** Dodo's page-number pagination: `page_size` (default 10, max 100), zero-based `page_number`. */
export function paginate<T>(items: readonly T[], query: URLSearchParams): { items: T[] } {
  const size = integerParam(query, 'page_size', 10);
  const page = integerParam(query, 'page_number', 0);
  if (size < 1 || size > 100) throw invalid(`page_size must be between 1 and 100 (got ${size}).`);
  if (page < 0) throw invalid(`page_number must be >= 0 (got ${page}).`);
  return { items: items.slice(page * size, page * size + size) };
}

function integerParam(query: URLSearchParams, name: string, fallback: number): number {
  const text = query.get(name);
  if (text === null || text === '') return fallback;
  if (!/^-?\d+$/.test(text)) throw invalid(`${name} must be an integer (got ${JSON.stringify(text)}).`);
  return Number(text);
}

/** Reads an optional ISO-8601 query parameter as ms since the epoch. */
export function dateParam(query: URLSearchParams, name: string): number | undefined {
  const text = query.get(name);
  if (text === null || text === '') return undefined;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw invalid(`${name} must be an ISO-8601 date-time (got ${JSON.stringify(text)}).`);
  return ms;
}
