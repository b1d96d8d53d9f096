import express, { type Request, type Response, type Router } from 'express';
import type { RechargePayment } from '../auto-recharge/dodo.js';
import { StoreError } from '../errors.js';
import type { Logger } from '../logger.js';
import { DodoUnavailableError } from '../require-credits/balance-fetcher.js';
import { UnreadableEventError } from './effects/context.js';
import { applyBuiltInEffect, type DodoWebhookEvent, type EffectContext } from './effects/index.js';
import {
  type DodoWebhooksOptions,
  type ResolvedDodoWebhooksOptions,
  resolveDodoWebhooksOptions,
} from './options.js';
import { type BodyTooLargeError, readRawBody } from './raw-body.js';
import { verifySignature, WebhookRejection } from './verify.js';

export type { DodoWebhookEventOf, DodoWebhooksOptions, WebhookHandlers } from './options.js';

/** Payment events that can end an auto-recharge's attempt. */
const RECHARGE_OUTCOMES: ReadonlySet<string> = new Set([
  'payment.succeeded',
  'payment.failed',
  'payment.cancelled',
]);

export { keepRawBody } from './raw-body.js';

type RequestWithBodies = Request & { rawBody?: Buffer; body?: unknown };

function reply(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ error: { code, message } });
}

/**
 * The exact bytes Dodo signed. Read from the stream when no body parser ran; when one did,
 * only its kept copy (`keepRawBody`) can be verified — re-serialising parsed JSON changes the
 * bytes, so it is refused with an explanation rather than blamed on the signature.
 */
async function rawBodyOf(req: RequestWithBodies, limitBytes: number): Promise<Buffer> {
  // A body parser that ran first (`keepRawBody`, or `express.raw()`) has its own limit: ours
  // still applies.
  const kept = Buffer.isBuffer(req.rawBody) ? req.rawBody : Buffer.isBuffer(req.body) ? req.body : undefined;
  if (kept) {
    if (kept.length > limitBytes)
      throw new WebhookRejection(
        413,
        'webhook_body_too_large',
        `The webhook body is larger than ${limitBytes} bytes.`,
      );
    return kept;
  }
  if (
    req.readableEnded ||
    (req.body !== undefined && typeof req.body === 'object' && Object.keys(req.body as object).length > 0) ||
    typeof req.body === 'string'
  ) {
    throw new WebhookRejection(
      500,
      'webhook_body_already_parsed',
      "dodoWebhooks: a body parser read this request before the webhook router, so the signed bytes are gone. Mount `app.use('/webhooks/dodo', dodoWebhooks(…))` before `express.json()`, or keep the raw body with `express.json({ verify: keepRawBody })`.",
    );
  }
  try {
    return await readRawBody(req, limitBytes);
  } catch (error) {
    if ((error as BodyTooLargeError).name === 'BodyTooLargeError') {
      throw new WebhookRejection(413, 'webhook_body_too_large', (error as Error).message);
    }
    throw new WebhookRejection(
      400,
      'unreadable_webhook_body',
      `The webhook body could not be read: ${(error as Error).message}`,
    );
  }
}

function parseEvent(rawBody: Buffer): DodoWebhookEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(rawBody.toString('utf8'));
  } catch {
    throw new WebhookRejection(400, 'malformed_webhook_body', 'The webhook body is not JSON.');
  }
  const event = parsed as Partial<DodoWebhookEvent> | null;
  if (
    !event ||
    typeof event !== 'object' ||
    typeof event.type !== 'string' ||
    !event.data ||
    typeof event.data !== 'object'
  ) {
    throw new WebhookRejection(
      400,
      'malformed_webhook_body',
      'The webhook body is not a Dodo event: it needs `type` and `data`.',
    );
  }
  return {
    ...event,
    timestamp: typeof event.timestamp === 'string' ? event.timestamp : '',
  } as DodoWebhookEvent;
}

/**
 * What a refusal means for the app's operator, when it names a misconfiguration rather than a
 * stranger's request: only Dodo would see the answer, so the app's log says it too, with the fix.
 */
const MISCONFIGURATION_FIX: Readonly<Record<string, string>> = {
  invalid_webhook_signature:
    "no configured `webhookKey` verifies the signature: set it to this endpoint's signing secret (whsec_…) from Dodo's dashboard (Developers → Webhooks), for the same mode (test or live) as the endpoint; during a rotation pass both secrets.",
  webhook_timestamp_out_of_tolerance:
    "the signed timestamp is more than 5 minutes away from this server's clock: keep the server on NTP (a proxy that queues deliveries for minutes does the same).",
  webhook_body_already_parsed:
    "a body parser read the request before dodoWebhooks, so the signed bytes are gone: mount `app.use('/webhooks/dodo', dodoWebhooks(…))` before `express.json()`, or keep the raw body with `express.json({ verify: keepRawBody })`.",
};

/**
 * Logs each kind of misconfiguration once, at warn, with its fix — not once per delivery: Dodo
 * retries every refused delivery for days. Armed again after a delivery passes, so a secret
 * broken again later (a rotation) is named again.
 */
class MisconfigurationLog {
  private readonly named = new Set<string>();

  constructor(private readonly logger: Logger) {}

  refused(rejection: WebhookRejection, webhookId: unknown): void {
    const fix = MISCONFIGURATION_FIX[rejection.code];
    if (!fix || this.named.has(rejection.code)) return;
    this.named.add(rejection.code);
    this.logger.warn(`dodoWebhooks refused a delivery with ${rejection.status} (${rejection.code}): ${fix}`, {
      webhookId: typeof webhookId === 'string' ? webhookId : undefined,
      reason: rejection.message,
    });
  }

  passed(): void {
    this.named.clear();
  }

  once(key: string, message: string, details?: Record<string, unknown>): void {
    if (this.named.has(`effect:${key}`)) return;
    this.named.add(`effect:${key}`);
    this.logger.warn(message, details);
  }
}

/**
 * A Router for Dodo's webhooks: verifies each delivery's Standard Webhooks signature over the
 * raw bytes, applies each webhook id exactly once across processes (built-in effects on
 * spend, balances and plans, then the app's `on` handlers), and answers so that Dodo retries
 * exactly what failed. A delivery refused for a misconfiguration (a wrong secret, a body parser
 * mounted first) is named once in the app's log, with the fix. Mount it with
 * `app.use('/webhooks/dodo', dodoWebhooks(options))`.
 */
export function dodoWebhooks(options: Readonly<DodoWebhooksOptions>): Router {
  const config = resolveDodoWebhooksOptions(options);
  const misconfigurations = new MisconfigurationLog(config.logger);
  const router = express.Router();
  router.post('/', async function dodoWebhooksHandler(req: Request, res: Response) {
    let event: DodoWebhookEvent;
    let webhookId: string;
    try {
      const rawBody = await rawBodyOf(req as RequestWithBodies, config.maxBodyBytes);
      verifySignature(config.verifiers, rawBody, req.headers);
      event = parseEvent(rawBody);
      webhookId = String(req.headers['webhook-id']);
    } catch (error) {
      if (error instanceof WebhookRejection) {
        misconfigurations.refused(error, req.headers['webhook-id']);
        config.metrics?.webhookRefused(error.code);
        return reply(res, error.status, error.code, error.message);
      }
      throw error;
    }
    misconfigurations.passed();
    await processOnce(config, misconfigurations, event, webhookId, res);
  });
  return router;
}

async function processOnce(
  config: ResolvedDodoWebhooksOptions,
  misconfigurations: MisconfigurationLog,
  event: DodoWebhookEvent,
  webhookId: string,
  res: Response,
): Promise<void> {
  const { store, logger, metrics } = config;
  let claim: Awaited<ReturnType<typeof store.claimWebhook>>;
  try {
    claim = await store.claimWebhook(webhookId, config.processingTtlMs);
  } catch (error) {
    logger.error('webhook store unavailable: asking Dodo to retry', { webhookId, error });
    metrics?.webhookRefused('billing_unavailable');
    return reply(res, 503, 'billing_unavailable', 'The billing store is unavailable; retry later.');
  }
  if (claim === 'done') {
    metrics?.webhookRefused('duplicate');
    res.status(200).json({ received: true, duplicate: true });
    return;
  }
  if (claim === 'processing') {
    // Another delivery of this id is running: answering non-2xx makes Dodo retry later, so the
    // event still runs once if that delivery fails.
    metrics?.webhookRefused('webhook_in_progress');
    return reply(res, 409, 'webhook_in_progress', 'This webhook id is being processed by another delivery.');
  }
  try {
    // Own properties only: a type such as `__proto__` or `toString` is not a handler.
    const handler = Object.hasOwn(config.on, event.type)
      ? (config.on[event.type] as (event: unknown, webhookId: string) => unknown)
      : undefined;
    const context: EffectContext = {
      ...config,
      webhookId,
      warnOnce: (key, message, details) => misconfigurations.once(key, message, details),
    };
    await applyBuiltInEffect(event, context);
    if (config.recharger && RECHARGE_OUTCOMES.has(event.type)) {
      // A recharge's payment: its credits are granted and its attempt finished (once, whichever
      // of this webhook and the recharging process gets there first).
      await config.recharger.settle(event.data as unknown as RechargePayment);
    }
    await handler?.(event, webhookId);
  } catch (error) {
    if (error instanceof UnreadableEventError) {
      // Signed by Dodo but unreadable: a retry would fail the same way. Acknowledged, logged.
      logger.error(`webhook ${event.type} ignored: ${error.message}`, { webhookId });
      await store.completeWebhook(webhookId, config.retentionMs).catch(() => {});
      metrics?.webhookRefused('unreadable_event');
      res.status(200).json({ received: true, ignored: error.message });
      return;
    }
    await store.releaseWebhook(webhookId).catch(() => {});
    logger.error(`webhook ${event.type} failed: released for Dodo's retry`, { webhookId, error });
    metrics?.webhookRefused(
      error instanceof StoreError
        ? 'billing_unavailable'
        : error instanceof DodoUnavailableError
          ? 'dodo_unavailable'
          : 'webhook_handler_failed',
    );
    if (error instanceof StoreError) {
      return reply(res, 503, 'billing_unavailable', 'The billing store is unavailable; retry later.');
    }
    if (error instanceof DodoUnavailableError) {
      return reply(
        res,
        503,
        'dodo_unavailable',
        `Dodo did not answer what ${event.type} needs; retry later.`,
      );
    }
    return reply(res, 500, 'webhook_handler_failed', `The ${event.type} handler failed; retry later.`);
  }
  try {
    await store.completeWebhook(webhookId, config.retentionMs);
  } catch (error) {
    // Applied but not marked done: its effects are idempotent, so a redelivery is harmless.
    logger.warn('webhook applied but could not be marked done', { webhookId, error });
  }
  metrics?.webhookApplied(event.type);
  res.status(200).json({ received: true });
}
