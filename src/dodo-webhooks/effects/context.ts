import type DodoPayments from 'dodopayments';
import type { UnwrapWebhookEvent } from 'dodopayments/resources/webhooks/webhooks';
import { minorUnitDigits } from '../../currency.js';
import { httpStatusOf, withDeadline } from '../../dodo-call.js';
import type { Logger } from '../../logger.js';
import type { BillingObserver } from '../../metrics/observer.js';
import { MONEY_SCALE, type Money, moneyFromMinorUnits, parseCredits } from '../../money.js';
import { DodoUnavailableError } from '../../require-credits/balance-fetcher.js';
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
  /** Deadline of each Dodo call an effect makes. */
  dodoTimeoutMs: number;
  /** Told each Dodo call's duration and outcome. */
  metrics?: Pick<BillingObserver, 'dodoCall'> | undefined;
  logger: Logger;
  /** Logs a misconfiguration once per `key` (per router), at warn, with its fix. */
  warnOnce(key: string, message: string, details?: Record<string, unknown>): void;
}

/** Every event type of the SDK's webhook union. */
export type WebhookType = UnwrapWebhookEvent['type'];

/** The verified event of one type, typed with the SDK's payloads. */
export type EventOf<T extends WebhookType> = Extract<UnwrapWebhookEvent, { type: T }>;

/** A verified webhook as it arrives: a type of the SDK's union, or a type this SDK does not know yet. */
export type DodoWebhookEvent =
  | UnwrapWebhookEvent
  | { business_id?: string; type: string; timestamp: string; data: Record<string, unknown> };

/** A built-in effect of the events of type(s) `T`. */
export type Effect<T extends WebhookType> = (event: EventOf<T>, context: EffectContext) => Promise<void>;

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

/** The customer an event names, directly (`customer_id`) or in its `customer` object. */
export function customerIdOf(data: unknown): string | undefined {
  const fields = data as { customer_id?: unknown; customer?: { customer_id?: unknown } | null };
  if (typeof fields.customer_id === 'string' && fields.customer_id !== '') return fields.customer_id;
  const nested = fields.customer?.customer_id;
  return typeof nested === 'string' && nested !== '' ? nested : undefined;
}

/** A timestamp field in ms, or the fallback when missing or malformed. */
export function timeOf(value: unknown, fallback: number): number {
  const parsed = typeof value === 'string' ? Date.parse(value) : Number.NaN;
  return Number.isFinite(parsed) ? parsed : fallback;
}

/** A JSON number written as its shortest decimal: what Dodo meant when it sent `1100` or `4.5`. */
function decimalText(value: unknown): string | undefined {
  if (typeof value === 'string') return value.trim();
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}

/**
 * A decimal credit amount, exactly. Read as the SDK types it (a decimal string, `"1100.5"`) or
 * as Dodo has been seen sending it (a JSON number, `1100.5`).
 */
export function readCredits(value: unknown, field: string, perCredit: Money): Money {
  const text = decimalText(value);
  try {
    if (text === undefined || /e/i.test(text)) throw new TypeError();
    return parseCredits(text, perCredit);
  } catch {
    throw new UnreadableEventError(`\`${field}\` is not a decimal credit amount (${JSON.stringify(value)})`);
  }
}

/** An amount in a currency's minor units (an integer, or an integer string), as money. */
export function readMinorUnits(value: unknown, field: string, currency: unknown): Money {
  const valid =
    (typeof value === 'number' && Number.isSafeInteger(value)) ||
    (typeof value === 'string' && /^-?\d+$/.test(value.trim()));
  if (!valid)
    throw new UnreadableEventError(`\`${field}\` is not an amount in minor units (${JSON.stringify(value)})`);
  return moneyFromMinorUnits(
    typeof value === 'string' ? value.trim() : (value as number),
    minorUnitDigits(currency),
  );
}

/**
 * A dispute's amount, as money in its currency. The SDK types it as a string "to accommodate
 * precision": a decimal of major units (`"4.00"`, `"4"`). A JSON number is read as minor units
 * (`400`), the way every other Dodo amount is sent as a number.
 */
export function readDisputeAmount(value: unknown, field: string, currency: unknown): Money {
  if (typeof value === 'number') return readMinorUnits(value, field, currency);
  const text = typeof value === 'string' ? value.trim() : '';
  const match = /^(\d+)(?:\.(\d{1,12}))?$/.exec(text);
  if (!match) throw new UnreadableEventError(`\`${field}\` is not an amount (${JSON.stringify(value)})`);
  const [, whole = '0', fraction = ''] = match;
  return BigInt(whole + fraction.padEnd(MONEY_SCALE, '0'));
}

/** What a payment brought the merchant in US dollars, and what the customer paid for it. */
export interface Settlement {
  /** `settlement_amount − settlement_tax`: the price in USD, tax excluded. */
  net: Money;
  /** `total_amount` in the customer's currency (tax and adaptive-currency fees included). */
  total: Money;
  currency: string;
}

/**
 * A payment's USD settlement, net of tax. Under adaptive currency `total_amount` is in the
 * customer's currency (₹1,700 is not $1,700); `settlement_amount` is what Dodo credits the
 * merchant, in `settlement_currency`, and `settlement_tax` its tax part
 * (https://docs.dodopayments.com/features/adaptive-currency). Undefined (with a warning, once)
 * when the merchant settles in another currency: spend tiers count US dollars.
 */
export function usdSettlementOf(
  payment: {
    settlement_amount?: unknown;
    settlement_tax?: unknown;
    settlement_currency?: unknown;
    total_amount?: unknown;
    currency?: unknown;
  },
  context: Pick<EffectContext, 'warnOnce'>,
): Settlement | undefined {
  const currency = typeof payment.currency === 'string' ? payment.currency : 'USD';
  const settlementCurrency = payment.settlement_currency;
  if (typeof settlementCurrency === 'string' && settlementCurrency.toUpperCase() !== 'USD') {
    context.warnOnce(
      `settlement-currency:${settlementCurrency}`,
      `dodoWebhooks: a payment settles in ${settlementCurrency}, but lifetime spend (rate tiers) counts US dollars, so it is left out of spend. Settle in USD on Dodo to count it.`,
    );
    return undefined;
  }
  const total = readMinorUnits(payment.total_amount, 'total_amount', currency);
  if (payment.settlement_amount === undefined || payment.settlement_amount === null) {
    // An older payload without settlement: only a USD payment can be read as dollars.
    if (currency.toUpperCase() !== 'USD') {
      throw new UnreadableEventError(`a ${currency} payment without \`settlement_amount\``);
    }
    return { net: total - readTax(payment as { tax?: unknown }, 'USD'), total, currency };
  }
  const settled = readMinorUnits(payment.settlement_amount, 'settlement_amount', 'USD');
  const tax =
    payment.settlement_tax === undefined || payment.settlement_tax === null
      ? 0n
      : readMinorUnits(payment.settlement_tax, 'settlement_tax', 'USD');
  return { net: settled - tax, total, currency };
}

function readTax(payment: { tax?: unknown }, currency: string): Money {
  return payment.tax === undefined || payment.tax === null
    ? 0n
    : readMinorUnits(payment.tax, 'tax', currency);
}

/**
 * The USD value of part of a payment (a refund, a dispute) given in the payment's currency:
 * its share of the net settlement, `part × net / total`, rounded down, never more than `net`.
 */
export function usdShare(part: Money, settlement: Settlement): Money {
  if (settlement.total <= 0n) return 0n;
  const share = (part * settlement.net) / settlement.total;
  if (share > settlement.net) return settlement.net;
  return share;
}

/** Calls Dodo under the effect's deadline: past it the webhook answers 5xx and Dodo retries. */
export function callDodo<T>(
  context: Pick<EffectContext, 'dodoTimeoutMs' | 'metrics'>,
  what: string,
  operation: string,
  call: (options: { timeout: number; maxRetries: 0; signal: AbortSignal }) => Promise<T>,
): Promise<T> {
  return withDeadline(
    context.dodoTimeoutMs,
    () => new DodoUnavailableError(`Dodo did not answer ${what} within ${context.dodoTimeoutMs} ms.`),
    call,
    { operation, observer: context.metrics },
  ).catch((error: unknown) => {
    if (error instanceof DodoUnavailableError) throw error;
    // What Dodo says does not exist will not exist on a retry: the event cannot be applied.
    if (httpStatusOf(error) === 404) throw new UnreadableEventError(`Dodo's ${what} answered 404`);
    throw new DodoUnavailableError(`Dodo's ${what} failed: ${(error as Error).message}`, { cause: error });
  });
}
