import type { DodoPayments } from 'dodopayments';
import {
  type CreditUnits,
  describe,
  formatCreditUnits,
  formatScaled,
  readDecimal,
  UNITS_PER_CREDIT,
} from './amounts.js';
import type { Catalog } from './catalog.js';
import type { CreditLedger } from './credits.js';
import { invalid, notFound } from './errors.js';
import type { StoredEvent } from './events.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';

type Meter = DodoPayments.Meter;
type MeterFilter = DodoPayments.MeterFilter;

/** How a meter turns into credits: `credits = meter units / meterUnitsPerCredit`. */
export interface MeterLink {
  meterId: string;
  entitlementId: string;
  /** As given, e.g. `"4000"` or `"0.5"`. */
  meterUnitsPerCredit: string;
  /** `meterUnitsPerCredit = numerator / denominator`, both positive integers. */
  numerator: bigint;
  denominator: bigint;
}

/** One asynchronous deduction a meter made from a customer's credits. */
export interface MeterDeduction {
  meterId: string;
  customerId: string;
  creditEntitlementId: string;
  /** The events it covers. */
  eventIds: string[];
  /** Sum of the meter's values over those events (exact decimal string). */
  meterUnits: string;
  /** Credits deducted now (exact decimal string); may be `"0"` while the fraction accumulates. */
  credits: string;
  /** The ledger entry, or undefined when nothing whole enough to deduct yet. */
  ledgerEntryId: string | undefined;
  at: string;
}

/** Meter values are read exactly at this many decimals (tokens are integers; decimals are allowed). */
const VALUE_DECIMALS = 12;
const VALUE_SCALE = 10n ** BigInt(VALUE_DECIMALS);

/**
 * Meters and their deduction of credits. After an ingest, each linked meter sums its events'
 * values per customer and, `meterDelayMs` later, deducts `sum / meterUnitsPerCredit` credits in
 * one ledger entry (`credit.deducted`, `reference_type: "meter"`).
 *
 * Exactness: with values scaled to integers V (value × 10¹²) and `meterUnitsPerCredit = n / d`,
 * the credit units owed (1 unit = 10⁻¹² credit) are `V × d / n`. Each deduction takes the whole
 * part `floor((V × d + carry) / n)` and keeps `carry = (V × d + carry) mod n` — an integer
 * numerator over the fixed denominator n, per (meter, customer) — for the next one. So after any
 * number of batches, the total deducted is exactly `floor(ΣV × d / n)` credit units: the same
 * as one deduction of all the usage at once, never off by more than one unit, never a float.
 */
export class Meters {
  private readonly meters = new Map<string, Meter>();
  private readonly links = new Map<string, MeterLink>();
  private readonly carry = new Map<string, bigint>();
  private readonly deductions: MeterDeduction[] = [];

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
    private readonly credits: CreditLedger,
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

  /** Links a meter to a credit entitlement (replacing any previous link of that meter). */
  link(meterId: string, entitlementId: string, meterUnitsPerCredit: unknown): MeterLink {
    const meter = this.meter(meterId);
    this.catalog.entitlement(entitlementId);
    const ratio = readDecimal(meterUnitsPerCredit);
    if (typeof ratio === 'string' || ratio.mantissa <= 0n) {
      throw invalid(
        `meter_units_per_credit must be a positive decimal string (got ${describe(meterUnitsPerCredit)}).`,
      );
    }
    if (meter.aggregation.type !== 'sum' && meter.aggregation.type !== 'count') {
      throw invalid(
        `Only sum and count meters can deduct credits (meter ${meter.id} is ${meter.aggregation.type}).`,
      );
    }
    const link: MeterLink = {
      meterId,
      entitlementId,
      meterUnitsPerCredit: formatScaled(ratio.mantissa, ratio.decimals),
      numerator: ratio.mantissa,
      denominator: 10n ** BigInt(ratio.decimals),
    };
    this.links.set(meterId, link);
    return link;
  }

  /** Removes a meter's link (a usage-based price that declared it changed); its carry stays. */
  unlink(meterId: string): void {
    this.links.delete(meterId);
  }

  linkOf(meterId: string): MeterLink | undefined {
    return this.links.get(meterId);
  }

  /** Whether `event` counts for `meter` (event name and filter). */
  matches(meter: Meter, event: StoredEvent): boolean {
    return (
      event.event_name === meter.event_name && (!meter.filter || passes(meter.filter, event.metadata ?? {}))
    );
  }

  /** Schedules the deductions for freshly ingested events. */
  ingested(events: readonly StoredEvent[]): void {
    for (const link of this.links.values()) {
      const meter = this.meters.get(link.meterId);
      if (!meter) continue;
      const perCustomer = new Map<string, { value: bigint; eventIds: string[] }>();
      for (const event of events) {
        if (!this.matches(meter, event)) continue;
        const value = meterValue(meter, event);
        const group = perCustomer.get(event.customer_id) ?? { value: 0n, eventIds: [] };
        group.value += value;
        group.eventIds.push(event.event_id);
        perCustomer.set(event.customer_id, group);
      }
      for (const [customerId, group] of perCustomer) {
        this.runtime.later(this.delayMs(), () => this.deduct(link, customerId, group.value, group.eventIds));
      }
    }
  }

  private deduct(link: MeterLink, customerId: string, value: bigint, eventIds: string[]): void {
    const carryKey = `${link.meterId}\u0000${customerId}`;
    // credit units = (value / 10^12) / (numerator / denominator) × 10^12 = value × denominator / numerator
    const owed =
      value * link.denominator * (UNITS_PER_CREDIT / VALUE_SCALE) + (this.carry.get(carryKey) ?? 0n);
    const units: CreditUnits = owed / link.numerator;
    this.carry.set(carryKey, owed % link.numerator);
    let ledgerEntryId: string | undefined;
    if (units > 0n) {
      ledgerEntryId = this.credits.record({
        customerId,
        entitlementId: link.entitlementId,
        direction: 'debit',
        amount: units,
        transactionType: 'credit_deducted',
        description: `Usage of meter ${link.meterId}`,
        referenceId: link.meterId,
        referenceType: 'meter',
        metadata: { meter_id: link.meterId, event_count: eventIds.length },
        allowOverage: true,
      }).id;
    }
    this.deductions.push({
      meterId: link.meterId,
      customerId,
      creditEntitlementId: link.entitlementId,
      eventIds,
      meterUnits: formatScaled(value, VALUE_DECIMALS),
      credits: formatCreditUnits(units),
      ledgerEntryId,
      at: this.runtime.iso(),
    });
  }

  deductionsList(): MeterDeduction[] {
    return [...this.deductions];
  }
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
