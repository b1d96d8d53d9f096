import type { DodoPayments } from 'dodopayments';
import { minorUnitDigits } from '../../currency.js';
import type { CreditUnits, ExactDecimal } from './amounts.js';
import { amountOf, type Catalog } from './catalog.js';
import type { CreditLedger } from './credits.js';
import { invalid, notFound } from './errors.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';
import type { WebhookSender } from './webhooks.js';

type Payment = DodoPayments.Payment;
type Refund = DodoPayments.Refund;
type Metadata = Record<string, string | number | boolean>;

export interface CartItem {
  productId: string;
  quantity: number;
  /** Per-entitlement credit overrides from the checkout's product cart. */
  credits?: Map<string, CreditUnits>;
  /** Price of one unit in the product's currency's minor units, instead of the product's (an on-demand charge). */
  price?: number;
  /** Whether paying it grants the product's credits. Default `true` (an on-demand charge grants none). */
  grantsCredits?: boolean;
}

/**
 * How payments are priced: Dodo's adaptive currency (customers pay in their local currency, the
 * merchant settles in the product's currency: https://docs.dodopayments.com/features/adaptive-currency)
 * and sales tax.
 */
export interface PricingRules {
  /** Units of each local currency per unit of the product's currency; none: adaptive pricing off. */
  exchangeRates: ReadonlyMap<string, ExactDecimal>;
  /** Sales tax added on top of the price, in percent. */
  taxPercent: ExactDecimal;
}

export interface NewPayment {
  customerId: string;
  cart: readonly CartItem[];
  checkoutSessionId?: string;
  subscriptionId?: string;
  metadata?: Metadata;
  /** Where granted credits come from: a one-time pack, or a subscription period. */
  grantSource: 'one_time' | 'subscription';
  grantSourceId?: string;
  /** Called after `payment.succeeded` and before the credits are granted (a subscription event). */
  beforeCredits?: () => void;
  /** The checkout's `billing_currency`: ignored while adaptive pricing is off (no exchange rates). */
  billingCurrency?: string;
  /**
   * A payment that does not succeed (an on-demand charge the card refuses, or that needs the
   * customer's authentication): recorded with that status, no credits granted; a failed one
   * sends `payment.failed`.
   */
  outcome?: 'failed' | 'requires_customer_action';
}

/**
 * Payments and refunds. A succeeded payment grants the credits its products carry
 * (`credit.added`) after `payment.succeeded`; a refund sends `refund.succeeded` and takes the
 * refunded share of those credits back out of the balance.
 */
export class Payments {
  private readonly payments = new Map<string, Payment>();
  private readonly refunds = new Map<string, Refund>();
  /** Minor units refunded so far, per payment and product. */
  private readonly refundedLines = new Map<string, Map<string, number>>();
  /** What each line of a payment cost before tax, in the product's currency, per payment. */
  private readonly lineBases = new Map<string, Map<string, number>>();

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
    private readonly credits: CreditLedger,
    private readonly webhooks: WebhookSender,
    private readonly pricing: PricingRules,
  ) {}

  /**
   * Records a succeeded payment, sends `payment.succeeded`, then grants the cart's credits (or
   * records the payment's `outcome` when it did not succeed).
   */
  succeed(input: NewPayment): Payment {
    const customer = this.catalog.customer(input.customerId);
    const products = input.cart.map((item) => ({ item, product: this.catalog.product(item.productId) }));
    const currency = products[0]?.product.price.currency ?? 'USD';
    const charged = this.price(
      products.reduce(
        (sum, { item, product }) => sum + (item.price ?? amountOf(product.price)) * item.quantity,
        0,
      ),
      currency,
      input.billingCurrency,
    );
    const payment: Payment = {
      billing: { country: 'US' },
      brand_id: this.runtime.brandId,
      business_id: this.runtime.businessId,
      created_at: this.runtime.iso(),
      currency: charged.currency as Payment['currency'],
      customer: {
        customer_id: customer.customer_id,
        email: customer.email,
        name: customer.name,
        metadata: customer.metadata ?? {},
        phone_number: customer.phone_number ?? null,
      },
      digital_products_delivered: false,
      disputes: [],
      is_multi_subscription: false,
      is_update_payment_method: false,
      metadata: input.metadata ?? {},
      payment_id: this.runtime.id('pay'),
      payment_provider: 'dodo',
      refunds: [],
      retry_attempt: 0,
      settlement_amount: charged.settlementAmount,
      settlement_currency: currency,
      settlement_tax: charged.settlementTax,
      subscription_ids: input.subscriptionId ? [input.subscriptionId] : [],
      total_amount: charged.total,
      checkout_session_id: input.checkoutSessionId ?? null,
      payment_method: 'card',
      card_last_four: '4242',
      card_network: 'VISA',
      product_cart: input.cart.map((item) => ({ product_id: item.productId, quantity: item.quantity })),
      refund_status: null,
      status: input.outcome ?? 'succeeded',
      subscription_id: input.subscriptionId ?? null,
      tax: charged.tax,
      updated_at: this.runtime.iso(),
    };
    this.payments.set(payment.payment_id, payment);
    this.lineBases.set(
      payment.payment_id,
      new Map(
        products.map(({ item, product }) => [
          item.productId,
          (item.price ?? amountOf(product.price)) * item.quantity,
        ]),
      ),
    );
    if (input.outcome !== undefined) {
      payment.error_code = input.outcome === 'failed' ? 'CARD_DECLINED' : 'AUTHENTICATION_REQUIRED';
      payment.error_message =
        input.outcome === 'failed'
          ? 'The card was declined.'
          : 'The payment needs the customer to authenticate it.';
      // Dodo documents no webhook for a payment waiting on the customer: only its status says so.
      if (input.outcome === 'failed')
        this.webhooks.emit('payment.failed', { payload_type: 'Payment', ...structuredClone(payment) });
      return payment;
    }
    this.webhooks.emit('payment.succeeded', { payload_type: 'Payment', ...structuredClone(payment) });
    input.beforeCredits?.();
    for (const item of input.cart) {
      if (item.grantsCredits === false) continue;
      for (const grant of this.catalog.creditsOf(item.productId)) {
        const credits = (item.credits?.get(grant.entitlementId) ?? grant.credits) * BigInt(item.quantity);
        if (credits <= 0n) continue;
        this.credits.grant({
          customerId: customer.customer_id,
          entitlementId: grant.entitlementId,
          amount: credits,
          transactionType: 'credit_added',
          description: `Credits of product ${item.productId} × ${item.quantity}`,
          referenceId: payment.payment_id,
          referenceType: 'payment',
          metadata: { product_id: item.productId, quantity: item.quantity },
          grantSource: input.grantSource,
          grantSourceId: input.grantSourceId ?? payment.payment_id,
        });
      }
    }
    return payment;
  }

  /**
   * The exchange rate a checkout's `billing_currency` uses: undefined when it needs none (the
   * product's own currency, or adaptive pricing off: Dodo then ignores `billing_currency`); 422
   * for a currency adaptive pricing does not offer.
   */
  rateOf(billingCurrency: string | undefined, currency: string): ExactDecimal | undefined {
    const rates = this.pricing.exchangeRates;
    if (billingCurrency === undefined || billingCurrency === currency || rates.size === 0) return undefined;
    const rate = rates.get(billingCurrency);
    if (!rate)
      throw invalid(`billing_currency ${billingCurrency} is not supported by adaptive pricing here.`);
    return rate;
  }

  /**
   * What the customer pays and what the merchant settles, in minor units. Tax is added on top of
   * the price. Under adaptive currency the customer pays the converted price plus Dodo's fee
   * (4% under $500, 3% to $1,500, 2% above: the default, fees borne by the customer) and its
   * tax, in their currency; the merchant settles the price and its tax in the product's
   * currency, whatever the customer paid.
   */
  private price(base: number, currency: string, billingCurrency: string | undefined) {
    const settlementTax = percentOf(base, this.pricing.taxPercent);
    const settled = { settlementAmount: base + settlementTax, settlementTax };
    const rates = this.pricing.exchangeRates;
    if (billingCurrency === undefined || billingCurrency === currency || rates.size === 0) {
      return { ...settled, currency, total: base + settlementTax, tax: settlementTax };
    }
    const rate = this.rateOf(billingCurrency, currency)!;
    // local minor = base / 10^from × rate × 10^to, rounded half up.
    const from = BigInt(minorUnitDigits(currency));
    const to = BigInt(minorUnitDigits(billingCurrency));
    const numerator = BigInt(base) * rate.mantissa * 10n ** to;
    const denominator = 10n ** (from + BigInt(rate.decimals));
    const converted = (2n * numerator + denominator) / (2n * denominator);
    const major = BigInt(base) / 10n ** from;
    const feePercent = major < 500n ? 4n : major <= 1500n ? 3n : 2n;
    const local = Number(converted + (converted * feePercent) / 100n);
    const tax = percentOf(local, this.pricing.taxPercent);
    return { ...settled, currency: billingCurrency, total: local + tax, tax };
  }

  get(id: string): Payment {
    const payment = this.payments.get(id);
    if (!payment) throw notFound('Payment', id);
    return payment;
  }

  /** The payment, or undefined (for admin methods). */
  find(id: string): Payment | undefined {
    return this.payments.get(id);
  }

  list(filter: { customerId?: string; subscriptionId?: string; status?: string }): Payment[] {
    return [...this.payments.values()]
      .filter(
        (payment) =>
          (filter.customerId === undefined || payment.customer.customer_id === filter.customerId) &&
          (filter.subscriptionId === undefined || payment.subscription_id === filter.subscriptionId) &&
          (filter.status === undefined || payment.status === filter.status),
      )
      .reverse();
  }

  /**
   * `POST /refunds`: the whole payment, or `items` (product ids, each with an optional amount in
   * minor units). Sends `refund.succeeded` and removes the refunded share of the credits the
   * payment granted (a manual-adjustment debit per entitlement; what the balance cannot cover
   * is recorded as overage).
   */
  refund(input: unknown): Refund {
    const body = read.object(input, 'body');
    const payment = this.get(read.string(body, 'payment_id'));
    if (payment.status !== 'succeeded')
      throw invalid(`Payment ${payment.payment_id} did not succeed; it cannot be refunded.`);
    const cart = payment.product_cart ?? [];
    const lineTotal = (productId: string) => {
      const line = cart.find((entry) => entry.product_id === productId);
      if (!line)
        throw invalid(
          `items: product ${JSON.stringify(productId)} is not part of payment ${payment.payment_id}.`,
        );
      return this.lineTotal(payment, productId);
    };
    const refundedLines = this.refundedLines.get(payment.payment_id) ?? new Map<string, number>();
    const left = (productId: string) => lineTotal(productId) - (refundedLines.get(productId) ?? 0);
    const shares = new Map<string, { refunded: number; of: number }>();
    if (body.items === undefined || body.items === null) {
      // A refund without items refunds whatever is left of the payment.
      for (const line of cart) {
        const rest = left(line.product_id);
        if (rest > 0) shares.set(line.product_id, { refunded: rest, of: lineTotal(line.product_id) });
      }
    } else {
      for (const [index, raw] of read.array(body, 'items').entries()) {
        const item = read.object(raw, `items[${index}]`);
        const productId = read.string(item, 'item_id');
        const of = lineTotal(productId);
        const refunded =
          item.amount === undefined || item.amount === null ? of : read.integer(item, 'amount', { min: 1 });
        if (refunded > left(productId)) {
          throw invalid(
            `items[${index}].amount ${refunded} is more than what is left to refund of the item (${left(productId)}).`,
          );
        }
        shares.set(productId, { refunded, of });
      }
    }
    const amount = [...shares.values()].reduce((sum, share) => sum + share.refunded, 0);
    const alreadyRefunded = payment.refunds.reduce((sum, refund) => sum + (refund.amount ?? 0), 0);
    if (amount === 0) throw invalid(`Payment ${payment.payment_id} is already fully refunded.`);
    for (const [productId, share] of shares)
      refundedLines.set(productId, (refundedLines.get(productId) ?? 0) + share.refunded);
    this.refundedLines.set(payment.payment_id, refundedLines);
    const refund: Refund = {
      brand_id: this.runtime.brandId,
      business_id: this.runtime.businessId,
      created_at: this.runtime.iso(),
      customer: payment.customer,
      is_partial: amount < payment.total_amount,
      metadata: read.metadata(body.metadata),
      payment_id: payment.payment_id,
      refund_id: this.runtime.id('ref'),
      status: 'succeeded',
      amount,
      currency: payment.currency,
      reason: read.optionalString(body, 'reason') ?? null,
    };
    this.refunds.set(refund.refund_id, refund);
    payment.refunds.push({
      business_id: refund.business_id,
      created_at: refund.created_at,
      is_partial: refund.is_partial,
      payment_id: refund.payment_id,
      refund_id: refund.refund_id,
      status: refund.status,
      amount: refund.amount ?? null,
      currency: refund.currency ?? null,
      reason: refund.reason ?? null,
    });
    payment.refund_status = alreadyRefunded + amount >= payment.total_amount ? 'full' : 'partial';
    this.webhooks.emit('refund.succeeded', { payload_type: 'Refund', ...structuredClone(refund) });
    this.clawBack(payment, refund, shares);
    return refund;
  }

  /**
   * A line's share of what the customer paid (`total_amount`, in the payment's currency, tax and
   * fees included): refunds are in the currency the customer paid. The last line takes the
   * rounding remainder, so the lines add up to the total.
   */
  private lineTotal(payment: Payment, productId: string): number {
    const bases = this.lineBases.get(payment.payment_id) ?? new Map<string, number>();
    const sum = [...bases.values()].reduce((total, base) => total + base, 0);
    if (sum === 0) return 0;
    const ids = [...bases.keys()];
    if (ids[ids.length - 1] === productId) {
      return (
        payment.total_amount - ids.slice(0, -1).reduce((total, id) => total + this.lineTotal(payment, id), 0)
      );
    }
    return Number((BigInt(payment.total_amount) * BigInt(bases.get(productId) ?? 0)) / BigInt(sum));
  }

  private clawBack(
    payment: Payment,
    refund: Refund,
    shares: Map<string, { refunded: number; of: number }>,
  ): void {
    const granted = this.credits
      .ledger({ customerId: payment.customer.customer_id })
      .filter(
        (entry) =>
          entry.isCredit && entry.referenceType === 'payment' && entry.referenceId === payment.payment_id,
      );
    for (const entry of granted) {
      const share = shares.get(String(entry.metadata.product_id));
      if (!share || share.of === 0) continue;
      // The refunded fraction of this grant, rounded down (to the precision, by the ledger).
      const amount = (entry.amount * BigInt(share.refunded)) / BigInt(share.of);
      if (amount <= 0n) continue;
      this.credits.clawBack({
        customerId: entry.customerId,
        entitlementId: entry.entitlementId,
        amount,
        description: `Credits of refunded payment ${payment.payment_id}`,
        referenceId: refund.refund_id,
        referenceType: 'refund',
        metadata: { payment_id: payment.payment_id, product_id: String(entry.metadata.product_id) },
      });
    }
  }

  getRefund(id: string): Refund {
    const refund = this.refunds.get(id);
    if (!refund) throw notFound('Refund', id);
    return refund;
  }

  listRefunds(filter: { customerId?: string }): Refund[] {
    return [...this.refunds.values()]
      .filter(
        (refund) => filter.customerId === undefined || refund.customer.customer_id === filter.customerId,
      )
      .reverse();
  }
}

/** `percent`% of a minor-unit amount, rounded down. */
function percentOf(amount: number, percent: ExactDecimal): number {
  return Number((BigInt(amount) * percent.mantissa) / (100n * 10n ** BigInt(percent.decimals)));
}
