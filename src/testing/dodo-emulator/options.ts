import { randomBytes } from 'node:crypto';
import { type ExactDecimal, readRate } from './amounts.js';
import type { AmountStyle } from './credits.js';
import { DodoEmulatorError } from './errors.js';

/** Options of {@link createDodoEmulator}. Every field is optional. */
export interface DodoEmulatorOptions {
  /** Bearer token the emulator expects in `Authorization`. Default `'test_key'`. */
  apiKey?: string;
  /** Port to listen on. Default `0` (a free port, see `emulator.baseURL`). */
  port?: number;
  /** Interface to listen on. Default `'127.0.0.1'` (loopback only). */
  host?: string;
  /** Where webhooks are POSTed. Default: none (webhooks are recorded, not sent). */
  webhookUrl?: string;
  /**
   * Standard Webhooks secret used to sign webhooks (`whsec_` + base64). Default: a fresh random
   * secret, exposed as `emulator.webhookKey`.
   */
  webhookKey?: string;
  /**
   * Delays (ms) before each retry of a webhook answered with a non-2xx status or not answered.
   * Its length is the number of retries. Default `[100, 500, 2000]` (Dodo itself backs off over
   * hours; keep it short in tests).
   */
  webhookRetry?: readonly number[];
  /** Deadline (ms) for the webhook receiver to answer one attempt. Default `5000`. */
  webhookTimeoutMs?: number;
  /** Deliver every webhook twice, with the same `webhook-id`. Default `false`. */
  duplicateWebhooks?: boolean;
  /** Deliver webhooks emitted together in a random order. Default `false`. */
  shuffleWebhooks?: boolean;
  /**
   * Delay (ms) between an ingest and the meter's credit deduction; Dodo deducts asynchronously.
   * `0` deducts on the next turn of the event loop. Default `50`.
   */
  meterDelayMs?: number;
  /**
   * Send the amounts of `credit.*` ledger webhooks and of dispute webhooks as JSON numbers
   * (`"balance_after": 1100`, a dispute's `"amount": 400` in minor units) instead of the decimal
   * strings the SDK types them as: Dodo has been seen doing so. Default `false`.
   */
  numericAmounts?: boolean;
  /**
   * Adaptive currency: units of each local currency per unit of the products' currency, e.g.
   * `{ INR: '85.2', EUR: '0.92' }`. A checkout with that `billing_currency` is paid in it (plus
   * Dodo's 2–4% fee) and settled in the product's currency. Default: none (adaptive pricing off,
   * `billing_currency` ignored, as Dodo does).
   */
  exchangeRates?: Readonly<Record<string, string | number>>;
  /** Sales tax added on top of every price, in percent (e.g. `'18'`). Default `0`. */
  taxPercent?: string | number;
  /** The emulator's clock in ms since the epoch (the ingest time window uses it). Default `Date.now`. */
  now?: () => number;
  /** `business_id` on every object and webhook. Default `'bus_emulator'`. */
  businessId?: string;
}

export interface ResolvedOptions {
  apiKey: string;
  port: number;
  host: string;
  webhookUrl: string | undefined;
  webhookKey: string;
  webhookRetry: readonly number[];
  webhookTimeoutMs: number;
  duplicateWebhooks: boolean;
  shuffleWebhooks: boolean;
  meterDelayMs: number;
  amountStyle: AmountStyle;
  exchangeRates: ReadonlyMap<string, ExactDecimal>;
  taxPercent: ExactDecimal;
  now: () => number;
  businessId: string;
}

function fail(option: string, message: string): never {
  throw new DodoEmulatorError(`createDodoEmulator: \`${option}\` ${message}`);
}

function delay(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    fail(option, `must be a number of milliseconds >= 0 (got ${String(value)}).`);
  }
  return value;
}

/** Generates a Standard Webhooks secret, as Dodo shows one in its dashboard. */
export function generateWebhookKey(): string {
  return `whsec_${randomBytes(24).toString('base64')}`;
}

export function resolveOptions(options: DodoEmulatorOptions = {}): ResolvedOptions {
  const apiKey = options.apiKey ?? 'test_key';
  if (typeof apiKey !== 'string' || apiKey === '') fail('apiKey', 'must be a non-empty string.');
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('port', 'must be an integer 0–65535.');
  const webhookKey = options.webhookKey ?? generateWebhookKey();
  if (!/^whsec_[A-Za-z0-9+/=]+$/.test(webhookKey)) {
    fail('webhookKey', 'must be a Standard Webhooks secret: "whsec_" followed by base64.');
  }
  if (options.webhookUrl !== undefined) checkWebhookUrl(options.webhookUrl);
  const retry = options.webhookRetry ?? [100, 500, 2000];
  if (!Array.isArray(retry)) fail('webhookRetry', 'must be an array of delays in milliseconds.');
  for (const [index, ms] of retry.entries()) delay(`webhookRetry[${index}]`, ms, 0);
  if ((options as { balanceLowThreshold?: unknown }).balanceLowThreshold !== undefined) {
    fail(
      'balanceLowThreshold',
      "is gone: Dodo's `credit.balance_low` belongs to a subscription's credit attachment. Attach the credit entitlement to a subscription product with `low_balance_threshold_percent`, and subscribe the customer.",
    );
  }
  const exchangeRates = new Map<string, ExactDecimal>();
  for (const [currency, value] of Object.entries(options.exchangeRates ?? {})) {
    const rate = readRate(value);
    if (!/^[A-Z]{3}$/.test(currency) || !rate || rate.mantissa === 0n) {
      fail(
        'exchangeRates',
        `must map currency codes to positive decimal rates (got ${currency}: ${String(value)}).`,
      );
    }
    exchangeRates.set(currency, rate);
  }
  const taxPercent = readRate(options.taxPercent ?? 0);
  if (!taxPercent)
    fail('taxPercent', `must be a non-negative decimal percentage (got ${String(options.taxPercent)}).`);
  if (options.now !== undefined && typeof options.now !== 'function') {
    fail('now', 'must be a function returning ms since the epoch.');
  }
  return {
    apiKey,
    port,
    host: options.host ?? '127.0.0.1',
    webhookUrl: options.webhookUrl,
    webhookKey,
    webhookRetry: [...retry],
    webhookTimeoutMs: delay('webhookTimeoutMs', options.webhookTimeoutMs, 5000),
    duplicateWebhooks: options.duplicateWebhooks ?? false,
    shuffleWebhooks: options.shuffleWebhooks ?? false,
    meterDelayMs: delay('meterDelayMs', options.meterDelayMs, 50),
    amountStyle: options.numericAmounts ? 'numbers' : 'strings',
    exchangeRates,
    taxPercent,
    now: options.now ?? Date.now,
    businessId: options.businessId ?? 'bus_emulator',
  };
}

/** Throws unless `url` is an absolute http(s) URL. */
export function checkWebhookUrl(url: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
    fail('webhookUrl', `must be an absolute http(s) URL (got ${JSON.stringify(url)}).`);
  }
}
