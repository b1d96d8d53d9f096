import type { DodoPayments } from 'dodopayments';
import { DODO_LIMITS } from '../../dodo-limits.js';
import { type CreditUnits, formatCreditUnits } from './amounts.js';
import { DodoEmulatorError, invalid, notFound } from './errors.js';
import { type MeterLink, readMeterRate } from './meter-links.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';

type Customer = DodoPayments.Customer;
type CreditEntitlement = DodoPayments.CreditEntitlements.CreditEntitlement;
type Product = DodoPayments.Product;
type Price = DodoPayments.Price;

type Meter = DodoPayments.Meter;

/** A credit entitlement attached to a product: how many credits one unit of it grants. */
export interface ProductCredits {
  entitlementId: string;
  credits: CreditUnits;
  /** `low_balance_threshold_percent` (0–100): when `credit.balance_low` fires for subscribers. */
  lowBalanceThresholdPercent: number | undefined;
}

/** Dodo's limits per product (`src/dodo-limits.ts` names the pages they rest on). */
const MAX_CREDITS_PER_PRODUCT = DODO_LIMITS.creditsPerProduct;
const MAX_METERS_PER_PRODUCT = DODO_LIMITS.metersPerProduct;

/** Customers, credit entitlements and products: the objects the rest refers to. */
export class Catalog {
  private readonly customers = new Map<string, Customer>();
  private readonly entitlements = new Map<string, CreditEntitlement>();
  private readonly products = new Map<string, Product>();
  private readonly productCredits = new Map<string, ProductCredits[]>();
  private readonly productMeters = new Map<string, MeterLink[]>();

  /** `findMeter(id)` finds a meter (404 when none): the meters are created after the catalog. */
  constructor(
    private readonly runtime: Runtime,
    private readonly findMeter: (meterId: string) => Meter,
  ) {}

  /** A meter, or 404. */
  meter(meterId: string): Meter {
    return this.findMeter(meterId);
  }

  createCustomer(input: unknown): Customer {
    const body = read.object(input, 'body');
    const email = read.string(body, 'email');
    if (!/^[^@\s]+@[^@\s]+$/.test(email))
      throw invalid(`email ${JSON.stringify(email)} is not an email address.`);
    const customer: Customer = {
      business_id: this.runtime.businessId,
      created_at: this.runtime.iso(),
      customer_id: this.runtime.id('cus'),
      email,
      name: read.optionalString(body, 'name') ?? email.split('@')[0] ?? email,
      metadata: read.metadata(body.metadata),
      phone_number: read.optionalString(body, 'phone_number') ?? null,
    };
    this.customers.set(customer.customer_id, customer);
    return customer;
  }

  customer(id: string): Customer {
    const customer = this.customers.get(id);
    if (!customer) throw notFound('Customer', id);
    return customer;
  }

  hasCustomer(id: string): boolean {
    return this.customers.has(id);
  }

  listCustomers(): Customer[] {
    return [...this.customers.values()].reverse();
  }

  /** For admin methods: the customer, or a clear error naming the unknown id. */
  requireCustomer(id: string, method: string): Customer {
    const customer = this.customers.get(id);
    if (!customer) {
      throw new DodoEmulatorError(
        `${method}: unknown customer ${JSON.stringify(id)}. Create it first with emulator.createCustomer({ email }).`,
      );
    }
    return customer;
  }

  requireEntitlement(id: string, method: string): CreditEntitlement {
    const entitlement = this.entitlements.get(id);
    if (!entitlement) {
      throw new DodoEmulatorError(
        `${method}: unknown credit entitlement ${JSON.stringify(id)}. Create it first with emulator.createCreditEntitlement().`,
      );
    }
    return entitlement;
  }

  createEntitlement(input: unknown): CreditEntitlement {
    const body = read.object(input, 'body');
    const name = read.string(body, 'name');
    const unit = read.string(body, 'unit');
    const precision = read.integer(body, 'precision');
    if (precision > 10) throw invalid(`precision must be between 0 and 10 (got ${precision}).`);
    const overageEnabled = read.optionalBoolean(body, 'overage_enabled');
    const rolloverEnabled = read.optionalBoolean(body, 'rollover_enabled');
    if (overageEnabled === undefined) throw invalid('overage_enabled is required.');
    if (rolloverEnabled === undefined) throw invalid('rollover_enabled is required.');
    const pricePerUnit = read.optionalString(body, 'price_per_unit');
    const currency = read.optionalString(body, 'currency');
    if (pricePerUnit !== undefined && currency === undefined) {
      throw invalid('currency is required when price_per_unit is set.');
    }
    if (overageEnabled && pricePerUnit === undefined)
      throw invalid('price_per_unit is required when overage_enabled is true.');
    const now = this.runtime.iso();
    const entitlement: CreditEntitlement = {
      id: this.runtime.id('cde'),
      business_id: this.runtime.businessId,
      created_at: now,
      updated_at: now,
      name,
      unit,
      precision,
      overage_enabled: overageEnabled,
      rollover_enabled: rolloverEnabled,
      overage_behavior: (read.optionalString(body, 'overage_behavior') ??
        'forgive_at_reset') as CreditEntitlement['overage_behavior'],
      currency: (currency ?? null) as CreditEntitlement['currency'],
      description: read.optionalString(body, 'description') ?? null,
      expires_after_days: (body.expires_after_days as number | undefined) ?? null,
      price_per_unit: pricePerUnit ?? null,
      overage_limit: overageLimit(body),
    };
    this.entitlements.set(entitlement.id, entitlement);
    return entitlement;
  }

  /**
   * `PATCH /credit-entitlements/{id}`: partial update. `precision` cannot change (Dodo: it would
   * invalidate existing balances).
   */
  updateEntitlement(id: string, input: unknown): CreditEntitlement {
    const entitlement = this.entitlement(id);
    const body = read.object(input, 'body');
    if (body.precision !== undefined) throw invalid('precision cannot be modified after creation.');
    const next: CreditEntitlement = { ...entitlement };
    const name = read.optionalString(body, 'name');
    if (name !== undefined) next.name = name;
    const unit = read.optionalString(body, 'unit');
    if (unit !== undefined) next.unit = unit;
    const overage = read.optionalBoolean(body, 'overage_enabled');
    if (overage !== undefined) next.overage_enabled = overage;
    const rollover = read.optionalBoolean(body, 'rollover_enabled');
    if (rollover !== undefined) next.rollover_enabled = rollover;
    if ('expires_after_days' in body)
      next.expires_after_days = (body.expires_after_days as number | null) ?? null;
    if ('description' in body) next.description = read.optionalString(body, 'description') ?? null;
    if ('currency' in body)
      next.currency = (read.optionalString(body, 'currency') ?? null) as CreditEntitlement['currency'];
    if ('price_per_unit' in body) next.price_per_unit = read.optionalString(body, 'price_per_unit') ?? null;
    if ('overage_limit' in body) next.overage_limit = overageLimit(body);
    if (next.price_per_unit && !next.currency)
      throw invalid('currency is required when price_per_unit is set.');
    if (next.overage_enabled && !next.price_per_unit)
      throw invalid('price_per_unit is required when overage_enabled is true.');
    next.updated_at = this.runtime.iso();
    this.entitlements.set(id, next);
    return next;
  }

  entitlement(id: string): CreditEntitlement {
    const entitlement = this.entitlements.get(id);
    if (!entitlement) throw notFound('Credit entitlement', id);
    return entitlement;
  }

  listEntitlements(): CreditEntitlement[] {
    return [...this.entitlements.values()].reverse();
  }

  /** Creates a product, with the credits it attaches and the meter links its usage-based price declares. */
  createProduct(input: unknown): Product {
    const body = read.object(input, 'body');
    const name = read.string(body, 'name');
    const price = read.object(body.price, 'price') as unknown as Price;
    const taxCategory = read.string(body, 'tax_category') as Product['tax_category'];
    const isRecurring = checkPrice(price);
    const { credits, mappings } = this.attachCredits(body.credit_entitlements ?? []);
    const productId = this.runtime.id('pdt');
    const meterLinks = this.meterLinksOf(productId, price, credits);
    const now = this.runtime.iso();
    const product: Product = {
      brand_id: this.runtime.brandId,
      business_id: this.runtime.businessId,
      created_at: now,
      updated_at: now,
      credit_entitlements: mappings,
      entitlements: [],
      is_recurring: isRecurring,
      license_key_enabled: false,
      metadata: read.metadata(body.metadata),
      price,
      product_id: productId,
      tax_category: taxCategory,
      name,
      description: read.optionalString(body, 'description') ?? null,
      addons: (body.addons as string[] | undefined) ?? null,
    };
    this.products.set(product.product_id, product);
    this.productCredits.set(product.product_id, credits);
    this.productMeters.set(product.product_id, meterLinks);
    return product;
  }

  /**
   * `PATCH /products/{id}`: the fields given replace the product's (`credit_entitlements` and
   * `price` entirely). The meter links are checked against the credits the product ends up with.
   */
  updateProduct(id: string, input: unknown): Product {
    const product = this.product(id);
    const body = read.object(input, 'body');
    let price = product.price;
    if (body.price !== undefined && body.price !== null) {
      price = read.object(body.price, 'price') as unknown as Price;
      const isRecurring = checkPrice(price);
      if (isRecurring !== product.is_recurring) {
        throw invalid('price.type cannot change between one-time and recurring on an existing product.');
      }
    }
    let credits = this.creditsOf(id);
    let mappings = product.credit_entitlements;
    if (body.credit_entitlements !== undefined && body.credit_entitlements !== null) {
      ({ credits, mappings } = this.attachCredits(body.credit_entitlements));
    }
    // Every check passes before anything changes.
    const meterLinks = this.meterLinksOf(id, price, credits);
    product.price = price;
    product.credit_entitlements = mappings;
    this.productCredits.set(id, credits);
    this.productMeters.set(id, meterLinks);
    if (body.metadata !== undefined && body.metadata !== null)
      product.metadata = read.metadata(body.metadata);
    const name = read.optionalString(body, 'name');
    if (name !== undefined) product.name = name;
    if (body.description !== undefined)
      product.description = read.optionalString(body, 'description') ?? null;
    const taxCategory = read.optionalString(body, 'tax_category');
    if (taxCategory !== undefined) product.tax_category = taxCategory as Product['tax_category'];
    product.updated_at = this.runtime.iso();
    return product;
  }

  private attachCredits(attachments: unknown): {
    credits: ProductCredits[];
    mappings: DodoPayments.CreditEntitlementMappingResponse[];
  } {
    if (!Array.isArray(attachments)) throw invalid('credit_entitlements must be an array.');
    if (attachments.length > MAX_CREDITS_PER_PRODUCT) {
      throw invalid(`At most ${MAX_CREDITS_PER_PRODUCT} credit entitlements can be attached to a product.`);
    }
    const credits: ProductCredits[] = [];
    const mappings: DodoPayments.CreditEntitlementMappingResponse[] = attachments.map((raw, index) => {
      const attach = read.object(raw, `credit_entitlements[${index}]`);
      const entitlement = this.entitlement(read.string(attach, 'credit_entitlement_id'));
      const amount = read.credits(
        attach.credits_amount,
        `credit_entitlements[${index}].credits_amount`,
        entitlement.precision,
      );
      const percent = attach.low_balance_threshold_percent;
      if (
        percent !== undefined &&
        percent !== null &&
        (typeof percent !== 'number' || !Number.isInteger(percent) || percent < 0 || percent > 100)
      ) {
        throw invalid(
          `credit_entitlements[${index}].low_balance_threshold_percent must be an integer 0–100.`,
        );
      }
      if (credits.some((entry) => entry.entitlementId === entitlement.id)) {
        throw invalid(`credit_entitlements[${index}]: ${entitlement.id} is attached twice.`);
      }
      credits.push({
        entitlementId: entitlement.id,
        credits: amount,
        lowBalanceThresholdPercent: typeof percent === 'number' ? percent : undefined,
      });
      return {
        id: this.runtime.id('cem'),
        credit_entitlement_id: entitlement.id,
        credit_entitlement_name: entitlement.name,
        credit_entitlement_unit: entitlement.unit,
        credits_amount: formatCreditUnits(amount),
        overage_behavior: entitlement.overage_behavior,
        overage_enabled: entitlement.overage_enabled,
        proration_behavior: 'prorate',
        rollover_enabled: entitlement.rollover_enabled,
        trial_credits_expire_after_trial: false,
        low_balance_threshold_percent: (percent as number | undefined) ?? null,
      };
    });
    return { credits, mappings };
  }

  /**
   * The meter → credit entitlement links a usage-based price declares (`price.meters[]`), checked
   * the way Dodo's product form builds them: at most `MAX_METERS_PER_PRODUCT` meters, each an
   * existing meter, and a meter billed in credits names an entitlement attached to this same
   * product (the credit is attached, then the meter is pointed at it), with its
   * `meter_units_per_credit`.
   */
  private meterLinksOf(productId: string, price: Price, credits: readonly ProductCredits[]): MeterLink[] {
    if (price.type !== 'usage_based_price') return [];
    const meters = price.meters ?? [];
    if (!Array.isArray(meters)) throw invalid('price.meters must be an array.');
    if (meters.length > MAX_METERS_PER_PRODUCT) {
      throw invalid(
        `A usage-based product can carry at most ${MAX_METERS_PER_PRODUCT} meters (got ${meters.length}).`,
      );
    }
    const links: MeterLink[] = [];
    const seen = new Set<string>();
    for (const [index, entry] of meters.entries()) {
      const at = `price.meters[${index}]`;
      const meter = this.meter(read.string(entry as unknown as read.Body, 'meter_id'));
      if (seen.has(meter.id)) throw invalid(`${at}: meter ${meter.id} appears twice.`);
      seen.add(meter.id);
      const freeThreshold = entry.free_threshold ?? 0;
      if (!Number.isSafeInteger(freeThreshold) || freeThreshold < 0) {
        throw invalid(`${at}.free_threshold must be an integer >= 0.`);
      }
      if (!entry.credit_entitlement_id) continue;
      this.entitlement(entry.credit_entitlement_id);
      if (!credits.some((attached) => attached.entitlementId === entry.credit_entitlement_id)) {
        throw invalid(
          `${at}.credit_entitlement_id ${entry.credit_entitlement_id} is not attached to this product: attach it in credit_entitlements first.`,
        );
      }
      if (entry.meter_units_per_credit === undefined || entry.meter_units_per_credit === null) {
        throw invalid(`${at}.meter_units_per_credit is required when credit_entitlement_id is set.`);
      }
      if (meter.aggregation.type !== 'sum' && meter.aggregation.type !== 'count') {
        throw invalid(
          `${at}: only sum and count meters can deduct credits (${meter.id} is ${meter.aggregation.type}).`,
        );
      }
      const rate = readMeterRate(entry.meter_units_per_credit, `${at}.meter_units_per_credit`);
      links.push({
        productId,
        meterId: meter.id,
        entitlementId: entry.credit_entitlement_id,
        meterUnitsPerCredit: entry.meter_units_per_credit,
        ...rate,
        freeThreshold: BigInt(freeThreshold),
      });
    }
    return links;
  }

  /** The credit-billed meter links of a product's usage-based price. */
  meterLinks(productId: string): MeterLink[] {
    return this.productMeters.get(productId) ?? [];
  }

  product(id: string): Product {
    const product = this.products.get(id);
    if (!product) throw notFound('Product', id);
    return product;
  }

  /** Credits one unit of the product grants, per entitlement. */
  creditsOf(productId: string): ProductCredits[] {
    return this.productCredits.get(productId) ?? [];
  }

  listProducts(recurring: boolean | undefined): DodoPayments.ProductListResponse[] {
    return [...this.products.values()]
      .filter((product) => recurring === undefined || product.is_recurring === recurring)
      .reverse()
      .map((product) => ({
        business_id: product.business_id,
        created_at: product.created_at,
        updated_at: product.updated_at,
        entitlements: [],
        is_recurring: product.is_recurring,
        metadata: product.metadata,
        product_id: product.product_id,
        tax_category: product.tax_category,
        name: product.name ?? null,
        description: product.description ?? null,
        currency: product.price.currency,
        price: amountOf(product.price),
        price_detail: product.price,
        tax_inclusive: product.price.tax_inclusive ?? null,
      }));
  }
}

/** `overage_limit`: the most credits usage may take beyond a zero balance (none: no limit). */
function overageLimit(body: read.Body): number | null {
  const limit = body.overage_limit;
  if (limit === undefined || limit === null) return null;
  if (typeof limit !== 'number' || !Number.isFinite(limit) || limit < 0) {
    throw invalid(`overage_limit must be a number >= 0 (got ${JSON.stringify(limit)}).`);
  }
  return limit;
}

/** What one unit of a product costs, in the currency's minor units. */
export function amountOf(price: Price): number {
  return price.type === 'usage_based_price' ? price.fixed_price : price.price;
}

/** Validates a price and says whether it recurs. */
function checkPrice(price: Price): boolean {
  const type = (price as { type?: unknown }).type;
  if (type !== 'one_time_price' && type !== 'recurring_price' && type !== 'usage_based_price') {
    throw invalid('price.type must be one_time_price, recurring_price or usage_based_price.');
  }
  if (typeof price.currency !== 'string') throw invalid('price.currency is required.');
  const amount = amountOf(price);
  if (!Number.isSafeInteger(amount) || amount < 0) {
    throw invalid('price.price (or fixed_price) must be an integer amount of minor units (cents), >= 0.');
  }
  if (type === 'one_time_price') return false;
  const recurring = price as DodoPayments.Price.RecurringPrice;
  if (!Number.isSafeInteger(recurring.payment_frequency_count) || recurring.payment_frequency_count < 1) {
    throw invalid('price.payment_frequency_count must be an integer >= 1.');
  }
  if (!['Day', 'Week', 'Month', 'Year'].includes(recurring.payment_frequency_interval)) {
    throw invalid('price.payment_frequency_interval must be Day, Week, Month or Year.');
  }
  return true;
}
