import type DodoPayments from 'dodopayments';
import type { UnwrapWebhookEvent } from 'dodopayments/resources/webhooks/webhooks';
import { Webhook } from 'standardwebhooks';
import type { AutoRecharger } from '../auto-recharge/index.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { type BillingObserver, resolveObserver } from '../metrics/observer.js';
import type { Money } from '../money.js';
import {
  positiveInteger,
  resolveLogger,
  resolveStore,
  resolveUnitsPerCredit,
  type SharedOptions,
} from '../options.js';
import type { BillingStore } from '../store/types.js';

/** The verified event of a type, typed with the SDK's webhook payloads. */
export type DodoWebhookEventOf<T extends string> =
  Extract<UnwrapWebhookEvent, { type: T }> extends never
    ? { type: T; timestamp: string; business_id: string; data: Record<string, unknown> }
    : Extract<UnwrapWebhookEvent, { type: T }>;

/** The app's own handlers, per event type, called after the built-in effects. */
export type WebhookHandlers = {
  [T in UnwrapWebhookEvent['type']]?: (
    event: DodoWebhookEventOf<T>,
    webhookId: string,
  ) => unknown | Promise<unknown>;
} & Record<string, ((event: never, webhookId: string) => unknown | Promise<unknown>) | undefined>;

export interface DodoWebhooksOptions extends SharedOptions {
  /** Handlers per event type; one that throws answers 5xx so Dodo retries. */
  on?: WebhookHandlers;
  /** Largest body accepted; beyond it, 413. @default 262_144 (256 KiB) */
  maxBodyBytes?: number;
  /** How long a delivery being processed blocks its duplicates, if its process dies. @default 60_000 */
  processingTtlMs?: number;
  /** How long a processed webhook id is remembered: longer than Dodo's retry schedule. @default 7 days */
  retentionMs?: number;
  /** Subscription add-on whose quantity is the seat count of a Team plan. @default the subscription's quantity */
  seatAddonId?: string;
  /**
   * Deadline of each Dodo call a built-in effect makes (the payment of a refund or dispute, the
   * balance reread after one). Past it the delivery is answered 503 and left for Dodo's retry.
   * @default 5_000
   */
  dodoTimeoutMs?: number;
}

export interface ResolvedDodoWebhooksOptions {
  store: BillingStore;
  dodo: DodoPayments | undefined;
  verifiers: Webhook[];
  on: WebhookHandlers;
  maxBodyBytes: number;
  processingTtlMs: number;
  retentionMs: number;
  perCredit: Money;
  creditEntitlementId: string | undefined;
  seatAddonId: string | undefined;
  dodoTimeoutMs: number;
  /** Set by `createBilling` when auto-recharge is on: recharge payments finish their attempt here. */
  recharger: AutoRecharger | undefined;
  logger: Logger;
  metrics: Required<BillingObserver> | undefined;
}

const NAME = 'dodoWebhooks';

function resolveVerifiers(options: Readonly<DodoWebhooksOptions>): Webhook[] {
  const configured =
    options.webhookKey ?? (options.dodo as { webhookKey?: string | null } | undefined)?.webhookKey;
  const keys = typeof configured === 'string' ? [configured] : Array.isArray(configured) ? configured : [];
  if (keys.length === 0 || keys.some((key) => typeof key !== 'string' || key === '')) {
    throw new ConfigError(
      'ERR_ELB_MISSING_OPTION',
      `${NAME}: \`webhookKey\` is required — the webhook secret from Dodo's dashboard (whsec_…), or several during key rotation; it defaults to the \`dodo\` client's \`webhookKey\`.`,
    );
  }
  return keys.map((key, index) => {
    try {
      return new Webhook(key);
    } catch (error) {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        `${NAME}: \`webhookKey${keys.length > 1 ? `[${index}]` : ''}\` is not a valid Standard Webhooks secret (base64, optionally prefixed whsec_): ${(error as Error).message}`,
      );
    }
  });
}

export function resolveDodoWebhooksOptions(
  options: Readonly<DodoWebhooksOptions>,
): ResolvedDodoWebhooksOptions {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: options must be an object.`);
  }
  const on = options.on ?? {};
  for (const [type, handler] of Object.entries(on)) {
    if (typeof handler !== 'function') {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        `${NAME}: \`on["${type}"]\` must be a function of the event.`,
      );
    }
  }
  return {
    store: resolveStore(options, NAME),
    dodo: options.dodo,
    verifiers: resolveVerifiers(options),
    on,
    maxBodyBytes: positiveInteger(options.maxBodyBytes, 'maxBodyBytes', NAME, 256 * 1024),
    processingTtlMs: positiveInteger(options.processingTtlMs, 'processingTtlMs', NAME, 60_000),
    retentionMs: positiveInteger(options.retentionMs, 'retentionMs', NAME, 7 * 24 * 60 * 60_000),
    perCredit: resolveUnitsPerCredit(options.creditsPerDollar),
    creditEntitlementId: options.creditEntitlementId,
    seatAddonId: options.seatAddonId,
    dodoTimeoutMs: positiveInteger(options.dodoTimeoutMs, 'dodoTimeoutMs', NAME, 5_000),
    recharger: (options as { recharger?: AutoRecharger }).recharger,
    logger: resolveLogger(options.logger),
    metrics: resolveObserver(options, resolveLogger(options.logger), NAME),
  };
}
