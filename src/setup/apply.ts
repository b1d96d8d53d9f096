import type DodoPayments from 'dodopayments';
import type { EntitlementPlan, MeterPlan, ProductPlan, SetupPlan } from './plan.js';
import {
  entitlementDetail as describeEntitlement,
  meterDetail,
  meteringDetail,
  productDetail,
} from './report.js';

type CreditEntitlement = DodoPayments.CreditEntitlements.CreditEntitlement;
type Meter = DodoPayments.Meter;
type Product = DodoPayments.Product;
type Price = DodoPayments.Price;

/** What happened (or, on a dry run, would happen) to one object. */
export type StepStatus =
  | 'planned'
  | 'created'
  | 'unchanged'
  | 'updated'
  | 'would create'
  | 'would update'
  | 'conflict'
  | 'failed';

export type ObjectKind =
  | 'credit entitlement'
  | 'meter'
  | 'metering product'
  | 'top-up product'
  | 'plan product';

/** One line of the report: one object. */
export interface Step {
  object: ObjectKind;
  /** How it is matched: the entitlement's name, the meter's event name, the product's `elb_key`. */
  key: string;
  /** What it is, e.g. `sum(tokens), 4000 tokens per credit` or `$5.00 → 500 credits`. */
  detail: string;
  status: StepStatus;
  id?: string;
  /** Why: the fields that changed, the conflict, or the error. */
  reason?: string;
}

export interface ApplyOptions {
  /** Read what exists and report what would change, without changing anything. */
  dryRun?: boolean;
  /** Called as each step completes (the progress display). */
  onStep?: (step: Step) => void;
}

export interface SetupResult {
  ok: boolean;
  steps: Step[];
  /**
   * Ids the app needs: `creditEntitlementId`, `usagePlanProductId` (the API account product each
   * customer subscribes to, see `createApiAccountCheckout`), and every product id by key.
   */
  ids: {
    creditEntitlementId: string | undefined;
    usagePlanProductId: string | undefined;
    products: Record<string, string>;
  };
}

/** Thrown by a step that failed; carries the step for the report. */
export class SetupStepError extends Error {
  constructor(
    readonly step: Step,
    options: { cause?: unknown },
  ) {
    super(`${step.object} ${step.key}: ${step.reason}`, options);
    this.name = 'SetupStepError';
  }
}

const PAGE_SIZE = 100;
/** Placeholder id of an object a dry run would create. */
const NEW = '(new)';

/** Every page of a Dodo list (page numbers from 0, as Dodo counts them). */
async function listAll<T>(
  list: (query: { page_number: number; page_size: number }) => PromiseLike<{ items: T[] }>,
): Promise<T[]> {
  const all: T[] = [];
  for (let page = 0; ; page++) {
    const { items } = await list({ page_number: page, page_size: PAGE_SIZE });
    all.push(...items);
    if (items.length < PAGE_SIZE) return all;
  }
}

/** Exact equality of two decimal strings (`"4000"` equals `"4000.00"`). */
export function sameDecimal(
  a: string | number | null | undefined,
  b: string | number | null | undefined,
): boolean {
  const normal = (value: string | number | null | undefined) => {
    if (value === null || value === undefined) return undefined;
    const match = /^(-?)(\d+)(?:\.(\d*))?$/.exec(String(value).trim());
    if (!match) return String(value);
    const [, sign, whole = '', fraction = ''] = match;
    const digits = `${whole.replace(/^0+(?=\d)/, '')}.${fraction.replace(/0+$/, '')}`.replace(/\.$/, '');
    return digits === '0' ? '0' : `${sign}${digits}`;
  };
  return normal(a) === normal(b);
}

function elbKey(metadata: Record<string, unknown> | null | undefined): string | undefined {
  const key = metadata?.elb_key;
  return typeof key === 'string' ? key : undefined;
}

interface Existing {
  entitlements: CreditEntitlement[];
  meters: Meter[];
  products: Map<string, Product[]>;
}

async function readExisting(dodo: DodoPayments): Promise<Existing> {
  const [entitlements, meters, listed] = await Promise.all([
    listAll((query) => dodo.creditEntitlements.list(query)),
    listAll((query) => dodo.meters.list(query)),
    listAll((query) => dodo.products.list(query)),
  ]);
  const keyed = listed.filter((product) => elbKey(product.metadata) !== undefined);
  const full = await Promise.all(keyed.map((product) => dodo.products.retrieve(product.product_id)));
  const products = new Map<string, Product[]>();
  for (const product of full) {
    const key = elbKey(product.metadata) as string;
    products.set(key, [...(products.get(key) ?? []), product]);
  }
  return { entitlements, meters, products };
}

function entitlementConflict(found: CreditEntitlement, wanted: EntitlementPlan): string | undefined {
  if (found.precision !== wanted.precision) {
    return `precision is ${found.precision}, the config wants ${wanted.precision} (Dodo cannot change a precision: rename one)`;
  }
  if (found.currency && found.currency !== wanted.currency) return `currency is ${found.currency}, not USD`;
  if (found.unit !== wanted.unit) return `unit is "${found.unit}", the config wants "${wanted.unit}"`;
  return undefined;
}

function entitlementChanges(found: CreditEntitlement, wanted: EntitlementPlan): string[] {
  const changes: string[] = [];
  if (found.overage_enabled) changes.push('overage off');
  if (found.rollover_enabled) changes.push('rollover off');
  if (found.expires_after_days !== null && found.expires_after_days !== undefined)
    changes.push('never expires');
  if (!found.currency) changes.push('currency USD');
  if (!sameDecimal(found.price_per_unit, wanted.pricePerUnit))
    changes.push(`$${wanted.pricePerUnit} per credit`);
  return changes;
}

function meterConflict(found: Meter[], wanted: MeterPlan): string | undefined {
  if (found.length > 1) return `${found.length} meters share the event name ${wanted.eventName}`;
  const [meter] = found;
  if (!meter) return undefined;
  const { type, key } = meter.aggregation;
  if (type !== 'sum' || key !== 'tokens') {
    return `the existing meter ${meter.id} aggregates ${type}${key ? `(${key})` : ''}, not sum(tokens)`;
  }
  if (meter.filter) return `the existing meter ${meter.id} has a filter`;
  return undefined;
}

function productConflict(
  found: Product[],
  key: string,
  recurring: boolean,
  usageBased = false,
): string | undefined {
  if (found.length > 1) return `${found.length} products carry elb_key "${key}"`;
  const [product] = found;
  if (!product) return undefined;
  if (usageBased && product.price.type !== 'usage_based_price') {
    return `the existing product ${product.product_id} is not usage-based`;
  }
  if (!usageBased && product.is_recurring !== recurring) {
    return `the existing product ${product.product_id} is ${product.is_recurring ? 'recurring' : 'one-time'}`;
  }
  return undefined;
}

function oneTimePrice(cents: number): Price {
  return {
    type: 'one_time_price',
    price: cents,
    currency: 'USD',
    discount: 0,
    purchasing_power_parity: false,
  };
}

function recurringPrice(cents: number, interval: NonNullable<ProductPlan['interval']>): Price {
  return {
    type: 'recurring_price',
    price: cents,
    currency: 'USD',
    discount: 0,
    purchasing_power_parity: false,
    payment_frequency_count: 1,
    payment_frequency_interval: interval,
    subscription_period_count: 10,
    subscription_period_interval: 'Year',
  };
}

function productChanges(found: Product, wanted: ProductPlan, price: Price, entitlementId: string): string[] {
  const changes: string[] = [];
  if (found.name !== wanted.name) changes.push(`name "${wanted.name}"`);
  const current = found.price as Price & { price?: number; payment_frequency_interval?: string };
  if (
    current.type !== price.type ||
    current.currency !== price.currency ||
    current.price !== wanted.priceCents
  ) {
    changes.push(`price ${wanted.priceCents} cents`);
  } else if (wanted.interval && current.payment_frequency_interval !== wanted.interval) {
    changes.push(`every ${wanted.interval}`);
  }
  const attached = found.credit_entitlements ?? [];
  const wantsCredits = wanted.credits !== undefined;
  const [first] = attached;
  const creditsMatch = wantsCredits
    ? attached.length === 1 &&
      first?.credit_entitlement_id === entitlementId &&
      sameDecimal(first.credits_amount, wanted.credits)
    : attached.length === 0;
  if (!creditsMatch) changes.push(wantsCredits ? `${wanted.credits} credits` : 'no credits');
  return changes;
}

/**
 * Creates or updates, idempotently, what `plan` describes on the Dodo account of `dodo`: the
 * credit entitlement (matched by name), the meters (by event name), the metering product, the
 * top-up and plan products (by `metadata.elb_key`). Reads everything first; when anything
 * conflicts, reports every conflict and changes nothing. Otherwise applies each step in order,
 * reporting each as it completes; a failing step throws `SetupStepError`.
 */
export async function applySetup(
  plan: SetupPlan,
  dodo: DodoPayments,
  options: ApplyOptions = {},
): Promise<SetupResult> {
  const dryRun = options.dryRun ?? false;
  const steps: Step[] = [];
  const report = (step: Step) => {
    steps.push(step);
    options.onStep?.(step);
  };
  const ids: SetupResult['ids'] = {
    creditEntitlementId: undefined,
    usagePlanProductId: undefined,
    products: {},
  };
  const existing = await readExisting(dodo);

  const namedEntitlements = existing.entitlements.filter((item) => item.name === plan.entitlement.name);
  const entitlementDetail = describeEntitlement(plan.entitlement);
  const meterMatches = plan.meters.map((meter) =>
    existing.meters.filter((item) => item.event_name === meter.eventName),
  );
  const conflicts: Step[] = [];
  if (namedEntitlements.length > 1) {
    conflicts.push({
      object: 'credit entitlement',
      key: plan.entitlement.name,
      detail: entitlementDetail,
      status: 'conflict',
      reason: `${namedEntitlements.length} credit entitlements are named "${plan.entitlement.name}"`,
    });
  } else if (namedEntitlements[0]) {
    const reason = entitlementConflict(namedEntitlements[0], plan.entitlement);
    if (reason) {
      conflicts.push({
        object: 'credit entitlement',
        key: plan.entitlement.name,
        detail: entitlementDetail,
        status: 'conflict',
        id: namedEntitlements[0].id,
        reason,
      });
    }
  }
  plan.meters.forEach((meter, index) => {
    const reason = meterConflict(meterMatches[index] ?? [], meter);
    if (reason) {
      conflicts.push({
        object: 'meter',
        key: meter.eventName,
        detail: meterDetail(meter),
        status: 'conflict',
        id: meterMatches[index]?.[0]?.id,
        reason,
      });
    }
  });
  const productGroups: [ObjectKind, ProductPlan[], boolean][] = [
    ['top-up product', plan.topUps, false],
    ['plan product', plan.plans, true],
  ];
  for (const [object, products, recurring] of productGroups) {
    for (const product of products) {
      const reason = productConflict(existing.products.get(product.key) ?? [], product.key, recurring);
      if (reason)
        conflicts.push({ object, key: product.key, detail: product.name, status: 'conflict', reason });
    }
  }
  if (plan.metering) {
    const reason = productConflict(
      existing.products.get(plan.metering.key) ?? [],
      plan.metering.key,
      true,
      true,
    );
    if (reason) {
      conflicts.push({
        object: 'metering product',
        key: plan.metering.key,
        detail: '',
        status: 'conflict',
        reason,
      });
    }
  }
  if (conflicts.length > 0) {
    for (const step of conflicts) report(step);
    return { ok: false, steps, ids };
  }

  /** Runs one write, or on a dry run only says it would; a failure becomes a failed step. */
  const write = async <T>(step: Omit<Step, 'status'>, dryStatus: StepStatus, action: () => Promise<T>) => {
    if (dryRun) {
      report({ ...step, status: dryStatus });
      return undefined;
    }
    try {
      return await action();
    } catch (error) {
      const failed: Step = {
        ...step,
        status: 'failed',
        reason: error instanceof Error ? error.message : String(error),
      };
      report(failed);
      throw new SetupStepError(failed, { cause: error });
    }
  };

  // 1. The fiat credit entitlement.
  const wanted = plan.entitlement;
  const foundEntitlement = namedEntitlements[0];
  let entitlementId = foundEntitlement?.id ?? NEW;
  const entitlementStep = {
    object: 'credit entitlement' as const,
    key: wanted.name,
    detail: entitlementDetail,
  };
  if (!foundEntitlement) {
    const created = await write({ ...entitlementStep }, 'would create', () =>
      dodo.creditEntitlements.create({
        name: wanted.name,
        unit: wanted.unit,
        precision: wanted.precision,
        currency: wanted.currency,
        price_per_unit: wanted.pricePerUnit,
        overage_enabled: false,
        rollover_enabled: false,
        expires_after_days: null,
        description: wanted.description,
      }),
    );
    if (created) {
      entitlementId = created.id;
      report({ ...entitlementStep, status: 'created', id: created.id });
    }
  } else {
    const changes = entitlementChanges(foundEntitlement, wanted);
    if (changes.length === 0) {
      report({ ...entitlementStep, status: 'unchanged', id: foundEntitlement.id });
    } else {
      const step = { ...entitlementStep, id: foundEntitlement.id, reason: changes.join(', ') };
      const done = await write(step, 'would update', async () => {
        await dodo.creditEntitlements.update(foundEntitlement.id, {
          currency: wanted.currency,
          price_per_unit: wanted.pricePerUnit,
          overage_enabled: false,
          rollover_enabled: false,
          expires_after_days: null,
        });
        return true;
      });
      if (done) report({ ...step, status: 'updated' });
    }
  }
  ids.creditEntitlementId = entitlementId === NEW ? undefined : entitlementId;

  // 2. The meters (Dodo has no meter update: a matching event name and aggregation is the meter).
  const meterIds = new Map<string, string>();
  for (const [index, meter] of plan.meters.entries()) {
    const step = { object: 'meter' as const, key: meter.eventName, detail: meterDetail(meter) };
    const found = meterMatches[index]?.[0];
    if (found) {
      meterIds.set(meter.eventName, found.id);
      report({ ...step, status: 'unchanged', id: found.id });
      continue;
    }
    const created = await write(step, 'would create', () =>
      dodo.meters.create({
        name: meter.name,
        event_name: meter.eventName,
        measurement_unit: meter.measurementUnit,
        aggregation: { type: 'sum', key: 'tokens' },
        description: meter.description,
      }),
    );
    meterIds.set(meter.eventName, created?.id ?? NEW);
    if (created) report({ ...step, status: 'created', id: created.id });
  }

  // 3. The API account: a $0 usage-based product, the entitlement attached to it first (issuing
  // no credits per cycle: credits are bought in packs), then each meter billed in it at its rate.
  if (plan.metering) {
    const metering = plan.metering;
    const links = plan.meters
      .filter((meter) => meter.unitsPerCredit !== undefined)
      .map((meter) => ({
        meter_id: meterIds.get(meter.eventName) ?? NEW,
        credit_entitlement_id: entitlementId,
        meter_units_per_credit: meter.unitsPerCredit as string,
        free_threshold: 0,
      }));
    const attached = [{ credit_entitlement_id: entitlementId, credits_amount: '0' }];
    const price: Price = {
      type: 'usage_based_price',
      currency: 'USD',
      fixed_price: 0,
      discount: 0,
      purchasing_power_parity: false,
      payment_frequency_count: 1,
      payment_frequency_interval: 'Month',
      subscription_period_count: 10,
      subscription_period_interval: 'Year',
      meters: links,
    };
    const step = {
      object: 'metering product' as const,
      key: metering.key,
      detail: meteringDetail(plan),
    };
    const [found] = existing.products.get(metering.key) ?? [];
    if (!found) {
      const created = await write(step, 'would create', () =>
        dodo.products.create({
          name: metering.name,
          description: metering.description,
          tax_category: 'saas',
          price,
          credit_entitlements: attached,
          metadata: { elb_key: metering.key },
        }),
      );
      if (created) {
        ids.products[metering.key] = created.product_id;
        report({ ...step, status: 'created', id: created.product_id });
      }
    } else {
      ids.products[metering.key] = found.product_id;
      const current = found.price.type === 'usage_based_price' ? (found.price.meters ?? []) : [];
      const credits = found.credit_entitlements ?? [];
      const attachedRight =
        credits.length === 1 &&
        credits[0]?.credit_entitlement_id === entitlementId &&
        sameDecimal(credits[0]?.credits_amount, '0');
      const same =
        attachedRight &&
        current.length === links.length &&
        links.every((link) =>
          current.some(
            (item) =>
              item.meter_id === link.meter_id &&
              item.credit_entitlement_id === link.credit_entitlement_id &&
              sameDecimal(item.meter_units_per_credit, link.meter_units_per_credit),
          ),
        );
      if (same) {
        report({ ...step, status: 'unchanged', id: found.product_id });
      } else {
        const changed = links
          .filter(
            (link) =>
              !current.some(
                (item) =>
                  item.meter_id === link.meter_id &&
                  item.credit_entitlement_id === link.credit_entitlement_id &&
                  sameDecimal(item.meter_units_per_credit, link.meter_units_per_credit),
              ),
          )
          .map(
            (link) => plan.meters.find((meter) => meterIds.get(meter.eventName) === link.meter_id)?.eventName,
          );
        const reasons = [
          ...(attachedRight ? [] : [`${plan.entitlement.name} attached`]),
          ...(changed.length > 0 || current.length !== links.length
            ? [`rates of ${changed.join(', ') || 'removed meters'}`]
            : []),
        ];
        const updateStep = { ...step, id: found.product_id, reason: reasons.join(', ') };
        const done = await write(updateStep, 'would update', async () => {
          await dodo.products.update(found.product_id, { price, credit_entitlements: attached });
          return true;
        });
        if (done) report({ ...updateStep, status: 'updated' });
      }
    }
  }

  // 4. Top-up packs and subscription plans.
  for (const [object, products, recurring] of productGroups) {
    for (const product of products) {
      const price = recurring
        ? recurringPrice(product.priceCents, product.interval ?? 'Month')
        : oneTimePrice(product.priceCents);
      const credits =
        product.credits === undefined
          ? []
          : [{ credit_entitlement_id: entitlementId, credits_amount: product.credits }];
      const step = { object, key: product.key, detail: productDetail(product) };
      const [found] = existing.products.get(product.key) ?? [];
      if (!found) {
        const created = await write(step, 'would create', () =>
          dodo.products.create({
            name: product.name,
            description: product.description,
            tax_category: 'saas',
            price,
            credit_entitlements: credits,
            metadata: { elb_key: product.key },
          }),
        );
        if (created) {
          ids.products[product.key] = created.product_id;
          report({ ...step, status: 'created', id: created.product_id });
        }
        continue;
      }
      ids.products[product.key] = found.product_id;
      const changes = productChanges(found, product, price, entitlementId);
      if (changes.length === 0) {
        report({ ...step, status: 'unchanged', id: found.product_id });
        continue;
      }
      const updateStep = { ...step, id: found.product_id, reason: changes.join(', ') };
      const done = await write(updateStep, 'would update', async () => {
        await dodo.products.update(found.product_id, {
          name: product.name,
          price,
          credit_entitlements: credits,
        });
        return true;
      });
      if (done) report({ ...updateStep, status: 'updated' });
    }
  }
  ids.usagePlanProductId = plan.metering ? ids.products[plan.metering.key] : undefined;
  return { ok: true, steps, ids };
}
