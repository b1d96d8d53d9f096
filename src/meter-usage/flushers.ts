import type DodoPayments from 'dodopayments';
import { ConfigError } from '../errors.js';
import type { BillingStore } from '../store/types.js';
import { OutboxFlusher, type OutboxFlusherOptions } from './outbox-flusher.js';

/**
 * The Dodo client each store's outbox is delivered through, process-wide. One outbox holds the
 * events of every request settled in its store, whichever middleware settled them, so two Dodo
 * clients (two accounts, test and live) draining one store would each send the other's events.
 */
const clientOfStore = new WeakMap<BillingStore, { dodo: DodoPayments; owners: number }>();

/**
 * The outbox flushers one `createBilling` (or one standalone `meterUsage`) owns: one per store,
 * started when first asked for, flushed and stopped by `close()`. Owned explicitly, never
 * shared through module state with another owner.
 */
export class Flushers {
  private readonly flushers = new Map<BillingStore, OutboxFlusher>();

  /** The flusher of `options.store`, created and started on first use. */
  for(options: OutboxFlusherOptions): OutboxFlusher {
    const existing = this.flushers.get(options.store);
    if (existing) {
      if (!sameAccount(existing.dodo, options.dodo)) throw mixedClients();
      return existing;
    }
    const bound = clientOfStore.get(options.store);
    if (bound && !sameAccount(bound.dodo, options.dodo)) throw mixedClients();
    if (bound) bound.owners += 1;
    else clientOfStore.set(options.store, { dodo: options.dodo, owners: 1 });
    const flusher = new OutboxFlusher(options);
    this.flushers.set(options.store, flusher);
    flusher.start();
    return flusher;
  }

  /** Resolves once every owned outbox is delivered, or rejects with why not. */
  async flush(timeoutMs?: number): Promise<void> {
    await Promise.all([...this.flushers.values()].map((flusher) => flusher.flush(timeoutMs)));
  }

  /** Stops the timers without flushing: what is queued stays in the stores' outboxes. */
  stop(): void {
    for (const [store, flusher] of this.flushers) {
      flusher.stop();
      const bound = clientOfStore.get(store);
      if (bound && --bound.owners === 0) clientOfStore.delete(store);
    }
    this.flushers.clear();
  }

  /** Flushes what it can, then stops. */
  async close(timeoutMs?: number): Promise<void> {
    try {
      await this.flush(timeoutMs);
    } finally {
      this.stop();
    }
  }
}

/** Two clients of one Dodo account (the same API and key), however many objects the app made. */
function sameAccount(a: DodoPayments, b: DodoPayments): boolean {
  return a === b || (a.baseURL === b.baseURL && a.bearerToken === b.bearerToken);
}

function mixedClients(): ConfigError {
  return new ConfigError(
    'ERR_ELB_STORE_SHARED_BY_CLIENTS',
    'meterUsage: this store already delivers its usage events through another Dodo client. One store holds one outbox, delivered through one Dodo account: give each account its own store (a RedisStore `prefix`, or its own MemoryStore).',
  );
}
