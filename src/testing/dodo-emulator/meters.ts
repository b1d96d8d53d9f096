import type { DodoPayments } from 'dodopayments';
import {
  type CreditUnits,
  formatCreditUnits,
  formatScaled,
  readDecimal,
  UNITS_PER_CREDIT,
} from './amounts.js';
import type { Catalog } from './catalog.js';
import type { CreditLedger } from './credits.js';
import { invalid, notFound } from './errors.js';
import type { StoredEvent } from './events.js';
import type { MeterLink } from './meter-links.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';

type Meter = DodoPayments.Meter;
type MeterFilter = DodoPayments.MeterFilter;

/** A customer's subscription, as the meters need it. */
export interface SubscribedPlan {
  subscriptionId: string;
  productId: string;
  /** Start of the current billing cycle (ms): free thresholds count per cycle. */
  periodStart: number;
}

/** One asynchronous deduction a meter made from a customer's credits, through one subscription. */
export interface MeterDeduction {
  meterId: string;
  customerId: string;
  creditEntitlementId: string;
  /** The subscription whose usage-based price links the meter to the credits. */
  subscriptionId: string;
  /** The events it covers. */
  eventIds: string[];
  /** Sum of the meter's values over those events (exact decimal string). */
  meterUnits: string;
  /** Credits charged now (deducted + overage, exact decimal string); may be `"0"` while a fraction accumulates. */
  credits: string;
  /** Of which taken from the balance (`credit.deducted`). */
  deducted: string;
  /** Of which charged as overage (`credit.overage_charged`). */
  overage: string;
  /** Credits the balance could not cover and overage could not take: never deducted. */
  unbilled: string;
  /** The ledger entries written (none while nothing whole enough to deduct). */
  ledgerEntryIds: string[];
  at: string;
}

/** Meter values are read exactly at this many decimals (tokens are integers; decimals are allowed). */
const VALUE_DECIMALS = 12;
const VALUE_SCALE = 10n ** BigInt(VALUE_DECIMALS);

/**
 * Meters and their deduction of credits. On Dodo a meter deducts credits only through a
 * usage-based price that links it to an entitlement ("Bill usage in Credits"), and only for
 * customers subscribed to that product: "For usage-based products, meters automatically deduct
 * credits" (https://docs.dodopayments.com/features/credit-based-billing). So `meterDelayMs`
 * after an ingest (Dodo's background worker runs every minute), for each of the customer's
 * *active* subscriptions whose product links a meter the events match, the meter's sum over
 * them (past the link's free threshold for the cycle) becomes `sum / meter_units_per_credit`
 * credits, deducted in one ledger entry (`credit.deducted`, `reference_type: "meter"`); what
 * the balance cannot cover is overage when the entitlement allows it, and is not deducted
 * when it does not. A customer with no such subscription is not deducted at all.
 *
 * Exactness: with values scaled to integers V (value × 10¹²) and `meterUnitsPerCredit = n / d`,
 * the credit units owed (1 unit = 10⁻¹² credit) are `V × d / n`. Each deduction takes the whole
 * part at the entitlement's precision and keeps the rest — an integer numerator over the fixed
 * denominator n, per (subscription, meter) — for the next one. After any number of batches the
 * total charged is `floor(ΣV × d / n)` at the precision: the same as one deduction of all the
 * usage at once, less by under one precision step, never a float.
 */
export class Meters {
  private readonly meters = new Map<string, Meter>();
  private readonly carry = new Map<string, bigint>();
  /** Meter units used per (subscription, meter, cycle), for free thresholds. */
  private readonly cycleUsage = new Map<string, bigint>();
  private readonly deductions: MeterDeduction[] = [];

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
    private readonly credits: CreditLedger,
    private readonly subscribed: (customerId: string) => SubscribedPlan[],
    private readonly delayMs: () => number,
  ) {}

  create(input: unknown): Meter {
    const body = read.object(input, 'body');
    const aggregation = read.object(body.aggregation, 'aggregation');
    const type = aggregation.type;
    if (type !== 'count' && type !== 'sum' && type !== 'max' && type !== 'last') {
      throw invalid('aggregation.type must be count, sum, max or last.');
    }
    const key = read.optionalString(aggregation, 'key');
    if (type !== 'count' && !key)
      throw invalid('aggregation.key is required when aggregation.type is not count.');
    const now = this.runtime.iso();
    const meter: Meter = {
      id: this.runtime.id('mtr'),
      aggregation: { type, key: key ?? null },
      business_id: this.runtime.businessId,
      created_at: now,
      updated_at: now,
      event_name: read.string(body, 'event_name'),
      measurement_unit: read.string(body, 'measurement_unit'),
      name: read.string(body, 'name'),
      description: read.optionalString(body, 'description') ?? null,
      filter: (body.filter as MeterFilter | undefined) ?? null,
    };
    this.meters.set(meter.id, meter);
    return meter;
  }

  meter(id: string): Meter {
    const meter = this.meters.get(id);
    if (!meter) throw notFound('Meter', id);
    return meter;
  }

  list(): Meter[] {
    return [...this.meters.values()].reverse();
  }

  /** Whether `event` counts for `meter` (event name and filter). */
  matches(meter: Meter, event: StoredEvent): boolean {
    return (
      event.event_name === meter.event_name && (!meter.filter || passes(meter.filter, event.metadata ?? {}))
    );
  }

  /** Schedules the deduction of freshly ingested events, one run per customer. */
  ingested(events: readonly StoredEvent[]): void {
    const perCustomer = new Map<string, StoredEvent[]>();
    for (const event of events) {
      perCustomer.set(event.customer_id, [...(perCustomer.get(event.customer_id) ?? []), event]);
    }
    for (const [customerId, batch] of perCustomer) {
      this.runtime.later(this.delayMs(), () => this.deductFor(customerId, batch));
    }
  }

  /** The worker's run for one customer: every active subscription's credit-billed meters. */
  private deductFor(customerId: string, events: readonly StoredEvent[]): void {
    for (const plan of this.subscribed(customerId)) {
      for (const link of this.catalog.meterLinks(plan.productId)) {
        const meter = this.meters.get(link.meterId);
        if (!meter) continue;
        const matched = events.filter((event) => this.matches(meter, event));
        if (matched.length === 0) continue;
        const value = matched.reduce((sum, event) => sum + meterValue(meter, event), 0n);
        this.deduct(
          link,
          plan,
          customerId,
          value,
          matched.map((event) => event.event_id),
        );
      }
    }
  }

  private deduct(
    link: MeterLink,
    plan: SubscribedPlan,
    customerId: string,
    value: bigint,
    eventIds: string[],
  ): void {
    // The free threshold is counted per billing cycle of the subscription.
    const cycleKey = `${plan.subscriptionId}\u0000${link.meterId}\u0000${plan.periodStart}`;
    const threshold = link.freeThreshold * VALUE_SCALE;
    const usedBefore = this.cycleUsage.get(cycleKey) ?? 0n;
    const usedAfter = usedBefore + value;
    this.cycleUsage.set(cycleKey, usedAfter);
    const billable = positive(usedAfter - threshold) - positive(usedBefore - threshold);

    const carryKey = `${plan.subscriptionId}\u0000${link.meterId}`;
    // credit units = (value / 10^12) / (numerator / denominator) × 10^12 = value × denominator / numerator
    const owed =
      billable * link.denominator * (UNITS_PER_CREDIT / VALUE_SCALE) + (this.carry.get(carryKey) ?? 0n);
    const whole = owed / link.numerator;
    const step = this.credits.step(link.entitlementId);
    const units: CreditUnits = whole - (whole % step);
    this.carry.set(carryKey, owed - units * link.numerator);
    const outcome =
      units > 0n
        ? this.credits.deductUsage({
            customerId,
            entitlementId: link.entitlementId,
            amount: units,
            description: `Usage of meter ${link.meterId}`,
            referenceId: link.meterId,
            referenceType: 'meter',
            metadata: {
              meter_id: link.meterId,
              event_count: eventIds.length,
              subscription_id: plan.subscriptionId,
            },
          })
        : { deducted: 0n, overage: 0n, unbilled: 0n, entryIds: [] };
    this.deductions.push({
      meterId: link.meterId,
      customerId,
      creditEntitlementId: link.entitlementId,
      subscriptionId: plan.subscriptionId,
      eventIds,
      meterUnits: formatScaled(value, VALUE_DECIMALS),
      credits: formatCreditUnits(outcome.deducted + outcome.overage),
      deducted: formatCreditUnits(outcome.deducted),
      overage: formatCreditUnits(outcome.overage),
      unbilled: formatCreditUnits(outcome.unbilled),
      ledgerEntryIds: outcome.entryIds,
      at: this.runtime.iso(),
    });
  }

  deductionsList(): MeterDeduction[] {
    return [...this.deductions];
  }
}

function positive(value: bigint): bigint {
  return value > 0n ? value : 0n;
}

/** The event's contribution to the meter, scaled to an integer at VALUE_DECIMALS; 0 when unreadable. */
function meterValue(meter: Meter, event: StoredEvent): bigint {
  if (meter.aggregation.type === 'count') return VALUE_SCALE;
  const raw = event.metadata?.[meter.aggregation.key ?? ''];
  if (raw === undefined || typeof raw === 'boolean') return 0n;
  const decimal = readDecimal(raw);
  if (typeof decimal === 'string' || decimal.decimals > VALUE_DECIMALS || decimal.mantissa < 0n) return 0n;
  return decimal.mantissa * 10n ** BigInt(VALUE_DECIMALS - decimal.decimals);
}

type Condition = DodoPayments.FilterType.MeterFilterConditionList;

function passes(filter: MeterFilter, metadata: Record<string, string | number | boolean>): boolean {
  const results = (filter.clauses as Array<Condition | MeterFilter>).map((clause) =>
    'conjunction' in clause ? passes(clause, metadata) : holds(clause, metadata[clause.key]),
  );
  return filter.conjunction === 'or' ? results.some(Boolean) : results.every(Boolean);
}

function holds(condition: Condition, actual: string | number | boolean | undefined): boolean {
  if (actual === undefined)
    return condition.operator === 'not_equals' || condition.operator === 'does_not_contain';
  const expected = condition.value;
  const numeric = Number(actual) - Number(expected);
  switch (condition.operator) {
    case 'equals':
      return String(actual) === String(expected);
    case 'not_equals':
      return String(actual) !== String(expected);
    case 'greater_than':
      return numeric > 0;
    case 'greater_than_or_equals':
      return numeric >= 0;
    case 'less_than':
      return numeric < 0;
    case 'less_than_or_equals':
      return numeric <= 0;
    case 'contains':
      return String(actual).includes(String(expected));
    case 'does_not_contain':
      return !String(actual).includes(String(expected));
    default:
      return false;
  }
}
