import type { Step } from './apply.js';
import type { EntitlementPlan, MeterPlan, ProductPlan, SetupPlan } from './plan.js';

/** Column widths of the report, fixed from the plan so that progress lines align as they come. */
export interface Columns {
  object: number;
  key: number;
  detail: number;
  status: number;
}

const HEADER = { status: 'STATUS', object: 'OBJECT', key: 'KEY', detail: 'SETTINGS' };

function pad(text: string, width: number): string {
  return text.length >= width ? text : text + ' '.repeat(width - text.length);
}

/** What a meter is: its aggregation, its rate, the weights of the models it sums. */
export function meterDetail(meter: MeterPlan): string {
  const rate =
    meter.unitsPerCredit === undefined
      ? 'free (not linked)'
      : `${meter.unitsPerCredit} ${meter.measurementUnit}/credit`;
  const weights = meter.models
    .filter((entry) => entry.weight !== 1n)
    .map((entry) => `${entry.model}×${entry.weight}`)
    .join(' ');
  return `sum(tokens), ${rate}${weights ? `; ${weights}` : ''}`;
}

export function entitlementDetail(entitlement: EntitlementPlan): string {
  return `${entitlement.unit}, USD, precision ${entitlement.precision}, never expires, overage off`;
}

export function productDetail(product: ProductPlan): string {
  const period = product.interval ? `/${product.interval.toLowerCase()}` : '';
  const credits = product.credits === undefined ? '' : ` → ${product.credits} credits`;
  return `$${(product.priceCents / 100).toFixed(2)}${period}${credits}`;
}

export function meteringDetail(plan: SetupPlan): string {
  const linked = plan.meters.filter((meter) => meter.unitsPerCredit !== undefined).length;
  return `$0/month, bills ${linked} meters in ${plan.entitlement.name}`;
}

/** The rows a plan describes, before anything is read from Dodo (an offline `--dry-run`). */
export function plannedSteps(plan: SetupPlan): Step[] {
  const status = 'planned' as const;
  return [
    {
      object: 'credit entitlement',
      key: plan.entitlement.name,
      detail: entitlementDetail(plan.entitlement),
      status,
    },
    ...plan.meters.map(
      (meter): Step => ({ object: 'meter', key: meter.eventName, detail: meterDetail(meter), status }),
    ),
    ...(plan.metering
      ? [{ object: 'metering product', key: plan.metering.key, detail: meteringDetail(plan), status } as Step]
      : []),
    ...plan.topUps.map(
      (product): Step => ({
        object: 'top-up product',
        key: product.key,
        detail: productDetail(product),
        status,
      }),
    ),
    ...plan.plans.map(
      (product): Step => ({
        object: 'plan product',
        key: product.key,
        detail: productDetail(product),
        status,
      }),
    ),
  ];
}

export function columnsFor(rows: readonly Step[]): Columns {
  const width = (pick: (step: Step) => string, header: string) =>
    Math.max(header.length, ...rows.map((step) => pick(step).length));
  return {
    status: Math.max(HEADER.status.length, 'would update'.length),
    object: width((step) => step.object, HEADER.object),
    key: width((step) => step.key, HEADER.key),
    detail: width((step) => step.detail, HEADER.detail),
  };
}

export function headerLine(columns: Columns): string {
  return `${pad(HEADER.status, columns.status)}  ${pad(HEADER.object, columns.object)}  ${pad(HEADER.key, columns.key)}  ${pad(HEADER.detail, columns.detail)}  ID`.trimEnd();
}

/** One line per object: status, what, key, settings, id, and why when it changed or failed. */
export function stepLine(step: Step, columns: Columns): string {
  const line = `${pad(step.status, columns.status)}  ${pad(step.object, columns.object)}  ${pad(step.key, columns.key)}  ${pad(step.detail, columns.detail)}  ${step.id ?? ''}`;
  const why = step.reason ? `\n${' '.repeat(columns.status + 2)}↳ ${step.reason}` : '';
  return line.trimEnd() + why;
}

/** A whole table, for `--dry-run`. */
export function table(steps: readonly Step[]): string {
  const columns = columnsFor(steps);
  return [headerLine(columns), ...steps.map((step) => stepLine(step, columns))].join('\n');
}

/** `3 created, 9 unchanged`: the counts of each status, in a stable order. */
export function summary(steps: readonly Step[]): string {
  const order = [
    'planned',
    'created',
    'updated',
    'unchanged',
    'would create',
    'would update',
    'conflict',
    'failed',
  ];
  const counts = new Map<string, number>();
  for (const step of steps) counts.set(step.status, (counts.get(step.status) ?? 0) + 1);
  return order
    .filter((status) => counts.has(status))
    .map((status) => `${counts.get(status)} ${status}`)
    .join(', ');
}
