import type DodoPayments from 'dodopayments';
import { httpStatusOf, withDeadline } from '../dodo-call.js';
import type { Logger } from '../logger.js';
import type { BillingObserver } from '../metrics/observer.js';
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
  /** Told each ingest call's duration and outcome, and each dead letter. */
  metrics?: Pick<BillingObserver, 'dodoCall' | 'deadLettered'> | undefined;
}

/**
 * Statuses that say nothing about the events themselves: our credentials or permissions (401,
 * 403: every event would be refused alike), a timeout (408), a conflict (409) and rate limiting
 * (429), all worth a retry. Any other 4xx refuses what was sent, for good: Dodo fails a whole
 * request for one bad event (an unknown customer, a duplicate id, a timestamp out of its window:
 * https://docs.dodopayments.com/features/usage-based-billing/event-ingestion — "Don't retry 4xx
 * errors"), and not always with the 400/422 its API reference lists.
 */
const NOT_THE_EVENTS = new Set([401, 403, 408, 409, 429]);

/** Dodo refused the events themselves (not its own failure, nor our credentials). */
function refusesEvents(error: unknown): boolean {
  const status = httpStatusOf(error);
  return status !== undefined && status >= 400 && status < 500 && !NOT_THE_EVENTS.has(status);
}

/** Dodo refused our credentials: no event is at fault, and none may be dead-lettered. */
function refusesCredentials(error: unknown): boolean {
  const status = httpStatusOf(error);
  return status === 401 || status === 403;
}

/**
 * How recent an accepted ingest must be for a refusal to count as the events' own fault: Dodo
 * took events then, so its endpoint and our credentials work.
 */
const EVIDENCE_MS = 15 * 60_000;

/**
 * What sending some events came to: events to retry, and events Dodo refused each on its own
 * (`proven` when Dodo had accepted an ingest shortly before refusing it).
 */
interface Sent {
  retry: ClaimedEvent[];
  refused: { claimed: ClaimedEvent; reason: string; proven: boolean }[];
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
 * events Dodo refuses for good (any 4xx but 401/403/408/409/429) are isolated by halving the
 * batch and dead-lettered with Dodo's reason, while the good events of their batch are
 * delivered. Nothing here ever runs on a request's path.
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
  /** Whether a refusal of our credentials was logged since the last accepted ingest. */
  private credentialsNamed = false;
  /** Whether refusals kept for lack of an accepted ingest were logged since the last accepted one. */
  private unprovenNamed = false;
  /** When Dodo last accepted an ingest (real time): the evidence that its endpoint takes events. */
  private lastAcceptedAt: number | undefined;

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
    const sent = await this.send(batch, ready);
    const failed = [...sent.retry];
    // A refusal counts as the event's own fault only when Dodo had accepted an ingest shortly
    // before it: then its endpoint and our credentials work. Otherwise (a wrong base URL answering
    // 404, say) dead-lettering could lose every event: they wait for an accepted ingest to tell.
    const proven = sent.refused.filter((refusal) => refusal.proven);
    const unproven = sent.refused.filter((refusal) => !refusal.proven);
    await this.deadLetter(batch, proven);
    if (unproven.length > 0) {
      if (!this.unprovenNamed) {
        this.unprovenNamed = true;
        logger.error(
          `Dodo refused ${unproven.length} usage events (${unproven[0]?.reason}) and had accepted none in the ${EVIDENCE_MS / 60_000} minutes before: they are kept and retried, not dead-lettered. Check the Dodo client's base URL and environment.`,
        );
      }
      failed.push(...unproven.map(({ claimed }) => claimed));
    }
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

  /** Whether Dodo accepted an ingest lately: then a refusal is about the events refused. */
  private acceptsEvents(): boolean {
    return this.lastAcceptedAt !== undefined && Date.now() - this.lastAcceptedAt <= EVIDENCE_MS;
  }

  /**
   * Sends events. A refusal of the events themselves (any 4xx but 401/403/408/409/429) fails
   * the whole request for one bad event, so the batch is halved until each refused event stands
   * alone, and the good ones of its batch are delivered meanwhile.
   */
  private async send(batch: OutboxBatch, events: ClaimedEvent[]): Promise<Sent> {
    if (events.length === 0) return { retry: [], refused: [] };
    try {
      await this.ingest(events.map((claimed) => claimed.event));
    } catch (error) {
      if (refusesCredentials(error)) this.nameCredentials(error);
      if (!refusesEvents(error)) {
        this.lastError = error;
        return { retry: events, refused: [] };
      }
      if (events.length === 1) {
        const reason = (error as Error).message;
        return { retry: [], refused: [{ claimed: events[0]!, reason, proven: this.acceptsEvents() }] };
      }
      const middle = Math.ceil(events.length / 2);
      const left = await this.send(batch, events.slice(0, middle));
      const right = await this.send(batch, events.slice(middle));
      return { retry: [...left.retry, ...right.retry], refused: [...left.refused, ...right.refused] };
    }
    this.credentialsNamed = false;
    this.unprovenNamed = false;
    this.lastAcceptedAt = Date.now();
    // Dodo has them: a store that cannot record it now must not make them count as failed.
    const ids = events.map((claimed) => claimed.event.event_id);
    await this.record(() => this.options.store.ackOutbox(batch, ids));
    return { retry: [], refused: [] };
  }

  /** Names a refusal of our credentials once (until an ingest is accepted), with the fix. */
  private nameCredentials(error: unknown): void {
    if (this.credentialsNamed) return;
    this.credentialsNamed = true;
    this.options.logger.error(
      `Dodo refused the usage ingest with ${httpStatusOf(error)}: the Dodo client's API key is wrong, lacks the permission, or belongs to the other mode (test or live). Usage events are kept and retried; none is dropped.`,
      { error },
    );
  }

  private async ingest(events: OutboxEvent[]): Promise<void> {
    const { dodo, ingestTimeoutMs } = this.options;
    await withDeadline(
      ingestTimeoutMs,
      () => new Error(`Dodo did not answer the ingest call within ${ingestTimeoutMs} ms`),
      (options) => dodo.usageEvents.ingest({ events }, options),
      { operation: 'usageEvents.ingest', observer: this.options.metrics },
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
    this.options.metrics?.deadLettered?.(invalid.length);
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
