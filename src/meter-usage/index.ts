import type { RequestHandler } from 'express';
import { standaloneContext } from '../chain/context.js';
import { createChain } from '../chain/index.js';
import { Flushers } from './flushers.js';
import {
  type MeterUsageOptions,
  type ResolvedMeterUsageOptions,
  resolveMeterUsageOptions,
} from './options.js';
import type { OutboxFlusherOptions } from './outbox-flusher.js';
import { MeterStep } from './step.js';

export type { MeterUsageOptions } from './options.js';

/** The `meterUsage` handler, with the controls of its background outbox flusher. */
export interface MeterUsageMiddleware extends RequestHandler {
  /** Resolves once every queued usage event has been accepted by Dodo, or rejects with why not. */
  flush(timeoutMs?: number): Promise<void>;
  /** Flushes what it can, then stops the flusher's timer. */
  close(): Promise<void>;
  /** Stops the flusher's timer without flushing: what is queued stays in the store's outbox. */
  stop(): void;
}

/** The outbox flusher's options, from `meterUsage`'s. */
export function flusherOptions(config: ResolvedMeterUsageOptions): OutboxFlusherOptions {
  return {
    store: config.store,
    dodo: config.dodo,
    logger: config.logger,
    intervalMs: config.flushIntervalMs,
    batchSize: config.batchSize,
    leaseMs: config.leaseMs,
    ingestTimeoutMs: config.ingestTimeoutMs,
    maxBackoffMs: config.maxBackoffMs,
    onDeadLetter: config.onDeadLetter,
    metrics: config.metrics,
  };
}

/**
 * Around the handler: reads the usage of the response (JSON `usage`, the usage chunk of an
 * event stream, or what the app records with `res.locals.billing.record(…)`), prices it, and
 * settles it in one atomic store operation — holds released, cost deducted, two usage events
 * queued in the durable outbox — before the response's last bytes leave. A background flusher
 * sends the outbox to Dodo; no response ever waits on Dodo. A chain of one.
 */
export function meterUsage(options: Readonly<MeterUsageOptions>): MeterUsageMiddleware {
  const context = standaloneContext(options, 'meterUsage');
  const config = resolveMeterUsageOptions(options);
  const flushers = new Flushers();
  const step = new MeterStep(config, flushers.for(flusherOptions(config)));
  return withFlusherControls(createChain(context, { meterUsage: step }, 'meterUsage'), flushers);
}

/** A handler with the flush, close and stop of the flushers it delivers through. */
export function withFlusherControls(handler: RequestHandler, flushers: Flushers): MeterUsageMiddleware {
  const middleware = handler as MeterUsageMiddleware;
  middleware.flush = (timeoutMs) => flushers.flush(timeoutMs);
  middleware.stop = () => flushers.stop();
  middleware.close = () => flushers.close();
  return middleware;
}
