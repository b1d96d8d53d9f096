import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { billingOf, continueWithin, openBilling, type RequestBilling } from '../billing-context.js';
import { modelFromBody } from '../options.js';
import { charactersOverFour } from '../require-credits/estimate.js';
import type { BillingStore } from '../store/types.js';
import {
  type MeterUsageOptions,
  type ResolvedMeterUsageOptions,
  resolveMeterUsageOptions,
} from './options.js';
import { OutboxFlusher } from './outbox-flusher.js';
import { captureResponse, type ResponseCapture } from './response-capture.js';
import { buildSettlement } from './settlement.js';
import { usageRecordsOf } from './usage-records.js';

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

/** One flusher per store, however many `meterUsage` instances share it. */
const flushers = new WeakMap<BillingStore, OutboxFlusher>();

function flusherFor(config: ResolvedMeterUsageOptions): OutboxFlusher {
  let flusher = flushers.get(config.store);
  if (!flusher) {
    flusher = new OutboxFlusher({
      store: config.store,
      dodo: config.dodo,
      logger: config.logger,
      intervalMs: config.flushIntervalMs,
      batchSize: config.batchSize,
      leaseMs: config.leaseMs,
      ingestTimeoutMs: config.ingestTimeoutMs,
      maxBackoffMs: config.maxBackoffMs,
      onDeadLetter: config.onDeadLetter,
    });
    flushers.set(config.store, flusher);
  }
  return flusher;
}

/**
 * Around the handler: reads the usage of the response (JSON `usage`, the usage chunk of an
 * event stream, or what the app records with `res.locals.billing.record(…)`), prices it, and
 * settles it in one atomic store operation — reservation released, cost deducted, two usage
 * events queued in the durable outbox — when the response ends. A background flusher sends
 * the outbox to Dodo; no response ever waits on Dodo.
 */
export function meterUsage(options: Readonly<MeterUsageOptions>): MeterUsageMiddleware {
  const config = resolveMeterUsageOptions(options);
  const flusher = flusherFor(config);
  flusher.start();

  const middleware = async function meterUsageMiddleware(req: Request, res: Response, next: NextFunction) {
    let billing: RequestBilling | undefined;
    try {
      billing = billingOf(res) ?? (await openBilling(req, res, config));
    } catch (error) {
      return next(error);
    }
    // Nobody to bill: `requireCredits`, when mounted, answers such requests with 401.
    if (!billing) return next();
    if (billing.model === undefined) billing.model = modelFromBody(req);
    if (billing.estimatedInputTokens === 0)
      billing.estimatedInputTokens = charactersOverFour(billing.promptOf(req.body));
    const capture = captureResponse(res, config.maxJsonBytes);
    billing.settler = (ended, response) => settle(config, flusher, ended, capture, response);
    return continueWithin(billing, next);
  } as MeterUsageMiddleware;

  middleware.flush = (timeoutMs?: number) => flusher.flush(timeoutMs);
  middleware.stop = () => flusher.stop();
  middleware.close = async () => {
    try {
      await flusher.flush();
    } finally {
      flusher.stop();
    }
  };
  return middleware;
}

async function settle(
  config: ResolvedMeterUsageOptions,
  flusher: OutboxFlusher,
  billing: RequestBilling,
  capture: ResponseCapture,
  res: Response,
): Promise<void> {
  const { store, logger } = config;
  const records = usageRecordsOf(billing, capture, res);
  billing.settledUsage = records;
  const settlement = buildSettlement(config, {
    customerId: billing.customerId,
    settlementId: billing.requestId,
    reservationId: billing.reservation?.id,
    records,
    chargeCredits: billing.chargeCredits,
    usagePeriod: billing.usagePeriod,
    now: store.now(),
  });
  try {
    await store.settle(settlement);
  } catch (error) {
    logger.error('settling a request failed: it will be retried in the background', {
      customerId: billing.customerId,
      requestId: billing.requestId,
      error,
    });
    flusher.retryLater(settlement);
  }
}
