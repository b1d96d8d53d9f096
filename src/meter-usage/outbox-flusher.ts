import type DodoPayments from 'dodopayments';
import { httpStatusOf, withDeadline } from '../dodo-call.js';
import type { Logger } from '../logger.js';
import type {
  BillingStore,
  ClaimedEvent,
  DeadLetter,
  OutboxBatch,
  OutboxEvent,
  Settlement,
} from '../store/types.js';
import { StoreBacklog } from './store-backlog.js';

/** Dodo's ingest rules (the SDK's own docs for `usageEvents.ingest`). */
export const DODO_INGEST = {
  maxEventsPerRequest: 1000,
  maxMetadataKeys: 50,
  maxMetadataKeyChars: 100,
  maxMetadataValueChars: 500,
  /** Events older than this are rejected. */
  maxAgeMs: 60 * 60_000,
  /** Events further in the future than this are rejected. */
  maxFutureMs: 5 * 60_000,
} as const;

/** Re-stamp well before Dodo's one-hour limit, so an event in flight does not cross it. */
const RESTAMP_AFTER_MS = DODO_INGEST.maxAgeMs - 10 * 60_000;

export interface OutboxFlusherOptions {
  store: BillingStore;
  dodo: DodoPayments;
  logger: Logger;
  /** Pause between flushes when the outbox is empty. */
  intervalMs: number;
  /** Events per ingest call (Dodo accepts at most 1000). */
  batchSize: number;
  /** How long a claimed batch is ours before another process may take it over. */
  leaseMs: number;
  /** Deadline of one ingest call. */
  ingestTimeoutMs: number;
  /** Longest pause before retrying a failed batch. */
  maxBackoffMs: number;
  /** Called for each event Dodo refuses as invalid (it is kept in the store's dead letters). */
  onDeadLetter: ((deadLetter: DeadLetter) => void) | undefined;
}

/** Dodo refused the events themselves (not its own failure, nor our credentials). */
function isInvalidEventsError(error: unknown): boolean {
  const status = httpStatusOf(error);
  return status === 400 || status === 422;
}

/** Why an event can never be accepted, by Dodo's metadata rules, or `undefined`. */
export function metadataViolation(event: OutboxEvent): string | undefined {
  const entries = Object.entries(event.metadata);
  if (entries.length > DODO_INGEST.maxMetadataKeys) {
    return `metadata has ${entries.length} keys; Dodo accepts at most ${DODO_INGEST.maxMetadataKeys}`;
  }
  for (const [key, value] of entries) {
    if (key.length > DODO_INGEST.maxMetadataKeyChars) {
      return `metadata key "${key.slice(0, 20)}…" is longer than ${DODO_INGEST.maxMetadataKeyChars} characters`;
    }
    if (!['string', 'number', 'boolean'].includes(typeof value)) {
      return `metadata value of "${key}" is not a string, number or boolean`;
    }
    if (String(value).length > DODO_INGEST.maxMetadataValueChars) {
      return `metadata value of "${key}" is longer than ${DODO_INGEST.maxMetadataValueChars} characters`;
    }
  }
  return undefined;
}

/**
 * An event about to fall outside Dodo's timestamp window (a long outage) is re-stamped to now,
 * its original time kept in `metadata.original_timestamp`, so it is billed rather than refused.
 */
export function restampIfNeeded(event: OutboxEvent, now: number): OutboxEvent {
  const at = Date.parse(event.timestamp);
  if (Number.isFinite(at) && now - at < RESTAMP_AFTER_MS && at - now < DODO_INGEST.maxFutureMs) return event;
  return {
    ...event,
    timestamp: new Date(now).toISOString(),
    metadata: { original_timestamp: event.timestamp, ...event.metadata },
  };
}

/**
 * Delivers the outbox to `dodo.usageEvents.ingest` in the background: batches of up to 1000,
 * each call under its own deadline; a failed batch goes back with exponential backoff, and
 * events Dodo refuses as invalid are isolated (by halving the batch) and dead-lettered with
 * Dodo's reason. Nothing here ever runs on a request's path.
 */
export class OutboxFlusher {
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private lastError: unknown;
  /** Settlements the store could not take: usage that was served is not lost to an outage. */
  private readonly settlements = new StoreBacklog(100_000);
  /**
   * What happened to delivered batches that the store could not record: the ack of a batch
   * Dodo accepted, the nack of one it did not. Once the store is back an accepted batch is not
   * sent again after its lease, nor a failed one left waiting out its lease.
   */
  private readonly outcomes = new StoreBacklog(10_000);

  constructor(private readonly options: OutboxFlusherOptions) {}

  /** The Dodo client this flusher delivers through. */
  get dodo(): DodoPayments {
    return this.options.dodo;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.drainOnce().catch((error) => this.options.logger.error('outbox flush failed', { error }));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Keeps a settlement the store could not take (it was down) and retries it on every flush,
   * so usage that was served is not lost to a store outage. Settlements are idempotent, so a
   * retry of one that did land changes nothing.
   */
  retryLater(settlement: Settlement): void {
    if (!this.settlements.add(() => this.options.store.settle(settlement))) {
      this.options.logger.error('too many settlements waiting for the store: dropping one', {
        customerId: settlement.customerId,
        settlementId: settlement.settlementId,
      });
    }
  }

  /** Runs one drain, or joins the one under way. */
  drainOnce(): Promise<void> {
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  /**
   * Resolves once every queued event has been accepted by Dodo; rejects with the reason when
   * Dodo keeps failing, or after `timeoutMs`.
   */
  async flush(timeoutMs = 30_000): Promise<void> {
    const { store } = this.options;
    const deadline = Date.now() + timeoutMs;
    // A background drain under way may have started before Dodo or the store recovered: its
    // failure says nothing about now, so it is waited out, not joined.
    await this.draining?.catch(() => {});
    for (;;) {
      this.lastError = undefined;
      await this.drainOnce();
      const stats = await store.outboxStats();
      const waitingSettlements = this.settlements.size;
      if (stats.waiting + stats.leased + waitingSettlements === 0) return;
      if (this.lastError !== undefined || Date.now() >= deadline) {
        const why = this.lastError === undefined ? 'timed out' : (this.lastError as Error).message;
        throw new Error(
          `flush: ${stats.waiting + stats.leased} usage events (and ${waitingSettlements} settlements) are not delivered yet: ${why}`,
          { cause: this.lastError },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  private async drain(): Promise<void> {
    for (const backlog of [this.settlements, this.outcomes]) {
      const failure = await backlog.retry();
      if (failure !== undefined) this.lastError = failure;
    }
    const { store, batchSize, leaseMs } = this.options;
    for (;;) {
      const batch = await store.claimOutbox(batchSize, leaseMs);
      if (batch.events.length === 0) return;
      const delivered = await this.deliver(batch);
      if (!delivered || batch.events.length < batchSize) return;
    }
  }

  /** Records an outcome in the store now, or on a later drain if the store is down. */
  private async record(outcome: () => Promise<unknown>): Promise<void> {
    try {
      await outcome();
    } catch (error) {
      this.lastError = error;
      if (!this.outcomes.add(outcome)) {
        // The leases still expire: the events are claimed and sent again then (Dodo dedupes).
        this.options.logger.error('too many batch outcomes waiting for the store: one waits out its lease', {
          error,
        });
      }
    }
  }

  /** Delivers one claimed batch; false when Dodo could not be reached. */
  private async deliver(batch: OutboxBatch): Promise<boolean> {
    const { store, logger } = this.options;
    const now = store.now();
    const invalid: { claimed: ClaimedEvent; reason: string }[] = [];
    const ready: ClaimedEvent[] = [];
    for (const claimed of batch.events) {
      const reason = metadataViolation(claimed.event);
      if (reason) invalid.push({ claimed, reason });
      else ready.push({ ...claimed, event: restampIfNeeded(claimed.event, now) });
    }
    await this.deadLetter(batch, invalid);
    const failed = await this.send(batch, ready);
    if (failed.length === 0) return true;
    const maxAttempts = Math.max(...failed.map((claimed) => claimed.attempts));
    const backoff = this.backoffMs(maxAttempts);
    logger.warn(`Dodo ingest failed; ${failed.length} events retry in ${backoff} ms`, {
      error: this.lastError,
    });
    const ids = failed.map((claimed) => claimed.event.event_id);
    const events = failed.map((claimed) => claimed.event);
    await this.record(() => store.nackOutbox(batch, ids, backoff, events));
    return false;
  }

  /** Sends events; returns those that must be retried (Dodo unreachable or failing). */
  private async send(batch: OutboxBatch, events: ClaimedEvent[]): Promise<ClaimedEvent[]> {
    if (events.length === 0) return [];
    try {
      await this.ingest(events.map((claimed) => claimed.event));
    } catch (error) {
      if (!isInvalidEventsError(error)) {
        this.lastError = error;
        return events;
      }
      if (events.length === 1) {
        await this.deadLetter(batch, [{ claimed: events[0]!, reason: (error as Error).message }]);
        return [];
      }
      // Dodo refuses the whole request for one bad event: halve until it is isolated.
      const middle = Math.ceil(events.length / 2);
      const left = await this.send(batch, events.slice(0, middle));
      const right = await this.send(batch, events.slice(middle));
      return [...left, ...right];
    }
    // Dodo has them: a store that cannot record it now must not make them count as failed.
    const ids = events.map((claimed) => claimed.event.event_id);
    await this.record(() => this.options.store.ackOutbox(batch, ids));
    return [];
  }

  private async ingest(events: OutboxEvent[]): Promise<void> {
    const { dodo, ingestTimeoutMs } = this.options;
    await withDeadline(
      ingestTimeoutMs,
      () => new Error(`Dodo did not answer the ingest call within ${ingestTimeoutMs} ms`),
      (options) => dodo.usageEvents.ingest({ events }, options),
    );
  }

  private async deadLetter(
    batch: OutboxBatch,
    invalid: { claimed: ClaimedEvent; reason: string }[],
  ): Promise<void> {
    if (invalid.length === 0) return;
    const { store, logger, onDeadLetter } = this.options;
    await store.deadLetterOutbox(
      batch,
      invalid.map(({ claimed, reason }) => ({ eventId: claimed.event.event_id, reason })),
    );
    const deadAt = store.now();
    for (const { claimed, reason } of invalid) {
      const deadLetter: DeadLetter = { event: claimed.event, reason, attempts: claimed.attempts, deadAt };
      logger.error('usage event refused by Dodo: dead-lettered', { eventId: claimed.event.event_id, reason });
      try {
        onDeadLetter?.(deadLetter);
      } catch (error) {
        logger.error('onDeadLetter threw', { error });
      }
    }
  }

  /** Exponential backoff with full jitter, capped. */
  private backoffMs(attempts: number): number {
    const ceiling = Math.min(this.options.maxBackoffMs, 500 * 2 ** Math.min(attempts, 20));
    return Math.ceil(ceiling / 2 + (Math.random() * ceiling) / 2);
  }
}
