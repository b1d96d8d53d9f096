import type DodoPayments from 'dodopayments';
import type { Logger } from '../../logger.js';
import { type Money, moneyFromMinorUnits, parseCredits } from '../../money.js';
import type { BillingStore } from '../../store/types.js';

/** What a built-in effect may use: everything goes through the store, so each is idempotent. */
export interface EffectContext {
  store: BillingStore;
  dodo: DodoPayments | undefined;
  perCredit: Money;
  /** Only ledger entries of this entitlement move the balance view (all when undefined). */
  creditEntitlementId: string | undefined;
  /** The add-on whose quantity is a Team subscription's seat count (else its quantity). */
  seatAddonId: string | undefined;
  webhookId: string;
  /** How long ids of applied changes are remembered (the webhook ids' retention). */
  retentionMs: number;
  logger: Logger;
}

/** A verified webhook, as Dodo sends it. */
export interface DodoWebhookEvent {
  business_id?: string;
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export type Effect = (event: DodoWebhookEvent, context: EffectContext) => Promise<void>;

/** Minor-unit digits of a currency (ISO 4217); 2 unless listed. */
const MINOR_UNIT_DIGITS: Record<string, number> = {
  BIF: 0,
  CLP: 0,
  DJF: 0,
  GNF: 0,
  ISK: 0,
  JPY: 0,
  KMF: 0,
  KRW: 0,
  PYG: 0,
  RWF: 0,
  UGX: 0,
  VND: 0,
  VUV: 0,
  XAF: 0,
  XOF: 0,
  XPF: 0,
  BHD: 3,
  IQD: 3,
  JOD: 3,
  KWD: 3,
  LYD: 3,
  OMR: 3,
  TND: 3,
};

export function minorUnitDigits(currency: unknown): number {
  return typeof currency === 'string' ? (MINOR_UNIT_DIGITS[currency.toUpperCase()] ?? 2) : 2;
}

export function customerIdOf(data: Record<string, unknown>): string | undefined {
  const direct = data.customer_id;
  if (typeof direct === 'string' && direct !== '') return direct;
  const nested = (data.customer as { customer_id?: unknown } | undefined)?.customer_id;
  return typeof nested === 'string' && nested !== '' ? nested : undefined;
}

/** A timestamp field in ms, or the fallback when missing or malformed. */
export function timeOf(value: unknown, fallback: number): number {
  const parsed = typeof value === 'string' ? Date.parse(value) : Number.NaN;
  return Number.isFinite(parsed) ? parsed : fallback;
}

/**
 * A signed event whose fields cannot be read (a balance that is not a decimal, an amount that
 * is not an integer): retrying it would fail the same way, so it is acknowledged and logged,
 * with no effect.
 */
export class UnreadableEventError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnreadableEventError';
  }
}

/** A decimal credit amount field, exactly, or an `UnreadableEventError` naming the field. */
export function readCredits(data: Record<string, unknown>, field: string, perCredit: Money): Money {
  const value = data[field];
  try {
    return parseCredits(value as string, perCredit);
  } catch {
    throw new UnreadableEventError(`\`${field}\` is not a decimal credit amount (${JSON.stringify(value)})`);
  }
}

/** A minor-unit amount (an integer, or an integer string), or an `UnreadableEventError`. */
export function readMinorUnits(value: unknown, field: string, currency: unknown): Money {
  const valid =
    (typeof value === 'number' && Number.isSafeInteger(value)) ||
    (typeof value === 'string' && /^-?\d+$/.test(value));
  if (!valid)
    throw new UnreadableEventError(`\`${field}\` is not an amount in minor units (${JSON.stringify(value)})`);
  return moneyFromMinorUnits(value as number | string, minorUnitDigits(currency));
}
