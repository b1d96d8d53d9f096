import type { DodoPayments } from 'dodopayments';
import { type CreditUnits, formatCreditUnits } from './amounts.js';
import { DodoEmulatorError, invalid, notFound } from './errors.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';

type Customer = DodoPayments.Customer;
type CreditEntitlement = DodoPayments.CreditEntitlements.CreditEntitlement;
type Product = DodoPayments.Product;
type Price = DodoPayments.Price;

/** A credit entitlement attached to a product: how many credits one unit of it grants. */
export interface ProductCredits {
  entitlementId: string;
  credits: CreditUnits;
}

/** A meter → credit entitlement link declared on a usage-based price. */
export interface MeterLinkRequest {
  meterId: string;
  entitlementId: string;
  meterUnitsPerCredit: string;
}

/** Customers, credit entitlements and products: the objects the rest refers to. */
export class Catalog {
  private readonly customers = new Map<string, Customer>();
  private readonly entitlements = new Map<string, CreditEntitlement>();
  private readonly products = new Map<string, Product>();
  private readonly productCredits = new Map<string, ProductCredits[]>();

  constructor(private readonly runtime: Runtime) {}

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

  /** Creates a product; returns it with the meter links its usage-based price declares. */
  createProduct(input: unknown): { product: Product; meterLinks: MeterLinkRequest[] } {
    const body = read.object(input, 'body');
    const name = read.string(body, 'name');
    const price = read.object(body.price, 'price') as unknown as Price;
    const taxCategory = read.string(body, 'tax_category') as Product['tax_category'];
    const isRecurring = checkPrice(price);
    const { credits, mappings } = this.attachCredits(body.credit_entitlements ?? []);
    const meterLinks = this.meterLinksOf(price);
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
      product_id: this.runtime.id('pdt'),
      tax_category: taxCategory,
      name,
      description: read.optionalString(body, 'description') ?? null,
      addons: (body.addons as string[] | undefined) ?? null,
    };
    this.products.set(product.product_id, product);
    this.productCredits.set(product.product_id, credits);
    return { product, meterLinks };
  }

  /**
   * `PATCH /products/{id}`: the fields given replace the product's (`credit_entitlements` and
   * `price` entirely). Returns the meter links the new price declares and the meters the old
   * price linked that it no longer does.
   */
  updateProduct(
    id: string,
    input: unknown,
  ): { product: Product; meterLinks: MeterLinkRequest[]; unlinkedMeterIds: string[] } {
    const product = this.product(id);
    const body = read.object(input, 'body');
    const before = this.meterLinksOf(product.price).map((link) => link.meterId);
    let meterLinks = this.meterLinksOf(product.price);
    if (body.price !== undefined && body.price !== null) {
      const price = read.object(body.price, 'price') as unknown as Price;
      const isRecurring = checkPrice(price);
      if (isRecurring !== product.is_recurring) {
        throw invalid('price.type cannot change between one-time and recurring on an existing product.');
      }
      meterLinks = this.meterLinksOf(price);
      product.price = price;
    }
    if (body.credit_entitlements !== undefined && body.credit_entitlements !== null) {
      const { credits, mappings } = this.attachCredits(body.credit_entitlements);
      product.credit_entitlements = mappings;
      this.productCredits.set(id, credits);
    }
    if (body.metadata !== undefined && body.metadata !== null)
      product.metadata = read.metadata(body.metadata);
    const name = read.optionalString(body, 'name');
    if (name !== undefined) product.name = name;
    if (body.description !== undefined)
      product.description = read.optionalString(body, 'description') ?? null;
    const taxCategory = read.optionalString(body, 'tax_category');
    if (taxCategory !== undefined) product.tax_category = taxCategory as Product['tax_category'];
    product.updated_at = this.runtime.iso();
    const linked = new Set(meterLinks.map((link) => link.meterId));
    return { product, meterLinks, unlinkedMeterIds: before.filter((meterId) => !linked.has(meterId)) };
  }

  private attachCredits(attachments: unknown): {
    credits: ProductCredits[];
    mappings: DodoPayments.CreditEntitlementMappingResponse[];
  } {
    if (!Array.isArray(attachments)) throw invalid('credit_entitlements must be an array.');
    if (attachments.length > 5) throw invalid('At most 5 credit entitlements can be attached to a product.');
    const credits: ProductCredits[] = [];
    const mappings: DodoPayments.CreditEntitlementMappingResponse[] = attachments.map((raw, index) => {
      const attach = read.object(raw, `credit_entitlements[${index}]`);
      const entitlement = this.entitlement(read.string(attach, 'credit_entitlement_id'));
      const amount = read.credits(
        attach.credits_amount,
        `credit_entitlements[${index}].credits_amount`,
        entitlement.precision,
      );
      credits.push({ entitlementId: entitlement.id, credits: amount });
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
        low_balance_threshold_percent: (attach.low_balance_threshold_percent as number | undefined) ?? null,
      };
    });
    return { credits, mappings };
  }

  /** The meter → credit entitlement links a usage-based price declares (`price.meters[]`). */
  private meterLinksOf(price: Price): MeterLinkRequest[] {
    const meterLinks: MeterLinkRequest[] = [];
    if (price.type === 'usage_based_price') {
      for (const [index, meter] of (price.meters ?? []).entries()) {
        if (!meter.credit_entitlement_id) continue;
        this.entitlement(meter.credit_entitlement_id);
        if (!meter.meter_units_per_credit) {
          throw invalid(
            `price.meters[${index}].meter_units_per_credit is required when credit_entitlement_id is set.`,
          );
        }
        meterLinks.push({
          meterId: meter.meter_id,
          entitlementId: meter.credit_entitlement_id,
          meterUnitsPerCredit: meter.meter_units_per_credit,
        });
      }
    }
    return meterLinks;
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
