import { StoreError } from '../errors.js';
import type { RedisConnection } from './redis-client.js';

/**
 * The undo of one write, for when the call that sent it is abandoned (its deadline passed, or it
 * failed without a reply saying what happened). Whether the write ran, runs later or never
 * runs is then unknown: Redis may be stalled with the command in its socket, ioredis may resend
 * it after a reconnect. The undo is sent on the same client, so it is queued behind the write
 * on the same connection (or in the client's offline queue behind it), and Redis runs commands of
 * one connection in order: the undo runs after the write, whenever that is.
 */
export interface Undo {
  /** Sends the undo straight on the client (no deadline, no readiness check: it must queue). */
  send(): Promise<unknown>;
  /**
   * `idempotent`: the undo only removes what this very write made (a reservation with its own
   * expiry and amount, events under its own lease id), so it is harmless before the write, after
   * it, or twice. It is sent at once, again once the write settles, and retried after a
   * reconnect while it fails, until `until`.
   *
   * `once`: the undo is an opposite (a rate limiter's reward), wrong if the write never ran. It
   * is sent once, at once, and only when the write is still pending: then it is queued behind a
   * write that will run, or be dropped together with it.
   */
  kind: 'idempotent' | 'once';
  /** When the write's effect lapses on its own (store clock): no undo is needed after it. */
  until: number;
}

/** The wait for a client's first connection. */
interface FirstConnection {
  ready: Promise<void>;
  /** True until it connected, failed or was cancelled. */
  waiting: boolean;
  cancel(): void;
}

/** Undos kept for a retry after a reconnect, at most; beyond, the oldest lapse on their own. */
const MAX_UNDOS_WAITING = 10_000;

/** One call under way: the writes it sent, so that they can be undone if it is abandoned. */
export class Attempt {
  private abandoned = false;
  private readonly sent: { write: Promise<unknown>; settled: boolean; undo: Undo }[] = [];

  /**
   * Sends a write that must not take effect once this call is abandoned. After abandonment
   * nothing more is sent: a multi-step call stops at its next write.
   */
  write<T>(send: () => Promise<T>, undo: Undo): Promise<T> {
    if (this.abandoned)
      return Promise.reject(new StoreError('The call was abandoned; nothing more is sent.'));
    const write = send();
    const record = { write: write as Promise<unknown>, settled: false, undo };
    const settle = () => {
      record.settled = true;
    };
    write.then(settle, settle);
    this.sent.push(record);
    return write;
  }

  /** Marks the call abandoned and hands every write it sent to `undos`. */
  abandon(undos: UndoQueue): void {
    if (this.abandoned) return;
    this.abandoned = true;
    for (const { write, settled, undo } of this.sent) undos.undo(write, settled, undo);
  }
}

/**
 * Sends undos and retries the idempotent ones that failed (the connection was down) once the
 * client is ready again, after it has resent what it resends (ioredis: the commands it had not
 * had answers to; both clients: their offline queue).
 */
export class UndoQueue {
  private readonly waiting: Undo[] = [];
  private stopListening: (() => void) | undefined;

  constructor(
    private readonly connection: RedisConnection,
    private readonly now: () => number,
  ) {}

  undo(write: Promise<unknown>, writeSettled: boolean, undo: Undo): void {
    if (undo.kind === 'once') {
      if (!writeSettled) undo.send().catch(() => {});
      return;
    }
    this.send(undo);
    // Once the write has settled, whatever it did is done: undoing again now is ordered after it
    // by causality, whatever path the write took (a cluster redirection, a resend).
    const again = () => this.send(undo);
    write.then(again, again);
  }

  private send(undo: Undo): void {
    if (undo.until <= this.now()) return;
    undo.send().catch((error: unknown) => {
      // A reply means Redis ran it (and refused it): retrying would not change that.
      if (this.connection.isReplyError(error)) return;
      this.retryWhenReady(undo);
    });
  }

  private retryWhenReady(undo: Undo): void {
    if (this.waiting.length >= MAX_UNDOS_WAITING) this.waiting.shift();
    this.waiting.push(undo);
    if (this.stopListening) return;
    this.stopListening = this.connection.afterReconnect(this.onReconnect);
  }

  private readonly onReconnect = (): void => {
    this.stopListening = undefined;
    for (const undo of this.waiting.splice(0)) this.send(undo);
  };

  close(): void {
    this.stopListening?.();
    this.stopListening = undefined;
    this.waiting.length = 0;
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Every call RedisStore (and its rate limiters) makes: under a deadline, after the client's
 * first connection (waited for, within the deadline), with any failure a `StoreError`, and the
 * writes of a call abandoned at its deadline undone (see {@link Undo}).
 */
export class RedisCalls {
  /** Whether the client has connected once: after that, not ready means Redis is down. */
  private wasReady: boolean;
  private readonly undos: UndoQueue;

  constructor(
    readonly connection: RedisConnection,
    readonly commandTimeoutMs: number,
    now: () => number,
  ) {
    this.undos = new UndoQueue(connection, now);
    this.wasReady = connection.isReady();
    if (!this.wasReady) {
      connection.onceReady(() => {
        this.wasReady = true;
      });
    }
  }

  /**
   * Runs one operation under one deadline, which covers waiting for the client's first
   * connection. A client that is not connected fails at once (the client would otherwise park
   * the call in its offline queue), except while it makes its first connection. Any failure becomes
   * a `StoreError` carrying the cause, and abandons the attempt: the writes it sent through
   * `attempt.write` are undone.
   */
  run<T>(operation: string, work: (attempt: Attempt) => Promise<T>): Promise<T> {
    // One promise and one timer a call, settled once: the hot path makes five calls a request.
    return new Promise<T>((resolve, reject) => {
      const attempt = new Attempt();
      let connecting: FirstConnection | undefined;
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        // Synchronously, before anything else can be sent on the connection: each undo is
        // queued right behind what the call sent.
        attempt.abandon(this.undos);
        const what = connecting?.waiting ? 'did not connect' : `did not answer ${operation}`;
        const hint = connecting?.waiting ? this.connection.connectHint() : '';
        connecting?.cancel();
        reject(new StoreError(`Redis ${what} within ${this.commandTimeoutMs} ms${hint}.`));
      }, this.commandTimeoutMs);
      timer.unref();
      const succeed = (value: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      };
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        attempt.abandon(this.undos);
        reject(
          error instanceof StoreError
            ? error
            : new StoreError(`Redis failed during ${operation}: ${describeError(error)}`, { cause: error }),
        );
      };
      const start = () => {
        if (settled) return;
        this.connection.coalesceWritesThisTurn();
        let pending: Promise<T>;
        try {
          pending = work(attempt);
        } catch (error) {
          fail(error);
          return;
        }
        pending.then(succeed, fail);
      };
      if (this.connection.isReady()) {
        start();
        return;
      }
      connecting = this.firstConnection(operation);
      connecting.ready.then(start, fail);
    });
  }

  /**
   * At startup the client is still connecting: calls wait for it (within their deadline). Once
   * it has been ready, a client that is not ready means Redis is down, and calls fail at once.
   */
  private firstConnection(operation: string): FirstConnection {
    const client = this.connection;
    if (this.wasReady || !client.isStarting()) {
      return {
        ready: Promise.reject(
          new StoreError(`Redis is not ready (${client.describeState()}); ${operation} was not attempted.`),
        ),
        waiting: false,
        cancel: () => {},
      };
    }
    const connection: FirstConnection = { ready: Promise.resolve(), waiting: true, cancel: () => {} };
    connection.ready = new Promise<void>((resolve, reject) => {
      let stopReady = () => {};
      let stopFailure = () => {};
      const done = () => {
        connection.waiting = false;
        stopReady();
        stopFailure();
      };
      const onReady = () => {
        done();
        resolve();
      };
      // A refused or dropped first connection fails the call now, not at the deadline.
      const onFailure = (error?: unknown) => {
        done();
        reject(new StoreError(`Redis is unreachable; ${operation} was not attempted.`, { cause: error }));
      };
      connection.cancel = () => {
        done();
        reject(new StoreError(`${operation} was not attempted.`));
      };
      stopReady = client.onceReady(onReady);
      stopFailure = client.onceFailure(onFailure);
    });
    // Cancelled at the deadline, when nobody listens any more.
    connection.ready.catch(() => {});
    return connection;
  }

  close(): void {
    this.undos.close();
  }
}
