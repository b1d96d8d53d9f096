import type { DodoPayments } from 'dodopayments';
import { formatCreditUnits } from './amounts.js';
import { amountOf, type Catalog } from './catalog.js';
import type { LowBalanceWatch } from './credits.js';
import { DodoEmulatorError, invalid, notFound } from './errors.js';
import type { SubscribedPlan } from './meters.js';
import type { Payments } from './payments.js';
import type { Runtime } from './runtime.js';
import * as read from './validate.js';
import type { WebhookSender } from './webhooks.js';

type Subscription = DodoPayments.Subscription;
type SubscriptionStatus = DodoPayments.SubscriptionStatus;
type TimeInterval = DodoPayments.TimeInterval;

/** A subscription as the emulator keeps it: Dodo's object plus the grace-period deadline. */
interface Record_ extends Subscription {
  past_due_ends_at?: string | null;
}

/** Which webhook announces a move to a status (Dodo's `subscription.*` events). */
const STATUS_EVENT: Partial<Record<SubscriptionStatus, string>> = {
  on_hold: 'subscription.on_hold',
  past_due: 'subscription.past_due',
  paused: 'subscription.paused',
  cancelled: 'subscription.cancelled',
  expired: 'subscription.expired',
  failed: 'subscription.failed',
};

/** Options of a new subscription (a completed checkout, or `emulator.subscribe()`). */
export interface NewSubscription {
  customerId: string;
  productId: string;
  quantity: number;
  checkoutSessionId?: string;
  metadata?: Record<string, string | number | boolean>;
  /**
   * An on-demand subscription (`subscription_data.on_demand`): the customer's payment method is
   * authorised as a mandate that `POST /subscriptions/{id}/charge` charges later. With
   * `mandateOnly` nothing is charged now.
   */
  onDemand?: { mandateOnly: boolean; productPrice?: number };
  /** The checkout's `billing_currency` (adaptive currency). */
  billingCurrency?: string;
}

/**
 * Subscriptions: created active by a completed checkout (`subscription.active`), renewed by
 * `emulator.renewSubscription()` (`subscription.renewed`, with a new payment and the period's
 * credits), moved between Dodo's statuses by `emulator.setSubscriptionStatus()` (each with its
 * `subscription.*` webhook), cancelled through `PATCH` (`subscription.cancelled`), re-sized
 * through `POST /subscriptions/{id}/change-plan` (`subscription.plan_changed`), and — when
 * on-demand — charged through `POST /subscriptions/{id}/charge`
 * (https://docs.dodopayments.com/developer-resources/ondemand-subscriptions).
 */
/** What the next on-demand charges do instead of succeeding (`emulator.failCharges()`). */
export interface ChargeOutcomeSpec {
  /** `failed`: declined (`payment.failed`); `requires_action`: waits on the customer (`requires_customer_action`). */
  outcome: 'failed' | 'requires_action';
  /** Only charges of this subscription (default: any). */
  subscriptionId?: string;
  /** How many charges (default: every one until `clearChargeOutcomes`). */
  times?: number;
}

export class Subscriptions {
  private readonly subscriptions = new Map<string, Record_>();
  private chargeOutcomes: { spec: ChargeOutcomeSpec; left: number }[] = [];

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
    private readonly payments: Payments,
    private readonly webhooks: WebhookSender,
  ) {}

  /**
   * Starts a subscription: its first payment (none for a mandate-only on-demand subscription),
   * `subscription.active`, then the period's credits.
   */
  start(input: NewSubscription): { subscription: Subscription; payment: DodoPayments.Payment | undefined } {
    const customer = this.catalog.customer(input.customerId);
    const product = this.catalog.product(input.productId);
    if (!product.is_recurring) throw invalid(`Product ${product.product_id} is not a subscription product.`);
    const price = product.price as DodoPayments.Price.RecurringPrice | DodoPayments.Price.UsageBasedPrice;
    const now = this.runtime.now();
    const subscription: Record_ = {
      addons: [],
      billing: { country: 'US' },
      brand_id: this.runtime.brandId,
      cancel_at_next_billing_date: false,
      created_at: this.runtime.iso(now),
      credit_entitlement_cart: this.creditCart(product, input.quantity),
      currency: price.currency,
      customer: {
        customer_id: customer.customer_id,
        email: customer.email,
        name: customer.name,
        metadata: customer.metadata ?? {},
      },
      has_payment_method: true,
      metadata: input.metadata ?? {},
      meter_credit_entitlement_cart: this.catalog.meterLinks(product.product_id).map((link) => ({
        credit_entitlement_id: link.entitlementId,
        meter_id: link.meterId,
        meter_name: this.catalog.meter(link.meterId).name,
        meter_units_per_credit: link.meterUnitsPerCredit,
        product_id: product.product_id,
      })),
      meters: this.meterCart(product),
      next_billing_date: this.runtime.iso(
        addInterval(now, price.payment_frequency_interval, price.payment_frequency_count),
      ),
      on_demand: input.onDemand !== undefined,
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
      payment_method_id: this.runtime.id('pm'),
      past_due_ends_at: null,
    };
    this.subscriptions.set(subscription.subscription_id, subscription);
    const announce = () => this.webhooks.emit('subscription.active', this.payload(subscription));
    if (input.onDemand?.mandateOnly) {
      // A mandate only: the payment method is authorised, nothing is charged, no credits flow.
      announce();
      return { subscription, payment: undefined };
    }
    const payment = this.charge(subscription, input.checkoutSessionId, announce, {
      price: input.onDemand?.productPrice,
      billingCurrency: input.billingCurrency,
    });
    return { subscription, payment };
  }

  private creditCart(product: DodoPayments.Product, quantity: number) {
    return this.catalog.creditsOf(product.product_id).map((grant) => {
      const entitlement = this.catalog.entitlement(grant.entitlementId);
      return {
        credit_entitlement_id: entitlement.id,
        credit_entitlement_name: entitlement.name,
        credits_amount: formatCreditUnits(grant.credits * BigInt(quantity)),
        overage_balance: '0',
        overage_behavior: entitlement.overage_behavior,
        overage_enabled: entitlement.overage_enabled,
        product_id: product.product_id,
        remaining_balance: '0',
        rollover_enabled: entitlement.rollover_enabled,
        unit: entitlement.unit,
        low_balance_threshold_percent: grant.lowBalanceThresholdPercent ?? null,
      } satisfies DodoPayments.Subscriptions.CreditEntitlementCartResponse;
    });
  }

  private meterCart(product: DodoPayments.Product): DodoPayments.Subscriptions.MeterCartResponseItem[] {
    if (product.price.type !== 'usage_based_price') return [];
    const price = product.price;
    return (price.meters ?? []).map((entry) => {
      const meter = this.catalog.meter(entry.meter_id);
      return {
        currency: price.currency,
        free_threshold: entry.free_threshold ?? 0,
        measurement_unit: meter.measurement_unit,
        meter_id: meter.id,
        name: meter.name,
        price_per_unit: entry.price_per_unit ?? null,
      };
    });
  }

  /** A period's payment: `payment.succeeded`, then `before()` (the subscription event), then the credits. */
  private charge(
    subscription: Subscription,
    checkoutSessionId: string | undefined,
    before: () => void,
    options: { price?: number; billingCurrency?: string } = {},
  ): DodoPayments.Payment {
    let announced = false;
    const payment = this.payments.succeed({
      customerId: subscription.customer.customer_id,
      cart: [{ productId: subscription.product_id, quantity: subscription.quantity, price: options.price }],
      checkoutSessionId,
      subscriptionId: subscription.subscription_id,
      metadata: subscription.metadata,
      grantSource: 'subscription',
      grantSourceId: subscription.subscription_id,
      billingCurrency: options.billingCurrency,
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

  /** `GET /subscriptions`: the list's own shape (`SubscriptionListResponse`), newest first. */
  list(filter: {
    customerId?: string;
    status?: string;
    productId?: string;
  }): DodoPayments.Subscriptions.SubscriptionListResponse[] {
    return [...this.subscriptions.values()]
      .filter(
        (subscription) =>
          (filter.customerId === undefined || subscription.customer.customer_id === filter.customerId) &&
          (filter.status === undefined || subscription.status === filter.status) &&
          (filter.productId === undefined || subscription.product_id === filter.productId),
      )
      .reverse()
      .map((subscription) => ({
        ...structuredClone(subscription),
        discounts: [],
        product_name: this.catalog.product(subscription.product_id).name ?? null,
      }));
  }

  /**
   * The customer's subscriptions under which meters deduct credits. Dodo bills usage of a
   * subscription that is `active`; the stricter reading of its silence on the other statuses
   * (`past_due`, `on_hold`, `paused`, …) is that they deduct nothing.
   */
  activePlans(customerId: string): SubscribedPlan[] {
    return [...this.subscriptions.values()]
      .filter(
        (subscription) =>
          subscription.customer.customer_id === customerId && subscription.status === 'active',
      )
      .map((subscription) => ({
        subscriptionId: subscription.subscription_id,
        productId: subscription.product_id,
        periodStart: Date.parse(subscription.previous_billing_date),
      }));
  }

  /** The customer's active subscriptions whose product attaches `entitlementId` with a low-balance threshold. */
  lowBalanceWatches(customerId: string, entitlementId: string): LowBalanceWatch[] {
    const watches: LowBalanceWatch[] = [];
    for (const plan of this.activePlans(customerId)) {
      const subscription = this.subscriptions.get(plan.subscriptionId)!;
      const grant = this.catalog
        .creditsOf(plan.productId)
        .find((entry) => entry.entitlementId === entitlementId);
      if (grant?.lowBalanceThresholdPercent === undefined) continue;
      watches.push({
        subscriptionId: plan.subscriptionId,
        creditsPerCycle: grant.credits * BigInt(subscription.quantity),
        percent: grant.lowBalanceThresholdPercent,
      });
    }
    return watches;
  }

  /** `PATCH /subscriptions/{id}`: cancel now (`status: "cancelled"`), at period end, metadata, next billing date. */
  update(id: string, input: unknown): Subscription {
    const subscription = this.record(id);
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
    if (status !== undefined && status !== subscription.status && status !== 'cancelled') {
      throw invalid(`status can only be set to "cancelled" here (got ${JSON.stringify(status)}).`);
    }
    if (body.metadata !== undefined && body.metadata !== null)
      subscription.metadata = read.metadata(body.metadata);
    if (nextBilling !== undefined) subscription.next_billing_date = this.runtime.iso(Date.parse(nextBilling));
    if (atPeriodEnd !== undefined) subscription.cancel_at_next_billing_date = atPeriodEnd;
    if (status === 'cancelled' && subscription.status !== 'cancelled')
      return this.moveTo(subscription, 'cancelled');
    this.webhooks.emit('subscription.updated', this.payload(subscription));
    return subscription;
  }

  /** `POST /subscriptions/{id}/change-plan`: new product and/or quantity, effective now. */
  changePlan(id: string, input: unknown): void {
    const subscription = this.record(id);
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
    subscription.credit_entitlement_cart = this.creditCart(product, quantity);
    subscription.meters = this.meterCart(product);
    this.webhooks.emit('subscription.plan_changed', this.payload(subscription));
  }

  /**
   * `POST /subscriptions/{id}/charge`: charges an on-demand subscription's mandate
   * `product_price` minor units now (`payment.succeeded`). Dodo: "Charging a subscription that
   * is not on-demand may fail"; the emulator refuses it (422), and a subscription that is not
   * active.
   */
  chargeOnDemand(id: string, input: unknown): DodoPayments.SubscriptionChargeResponse {
    const subscription = this.record(id);
    const body = read.object(input, 'body');
    const price = read.integer(body, 'product_price', { min: 1 });
    if (!subscription.on_demand) {
      throw invalid(`Subscription ${id} is not on-demand: only an on-demand subscription can be charged.`);
    }
    if (subscription.status !== 'active') {
      throw invalid(`Subscription ${id} is ${subscription.status}; only an active one can be charged.`);
    }
    const metadata =
      body.metadata === undefined || body.metadata === null
        ? subscription.metadata
        : read.metadata(body.metadata);
    const planned = this.chargeOutcomes.find(
      (entry) => entry.left > 0 && (entry.spec.subscriptionId ?? id) === id,
    );
    if (planned) planned.left -= 1;
    // The charge is accepted either way: a declined or unauthenticated one is a payment of
    // that status (Dodo answers with its `payment_id`; the outcome comes later).
    const payment = this.payments.succeed({
      ...(planned
        ? { outcome: planned.spec.outcome === 'failed' ? 'failed' : 'requires_customer_action' }
        : {}),
      customerId: subscription.customer.customer_id,
      cart: [{ productId: subscription.product_id, quantity: 1, price, grantsCredits: false }],
      subscriptionId: subscription.subscription_id,
      metadata,
      grantSource: 'subscription',
      grantSourceId: subscription.subscription_id,
    });
    return { payment_id: payment.payment_id };
  }

  /** Admin: makes the next on-demand charges fail or wait on the customer. */
  planChargeOutcome(spec: ChargeOutcomeSpec): void {
    if (spec.outcome !== 'failed' && spec.outcome !== 'requires_action') {
      throw new DodoEmulatorError(
        `failCharges: outcome must be 'failed' or 'requires_action' (got ${JSON.stringify(spec.outcome)}).`,
      );
    }
    if (spec.times !== undefined && (!Number.isInteger(spec.times) || spec.times < 1)) {
      throw new DodoEmulatorError(`failCharges: times must be an integer >= 1 (got ${spec.times}).`);
    }
    this.chargeOutcomes.push({ spec: { ...spec }, left: spec.times ?? Number.POSITIVE_INFINITY });
  }

  clearChargeOutcomes(): void {
    this.chargeOutcomes = [];
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
    if (subscription.cancel_at_next_billing_date) return this.moveTo(subscription, 'cancelled');
    const start = Date.parse(subscription.next_billing_date);
    subscription.previous_billing_date = subscription.next_billing_date;
    subscription.next_billing_date = this.runtime.iso(
      addInterval(start, subscription.payment_frequency_interval, subscription.payment_frequency_count),
    );
    if (subscription.on_demand) {
      // An on-demand subscription is charged by the merchant, never on a schedule.
      this.webhooks.emit('subscription.renewed', this.payload(subscription));
      return subscription;
    }
    this.charge(subscription, undefined, () =>
      this.webhooks.emit('subscription.renewed', this.payload(subscription)),
    );
    return subscription;
  }

  /**
   * Admin: moves a subscription to one of Dodo's statuses, with its webhook: `past_due`
   * (`subscription.past_due`, with `past_due_ends_at`), `on_hold`, `paused`, `expired`,
   * `failed`, `cancelled`; back to `active` from `paused` (`subscription.unpaused`) or from a
   * payment problem (`subscription.active`).
   */
  setStatus(id: string, status: SubscriptionStatus, options: { pastDueEndsAt?: string } = {}): Subscription {
    const subscription = this.subscriptions.get(id);
    if (!subscription)
      throw new DodoEmulatorError(`setSubscriptionStatus: unknown subscription ${JSON.stringify(id)}.`);
    if (subscription.status === status) {
      throw new DodoEmulatorError(`setSubscriptionStatus: subscription ${id} is already ${status}.`);
    }
    if (['cancelled', 'expired', 'failed'].includes(subscription.status)) {
      throw new DodoEmulatorError(
        `setSubscriptionStatus: subscription ${id} is ${subscription.status}: it is over.`,
      );
    }
    if (status === 'pending')
      throw new DodoEmulatorError('setSubscriptionStatus: a subscription cannot go back to pending.');
    if (status === 'past_due') {
      const endsAt = options.pastDueEndsAt ?? this.runtime.iso(this.runtime.now() + 7 * 24 * 60 * 60_000);
      if (Number.isNaN(Date.parse(endsAt))) {
        throw new DodoEmulatorError('setSubscriptionStatus: pastDueEndsAt must be an ISO-8601 date-time.');
      }
      subscription.past_due_ends_at = this.runtime.iso(Date.parse(endsAt));
    }
    return this.moveTo(subscription, status);
  }

  /** Admin: cancels now. */
  cancel(id: string): Subscription {
    const subscription = this.subscriptions.get(id);
    if (!subscription)
      throw new DodoEmulatorError(`cancelSubscription: unknown subscription ${JSON.stringify(id)}.`);
    if (subscription.status === 'cancelled') {
      throw new DodoEmulatorError(`cancelSubscription: subscription ${id} is already cancelled.`);
    }
    return this.moveTo(subscription, 'cancelled');
  }

  private moveTo(subscription: Record_, status: SubscriptionStatus): Subscription {
    const previous = subscription.status;
    subscription.status = status;
    if (status !== 'past_due') subscription.past_due_ends_at = null;
    if (status === 'cancelled') subscription.cancelled_at = this.runtime.iso();
    const type =
      status === 'active'
        ? previous === 'paused'
          ? 'subscription.unpaused'
          : 'subscription.active'
        : STATUS_EVENT[status];
    if (type) this.webhooks.emit(type, this.payload(subscription));
    return subscription;
  }

  private record(id: string): Record_ {
    const subscription = this.subscriptions.get(id);
    if (!subscription) throw notFound('Subscription', id);
    return subscription;
  }

  /** A subscription webhook's data: the subscription, plus `past_due_ends_at` (the SDK's webhook `Data`). */
  private payload(subscription: Record_): Record<string, unknown> {
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
