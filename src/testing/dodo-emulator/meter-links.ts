import { describe, readDecimal } from './amounts.js';
import { invalid } from './errors.js';

/**
 * A meter → credit entitlement link, as a usage-based price declares it (`price.meters[]` with
 * `credit_entitlement_id` and `meter_units_per_credit`, the SDK's `AddMeterToPrice`). On Dodo
 * this link exists only inside a usage-based product's price, and it deducts credits only from
 * customers subscribed to that product ("Bill usage in Credits",
 * https://docs.dodopayments.com/features/credit-based-billing).
 */
export interface MeterLink {
  productId: string;
  meterId: string;
  entitlementId: string;
  /** As given, e.g. `"4000"` or `"0.5"`. */
  meterUnitsPerCredit: string;
  /** `meterUnitsPerCredit = numerator / denominator`, both positive integers. */
  numerator: bigint;
  denominator: bigint;
  /** Meter units free per billing cycle before credits are deducted (`free_threshold`). */
  freeThreshold: bigint;
}

/** Reads `meter_units_per_credit`: a positive decimal, kept exact as a fraction. */
export function readMeterRate(value: unknown, field: string): { numerator: bigint; denominator: bigint } {
  const ratio = readDecimal(value);
  if (typeof ratio === 'string' || ratio.mantissa <= 0n) {
    throw invalid(`${field} must be a positive decimal string (got ${describe(value)}).`);
  }
  return { numerator: ratio.mantissa, denominator: 10n ** BigInt(ratio.decimals) };
}
