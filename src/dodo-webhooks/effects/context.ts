import type DodoPayments from 'dodopayments';
import type { Logger } from '../../logger.js';
import type { Money } from '../../money.js';
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
