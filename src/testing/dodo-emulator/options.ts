import { randomBytes } from 'node:crypto';
import { type CreditUnits, readCredits } from './amounts.js';
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
   * Balance (credits, decimal string) under which `credit.balance_low` is sent, once per
   * crossing from at-or-above to below. Default: never.
   */
  balanceLowThreshold?: string | number;
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
  balanceLowThreshold: CreditUnits | undefined;
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
  let threshold: CreditUnits | undefined;
  if (options.balanceLowThreshold !== undefined) {
    const units = readCredits(options.balanceLowThreshold);
    if (typeof units === 'string' || units < 0n) {
      fail('balanceLowThreshold', `must be a non-negative decimal amount of credits such as "100".`);
    }
    threshold = units;
  }
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
    balanceLowThreshold: threshold,
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
