import type { Cluster, Redis } from 'ioredis';
import { StoreError } from '../errors.js';

/**
 * The undo of one write, for when the call that sent it is abandoned (its deadline passed, or it
 * failed without a reply saying what happened). Whether the write ran, runs later or never
 * runs is then unknown: Redis may be stalled with the command in its socket, ioredis may resend
 * it after a reconnect. The undo is sent on the same client, so it is queued behind the write
 * on the same connection (or in the offline queue behind it), and Redis runs commands of one
 * connection in order: the undo runs after the write, whenever that is.
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
 * client is ready again, after ioredis has resent the commands it had not had answers to.
 */
export class UndoQueue {
  private readonly waiting: Undo[] = [];
  private listening = false;

  constructor(
    private readonly client: Redis | Cluster,
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
      if (isReplyError(error)) return;
      this.retryWhenReady(undo);
    });
  }

  private retryWhenReady(undo: Undo): void {
    if (this.waiting.length >= MAX_UNDOS_WAITING) this.waiting.shift();
    this.waiting.push(undo);
    if (this.listening) return;
    this.listening = true;
    this.client.once('ready', this.onReady);
  }

  private readonly onReady = (): void => {
    this.listening = false;
    // `ready` is emitted before ioredis resends the commands of the lost connection and its
    // offline queue: retry after them.
    setImmediate(() => {
      for (const undo of this.waiting.splice(0)) this.send(undo);
    });
  };

  close(): void {
    this.client.off('ready', this.onReady);
    this.listening = false;
    this.waiting.length = 0;
  }
}

function isReplyError(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError';
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
    private readonly client: Redis | Cluster,
    readonly commandTimeoutMs: number,
    now: () => number,
  ) {
    this.undos = new UndoQueue(client, now);
    // A `lazyConnect` client connects on its first command, which `run` never sends while the
    // client is not ready: start connecting now instead (failures surface as its error events).
    if (client.status === 'wait') client.connect().catch(() => {});
    this.wasReady = client.status === 'ready';
    if (!this.wasReady) {
      client.once('ready', () => {
        this.wasReady = true;
      });
    }
  }

  /**
   * Runs one operation under one deadline, which covers waiting for the client's first
   * connection. A client that is not connected fails at once (ioredis would otherwise park the
   * call in its offline queue), except while it makes its first connection. Any failure becomes
   * a `StoreError` carrying the cause, and abandons the attempt: the writes it sent through
   * `attempt.write` are undone.
   */
  async run<T>(operation: string, work: (attempt: Attempt) => Promise<T>): Promise<T> {
    const attempt = new Attempt();
    let timer: NodeJS.Timeout | undefined;
    let connecting: FirstConnection | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // Synchronously, before anything else can be sent on the connection: each undo is
        // queued right behind what the call sent.
        attempt.abandon(this.undos);
        const what = connecting?.waiting ? 'did not connect' : `did not answer ${operation}`;
        connecting?.cancel();
        reject(new StoreError(`Redis ${what} within ${this.commandTimeoutMs} ms.`));
      }, this.commandTimeoutMs);
      timer.unref();
    });
    const call = async () => {
      if (this.client.status !== 'ready') {
        connecting = this.firstConnection(operation);
        await connecting.ready;
      }
      return work(attempt);
    };
    try {
      return await Promise.race([call(), deadline]);
    } catch (error) {
      attempt.abandon(this.undos);
      if (error instanceof StoreError) throw error;
      throw new StoreError(`Redis failed during ${operation}: ${describeError(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * At startup the client is still connecting: calls wait for it (within their deadline). Once
   * it has been ready, a client that is not ready means Redis is down, and calls fail at once.
   */
  private firstConnection(operation: string): FirstConnection {
    const { status } = this.client;
    const starting = !this.wasReady && (status === 'wait' || status === 'connecting' || status === 'connect');
    if (!starting) {
      return {
        ready: Promise.reject(
          new StoreError(`Redis is not ready (status "${status}"); ${operation} was not attempted.`),
        ),
        waiting: false,
        cancel: () => {},
      };
    }
    const client = this.client;
    const connection: FirstConnection = { ready: Promise.resolve(), waiting: true, cancel: () => {} };
    connection.ready = new Promise<void>((resolve, reject) => {
      const done = () => {
        connection.waiting = false;
        client.off('ready', onReady);
        client.off('error', onFailure);
        client.off('end', onFailure);
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
      client.once('ready', onReady);
      client.once('error', onFailure);
      client.once('end', onFailure);
    });
    // Cancelled at the deadline, when nobody listens any more.
    connection.ready.catch(() => {});
    return connection;
  }

  close(): void {
    this.undos.close();
  }
}
