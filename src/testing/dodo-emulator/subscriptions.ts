import type { DodoPayments } from 'dodopayments';
import { amountOf, type Catalog } from './catalog.js';
import { DodoEmulatorError, invalid, notFound } from './errors.js';
import type { Payments } from './payments.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';
import type { WebhookSender } from './webhooks.js';

type Subscription = DodoPayments.Subscription;
type TimeInterval = DodoPayments.TimeInterval;

/**
 * Subscriptions: created active by a completed checkout (`subscription.active`), renewed by
 * `emulator.renewSubscription()` (`subscription.renewed`, with a new payment and the period's
 * credits), cancelled through `PATCH` or `emulator.cancelSubscription()` (`subscription.cancelled`),
 * re-sized through `POST /subscriptions/{id}/change-plan` (`subscription.plan_changed`).
 */
export class Subscriptions {
  private readonly subscriptions = new Map<string, Subscription>();

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
    private readonly payments: Payments,
    private readonly webhooks: WebhookSender,
  ) {}

  /** Starts a paid subscription: first payment, `subscription.active`, then the period's credits. */
  start(input: {
    customerId: string;
    productId: string;
    quantity: number;
    checkoutSessionId?: string;
    metadata?: Record<string, string | number | boolean>;
  }): { subscription: Subscription; payment: DodoPayments.Payment } {
    const customer = this.catalog.customer(input.customerId);
    const product = this.catalog.product(input.productId);
    const price = product.price as DodoPayments.Price.RecurringPrice;
    const now = this.runtime.now();
    const subscription: Subscription = {
      addons: [],
      billing: { country: 'US' },
      brand_id: this.runtime.brandId,
      cancel_at_next_billing_date: false,
      created_at: this.runtime.iso(now),
      credit_entitlement_cart: [],
      currency: price.currency,
      customer: {
        customer_id: customer.customer_id,
        email: customer.email,
        name: customer.name,
        metadata: customer.metadata ?? {},
      },
      has_payment_method: true,
      metadata: input.metadata ?? {},
      meter_credit_entitlement_cart: [],
      meters: [],
      next_billing_date: this.runtime.iso(
        addInterval(now, price.payment_frequency_interval, price.payment_frequency_count),
      ),
      on_demand: false,
      payment_frequency_count: price.payment_frequency_count,
      payment_frequency_interval: price.payment_frequency_interval,
      previous_billing_date: this.runtime.iso(now),
      product_id: product.product_id,
      quantity: input.quantity,
      recurring_pre_tax_amount: amountOf(price) * input.quantity,
      status: 'active',
      subscription_id: this.runtime.id('sub'),
      subscription_period_count: price.subscription_period_count ?? 1,
      subscription_period_interval: price.subscription_period_interval ?? 'Year',
      tax_inclusive: false,
      trial_period_days: 0,
      cancelled_at: null,
    };
    this.subscriptions.set(subscription.subscription_id, subscription);
    const payment = this.charge(subscription, input.checkoutSessionId, () =>
      this.webhooks.emit('subscription.active', this.payload(subscription)),
    );
    return { subscription, payment };
  }

  /** A period's payment: `payment.succeeded`, then `before()` (the subscription event), then the credits. */
  private charge(
    subscription: Subscription,
    checkoutSessionId: string | undefined,
    before: () => void,
  ): DodoPayments.Payment {
    let announced = false;
    const payment = this.payments.succeed({
      customerId: subscription.customer.customer_id,
      cart: [{ productId: subscription.product_id, quantity: subscription.quantity }],
      checkoutSessionId,
      subscriptionId: subscription.subscription_id,
      metadata: subscription.metadata,
      grantSource: 'subscription',
      grantSourceId: subscription.subscription_id,
      beforeCredits: () => {
        announced = true;
        before();
      },
    });
    if (!announced) before();
    return payment;
  }

  get(id: string): Subscription {
    const subscription = this.subscriptions.get(id);
    if (!subscription) throw notFound('Subscription', id);
    return subscription;
  }

  list(filter: { customerId?: string; status?: string }): Subscription[] {
    return [...this.subscriptions.values()]
      .filter(
        (subscription) =>
          (filter.customerId === undefined || subscription.customer.customer_id === filter.customerId) &&
          (filter.status === undefined || subscription.status === filter.status),
      )
      .reverse();
  }

  /** The customer's active subscription whose product grants `entitlementId`, with its credits per period. */
  activeGranting(
    customerId: string,
    entitlementId: string,
  ): { subscriptionId: string; credits: bigint } | undefined {
    for (const subscription of this.subscriptions.values()) {
      if (subscription.customer.customer_id !== customerId || subscription.status !== 'active') continue;
      const grant = this.catalog
        .creditsOf(subscription.product_id)
        .find((entry) => entry.entitlementId === entitlementId);
      if (grant)
        return {
          subscriptionId: subscription.subscription_id,
          credits: grant.credits * BigInt(subscription.quantity),
        };
    }
    return undefined;
  }

  /** `PATCH /subscriptions/{id}`: cancel now (`status: "cancelled"`), at period end, metadata, next billing date. */
  update(id: string, input: unknown): Subscription {
    const subscription = this.get(id);
    const body = read.object(input, 'body');
    if ('quantity' in body) {
      throw invalid('quantity cannot be changed with PATCH; use POST /subscriptions/{id}/change-plan.');
    }
    const status = read.optionalString(body, 'status');
    const atPeriodEnd = read.optionalBoolean(body, 'cancel_at_next_billing_date');
    const nextBilling = read.optionalString(body, 'next_billing_date');
    if (nextBilling !== undefined && Number.isNaN(Date.parse(nextBilling))) {
      throw invalid('next_billing_date must be an ISO-8601 date-time.');
    }
    if (body.metadata !== undefined && body.metadata !== null)
      subscription.metadata = read.metadata(body.metadata);
    if (nextBilling !== undefined) subscription.next_billing_date = this.runtime.iso(Date.parse(nextBilling));
    if (atPeriodEnd !== undefined) subscription.cancel_at_next_billing_date = atPeriodEnd;
    if (status !== undefined && status !== subscription.status) {
      if (status !== 'cancelled')
        throw invalid(`status can only be set to "cancelled" here (got ${JSON.stringify(status)}).`);
      return this.cancelNow(subscription);
    }
    this.webhooks.emit('subscription.updated', this.payload(subscription));
    return subscription;
  }

  /** `POST /subscriptions/{id}/change-plan`: new product and/or quantity, effective now. */
  changePlan(id: string, input: unknown): void {
    const subscription = this.get(id);
    const body = read.object(input, 'body');
    const product = this.catalog.product(read.string(body, 'product_id'));
    if (!product.is_recurring) throw invalid(`Product ${product.product_id} is not a subscription product.`);
    const quantity = read.integer(body, 'quantity', { min: 1 });
    read.string(body, 'proration_billing_mode');
    if (subscription.status !== 'active')
      throw invalid(`Subscription ${id} is ${subscription.status}; only an active one can change plan.`);
    subscription.product_id = product.product_id;
    subscription.quantity = quantity;
    subscription.recurring_pre_tax_amount = amountOf(product.price) * quantity;
    this.webhooks.emit('subscription.plan_changed', this.payload(subscription));
  }

  /** Admin: starts the next period now (or cancels, when it was set to cancel at period end). */
  renew(id: string): Subscription {
    const subscription = this.subscriptions.get(id);
    if (!subscription)
      throw new DodoEmulatorError(`renewSubscription: unknown subscription ${JSON.stringify(id)}.`);
    if (subscription.status !== 'active') {
      throw new DodoEmulatorError(
        `renewSubscription: subscription ${id} is ${subscription.status}, not active.`,
      );
    }
    if (subscription.cancel_at_next_billing_date) return this.cancelNow(subscription);
    const start = Date.parse(subscription.next_billing_date);
    subscription.previous_billing_date = subscription.next_billing_date;
    subscription.next_billing_date = this.runtime.iso(
      addInterval(start, subscription.payment_frequency_interval, subscription.payment_frequency_count),
    );
    this.charge(subscription, undefined, () =>
      this.webhooks.emit('subscription.renewed', this.payload(subscription)),
    );
    return subscription;
  }

  /** Admin: cancels now. */
  cancel(id: string): Subscription {
    const subscription = this.subscriptions.get(id);
    if (!subscription)
      throw new DodoEmulatorError(`cancelSubscription: unknown subscription ${JSON.stringify(id)}.`);
    if (subscription.status === 'cancelled') {
      throw new DodoEmulatorError(`cancelSubscription: subscription ${id} is already cancelled.`);
    }
    return this.cancelNow(subscription);
  }

  private cancelNow(subscription: Subscription): Subscription {
    subscription.status = 'cancelled';
    subscription.cancelled_at = this.runtime.iso();
    this.webhooks.emit('subscription.cancelled', this.payload(subscription));
    return subscription;
  }

  private payload(subscription: Subscription): Record<string, unknown> {
    return { payload_type: 'Subscription', ...structuredClone(subscription) };
  }
}

/** Adds `count` calendar intervals to a time, in UTC. */
export function addInterval(ms: number, interval: TimeInterval, count: number): number {
  const date = new Date(ms);
  if (interval === 'Day') date.setUTCDate(date.getUTCDate() + count);
  else if (interval === 'Week') date.setUTCDate(date.getUTCDate() + 7 * count);
  else if (interval === 'Month') date.setUTCMonth(date.getUTCMonth() + count);
  else date.setUTCFullYear(date.getUTCFullYear() + count);
  return date.getTime();
}
