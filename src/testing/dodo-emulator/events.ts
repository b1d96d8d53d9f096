import type { DodoPayments } from 'dodopayments';
import { describe } from './amounts.js';
import type { Catalog } from './catalog.js';
import { invalid, notFound } from './errors.js';
import type { Runtime } from './runtime.js';

/** An ingested usage event, as `GET /events` returns it. */
export type StoredEvent = DodoPayments.Event;

/** Filter of `GET /events` and `emulator.ingestedEvents()`. */
export interface EventFilter {
  customerId?: string;
  eventName?: string;
  /** Events at or after this time (ms or ISO string). */
  start?: number | string;
  /** Events at or before this time (ms or ISO string). */
  end?: number | string;
}

// Dodo's documented ingest rules (see the SDK's `usageEvents.ingest` doc comment).
const MAX_EVENTS = 1000;
const MAX_AGE_MS = 60 * 60 * 1000;
const MAX_AHEAD_MS = 5 * 60 * 1000;
const MAX_METADATA_KEYS = 50;
const MAX_KEY_LENGTH = 100;
const MAX_VALUE_LENGTH = 500;

/** Usage events: validation with Dodo's rules, idempotent storage, queries. */
export class EventStore {
  private readonly events = new Map<string, StoredEvent>();

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
  ) {}

  /**
   * Validates a whole ingest request (any broken rule fails all of it, with 422) and stores the
   * events whose ids are new. Returns only those; ids already ingested are ignored.
   */
  ingest(body: unknown): StoredEvent[] {
    if (body === null || typeof body !== 'object' || !Array.isArray((body as { events?: unknown }).events)) {
      throw invalid('events is required and must be an array of events.');
    }
    const events = (body as { events: unknown[] }).events;
    if (events.length < 1 || events.length > MAX_EVENTS) {
      throw invalid(`events must hold between 1 and ${MAX_EVENTS} events (got ${events.length}).`);
    }
    const now = this.runtime.now();
    const seen = new Set<string>();
    const checked = events.map((raw, index) => {
      const event = this.check(raw, index, now);
      if (seen.has(event.event_id)) {
        throw invalid(
          `events[${index}].event_id ${JSON.stringify(event.event_id)} appears more than once in this request.`,
        );
      }
      seen.add(event.event_id);
      return event;
    });
    const fresh = checked.filter((event) => !this.events.has(event.event_id));
    for (const event of fresh) this.events.set(event.event_id, event);
    return fresh;
  }

  private check(raw: unknown, index: number, now: number): StoredEvent {
    const at = `events[${index}]`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
      throw invalid(`${at} must be an object.`);
    const event = raw as Record<string, unknown>;
    for (const field of ['event_id', 'customer_id', 'event_name'] as const) {
      if (typeof event[field] !== 'string' || event[field] === '') {
        throw invalid(`${at}.${field} is required and must be a non-empty string.`);
      }
    }
    const customerId = event.customer_id as string;
    if (!this.catalog.hasCustomer(customerId)) {
      // "Customer ID must be a valid existing customer", and a request with one bad event fails
      // whole (https://docs.dodopayments.com/features/usage-based-billing/event-ingestion). Dodo
      // does not document the status for an unknown customer; the emulator answers what Dodo
      // answers for an unknown id everywhere else, 404, which is neither of the 400/422 it
      // documents for ingest: a client must not treat only those as an event's own fault.
      throw notFound(`${at}.customer_id: customer`, customerId);
    }
    let timestamp = now;
    if (event.timestamp !== undefined && event.timestamp !== null) {
      timestamp = typeof event.timestamp === 'string' ? Date.parse(event.timestamp) : Number.NaN;
      if (Number.isNaN(timestamp))
        throw invalid(`${at}.timestamp must be an ISO-8601 date-time (got ${describe(event.timestamp)}).`);
      if (timestamp < now - MAX_AGE_MS) {
        throw invalid(
          `${at}.timestamp ${event.timestamp} is more than 1 hour old; such events are rejected.`,
        );
      }
      if (timestamp > now + MAX_AHEAD_MS) {
        throw invalid(
          `${at}.timestamp ${event.timestamp} is more than 5 minutes in the future; such events are rejected.`,
        );
      }
    }
    return {
      business_id: this.runtime.businessId,
      customer_id: customerId,
      event_id: event.event_id as string,
      event_name: event.event_name as string,
      timestamp: this.runtime.iso(timestamp),
      metadata: checkMetadata(event.metadata, at),
    };
  }

  get(eventId: string): StoredEvent | undefined {
    return this.events.get(eventId);
  }

  /** Events in ingestion order, filtered. */
  list(filter: EventFilter = {}): StoredEvent[] {
    const start = filter.start === undefined ? undefined : toMs(filter.start);
    const end = filter.end === undefined ? undefined : toMs(filter.end);
    return [...this.events.values()].filter((event) => {
      const at = Date.parse(event.timestamp);
      return (
        (filter.customerId === undefined || event.customer_id === filter.customerId) &&
        (filter.eventName === undefined || event.event_name === filter.eventName) &&
        (start === undefined || at >= start) &&
        (end === undefined || at <= end)
      );
    });
  }
}

function toMs(value: number | string): number {
  return typeof value === 'number' ? value : Date.parse(value);
}

function checkMetadata(value: unknown, at: string): StoredEvent['metadata'] {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid(`${at}.metadata must be an object.`);
  const entries = Object.entries(value);
  if (entries.length > MAX_METADATA_KEYS) {
    throw invalid(`${at}.metadata has ${entries.length} keys; at most ${MAX_METADATA_KEYS} are allowed.`);
  }
  for (const [key, entry] of entries) {
    if (key.length > MAX_KEY_LENGTH) {
      throw invalid(
        `${at}.metadata key ${JSON.stringify(key.slice(0, 20))}… is longer than ${MAX_KEY_LENGTH} characters.`,
      );
    }
    if (
      typeof entry === 'number'
        ? !Number.isFinite(entry)
        : typeof entry !== 'string' && typeof entry !== 'boolean'
    ) {
      throw invalid(
        `${at}.metadata.${key} must be a string, number or boolean; objects and arrays are rejected.`,
      );
    }
    if (String(entry).length > MAX_VALUE_LENGTH) {
      throw invalid(`${at}.metadata.${key} is longer than ${MAX_VALUE_LENGTH} characters.`);
    }
  }
  return value as Record<string, string | number | boolean>;
}
