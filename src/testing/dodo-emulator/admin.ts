import type { DodoPayments } from 'dodopayments';
import { type CreditUnits, describe, formatCreditUnits, readCredits } from './amounts.js';
import type { CheckoutResult } from './checkout.js';
import type { DisputeOutcome } from './disputes.js';
import { ApiError, DodoEmulatorError } from './errors.js';
import type { EventFilter } from './events.js';
import type { FaultSpec, Faults } from './faults.js';
import type { MeterDeduction } from './meters.js';
import type { Parts } from './parts.js';
import type { LoggedRequest } from './server.js';
import type { ChargeOutcomeSpec } from './subscriptions.js';
import type { EmittedWebhook, WebhookDelivery, WebhookFilter } from './webhooks.js';

type Metadata = Record<string, string | number | boolean>;

/** Admin methods of the emulator: set up state and look inside, without HTTP. */
export interface DodoEmulatorAdmin {
  /** Creates a customer. */
  createCustomer(input: { email: string; name?: string; metadata?: Metadata }): DodoPayments.Customer;
  /** Creates a credit entitlement. Defaults: name `'Credits'`, unit `'credits'`, precision `2`, no overage, no rollover. */
  createCreditEntitlement(
    input?: Partial<DodoPayments.CreditEntitlements.CreditEntitlementCreateParams>,
  ): DodoPayments.CreditEntitlements.CreditEntitlement;
  /** Creates a product from the API's own create params (`POST /products`). */
  createProduct(input: DodoPayments.ProductCreateParams): DodoPayments.Product;
  /** A one-time product granting `credits` of `creditEntitlementId`, priced `price` minor units (default USD). */
  createCreditPack(input: {
    name: string;
    price: number;
    currency?: DodoPayments.Currency;
    creditEntitlementId: string;
    credits: string | number;
  }): DodoPayments.Product;
  /**
   * A subscription product (default monthly), optionally granting `credits` of
   * `creditEntitlementId` per period and per unit of quantity, and sending `credit.balance_low`
   * to its subscribers below `lowBalanceThresholdPercent` of those credits.
   */
  createSubscriptionProduct(input: {
    name: string;
    price: number;
    currency?: DodoPayments.Currency;
    interval?: DodoPayments.TimeInterval;
    creditEntitlementId?: string;
    credits?: string | number;
    lowBalanceThresholdPercent?: number;
  }): DodoPayments.Product;
  /**
   * Creates a meter (default: sum of metadata `tokens`). A meter deducts credits only through a
   * usage-based product (`createUsagePlan`) a customer is subscribed to (`subscribe`).
   */
  createMeter(input: {
    eventName: string;
    name?: string;
    aggregationKey?: string;
    aggregation?: 'sum' | 'count';
  }): DodoPayments.Meter;
  /**
   * A usage-based product (default $0 a month) whose price bills `meters` in the credits of
   * `creditEntitlementId` — attached to the product first, issuing `credits` per cycle (default
   * `'0'`), as Dodo's product form does. Subscribers' usage of those meters deducts
   * `meter units / meterUnitsPerCredit` credits.
   */
  createUsagePlan(input: {
    creditEntitlementId: string;
    meters: readonly { meterId: string; meterUnitsPerCredit: string | number; freeThreshold?: number }[];
    name?: string;
    price?: number;
    currency?: DodoPayments.Currency;
    interval?: DodoPayments.TimeInterval;
    credits?: string | number;
    lowBalanceThresholdPercent?: number;
  }): DodoPayments.Product;
  /**
   * Subscribes a customer to a subscription product now, as completing its checkout does
   * (`subscription.active`; a payment unless `onDemand: 'mandate'`). `onDemand` makes it an
   * on-demand subscription: `'mandate'` authorises the payment method only.
   */
  subscribe(
    customerId: string,
    productId: string,
    options?: { quantity?: number; onDemand?: 'mandate' | 'charge' },
  ): DodoPayments.Subscription;
  /**
   * Moves a subscription to one of Dodo's statuses with its webhook (`past_due` with
   * `past_due_ends_at`, default a week on; `on_hold`, `paused`, back to `active`, …).
   */
  setSubscriptionStatus(
    subscriptionId: string,
    status: DodoPayments.SubscriptionStatus,
    options?: { pastDueEndsAt?: string },
  ): DodoPayments.Subscription;
  /**
   * Makes the next on-demand charges (`POST /subscriptions/{id}/charge`) not succeed: `failed`
   * (a declined card: `payment.failed`) or `requires_action` (the payment waits on the
   * customer's authentication: status `requires_customer_action`, no webhook). Each charge is
   * still answered with its `payment_id`.
   * @example emulator.failCharges({ outcome: 'failed', times: 2 })
   */
  failCharges(spec: ChargeOutcomeSpec): void;
  /** On-demand charges succeed again. */
  clearChargeOutcomes(): void;
  /** Opens a dispute on a payment (`dispute.opened`) for `amount` minor units (default: the whole payment). */
  openDispute(paymentId: string, options?: { amount?: number }): DodoPayments.Dispute;
  /** Moves a dispute on: `challenged`, `accepted`, `won`, `lost`, `expired`, `cancelled` (`dispute.<outcome>`). */
  resolveDispute(disputeId: string, outcome: DisputeOutcome): DodoPayments.Dispute;
  /**
   * Sets a balance exactly (one manual adjustment in the ledger, `credit.manual_adjustment`), at
   * the entitlement's precision. Returns it.
   */
  setBalance(customerId: string, creditEntitlementId: string, credits: string | number): string;
  /** Adds credits (a grant, `credit.added`). Returns the balance after. */
  addCredits(
    customerId: string,
    creditEntitlementId: string,
    credits: string | number,
    options?: { reason?: string },
  ): string;
  /** The balance as Dodo formats it, or undefined when the customer has none in this entitlement. */
  balance(customerId: string, creditEntitlementId: string): string | undefined;
  /** Ledger entries, oldest first. */
  ledger(filter?: {
    customerId?: string;
    creditEntitlementId?: string;
  }): DodoPayments.CreditEntitlements.CreditLedgerEntry[];
  /** Ingested usage events, in ingestion order. */
  ingestedEvents(filter?: EventFilter): DodoPayments.Event[];
  /** Every asynchronous meter deduction so far, oldest first. */
  meterDeductions(filter?: { customerId?: string; meterId?: string }): MeterDeduction[];
  /** Injects a fault on a route (see `FaultSpec`), e.g. `fault('POST /events/ingest', { status: 503, times: 2 })`. */
  fault(route: string, spec: FaultSpec): void;
  clearFaults(): void;
  /** Pays a checkout session, as visiting its `checkout_url` and pressing Pay does. */
  completeCheckout(sessionId: string, form?: { email?: string; name?: string }): CheckoutResult;
  /** Starts a subscription's next period now: payment, `subscription.renewed`, the period's credits. */
  renewSubscription(subscriptionId: string): DodoPayments.Subscription;
  /** Cancels a subscription now (`subscription.cancelled`). */
  cancelSubscription(subscriptionId: string): DodoPayments.Subscription;
  /** Where webhooks go from now on (undefined: record only). */
  setWebhookUrl(url: string | undefined): void;
  /** Every webhook emitted, oldest first. */
  webhookEvents(): EmittedWebhook[];
  /** Every webhook delivery attempt, oldest first. */
  webhookDeliveries(): WebhookDelivery[];
  /** Waits for webhooks to be delivered (see `WebhookFilter`). */
  waitForWebhooks(filter?: WebhookFilter): Promise<EmittedWebhook[]>;
  /** Resolves once pending meter deductions and webhook deliveries are done. Default timeout 10 s. */
  settle(options?: { timeoutMs?: number }): Promise<void>;
  /** Every API request received, oldest first. */
  requests(): LoggedRequest[];
}

function credits(value: unknown, method: string, what = 'credits'): CreditUnits {
  const units = readCredits(value);
  if (typeof units === 'string') throw new DodoEmulatorError(`${method}: ${what} ${units}.`);
  if (units < 0n)
    throw new DodoEmulatorError(`${method}: ${what} must not be negative (got ${describe(value)}).`);
  return units;
}

/** Runs an API operation for an admin method, turning its 4xx into a clear thrown error. */
function admin<T>(method: string, operation: () => T): T {
  try {
    return operation();
  } catch (caught) {
    if (caught instanceof ApiError) throw new DodoEmulatorError(`${method}: ${caught.message}`);
    throw caught;
  }
}

export function createAdmin(parts: Parts, faults: Faults, log: LoggedRequest[]): DodoEmulatorAdmin {
  const {
    runtime,
    catalog,
    credits: ledger,
    events,
    meters,
    subscriptions,
    checkouts,
    disputes,
    webhooks,
  } = parts;
  const product = (method: string, input: unknown) => admin(method, () => catalog.createProduct(input));
  /** An amount of credits for an admin method, at the entitlement's precision. */
  const creditsAt = (value: unknown, method: string, entitlementId: string) => {
    const units = credits(value, method);
    if (units % ledger.step(entitlementId) !== 0n) {
      throw new DodoEmulatorError(
        `${method}: ${describe(value)} credits is finer than the entitlement's precision (${catalog.entitlement(entitlementId).precision} decimals).`,
      );
    }
    return units;
  };
  return {
    createCustomer: (input) => admin('createCustomer', () => catalog.createCustomer(input)),
    createCreditEntitlement: (input = {}) =>
      admin('createCreditEntitlement', () =>
        catalog.createEntitlement({
          name: 'Credits',
          unit: 'credits',
          precision: 2,
          overage_enabled: false,
          rollover_enabled: false,
          ...input,
        }),
      ),
    createProduct: (input) => product('createProduct', input),
    createCreditPack: (input) => {
      catalog.requireEntitlement(input.creditEntitlementId, 'createCreditPack');
      credits(input.credits, 'createCreditPack');
      return product('createCreditPack', {
        name: input.name,
        tax_category: 'saas',
        price: {
          type: 'one_time_price',
          price: input.price,
          currency: input.currency ?? 'USD',
          discount: 0,
          purchasing_power_parity: false,
        },
        credit_entitlements: [
          { credit_entitlement_id: input.creditEntitlementId, credits_amount: String(input.credits) },
        ],
      });
    },
    createSubscriptionProduct: (input) => {
      const attach = input.creditEntitlementId
        ? [
            {
              credit_entitlement_id: input.creditEntitlementId,
              credits_amount: String(input.credits ?? '0'),
              low_balance_threshold_percent: input.lowBalanceThresholdPercent ?? null,
            },
          ]
        : [];
      if (input.creditEntitlementId)
        catalog.requireEntitlement(input.creditEntitlementId, 'createSubscriptionProduct');
      return product('createSubscriptionProduct', {
        name: input.name,
        tax_category: 'saas',
        price: {
          type: 'recurring_price',
          price: input.price,
          currency: input.currency ?? 'USD',
          discount: 0,
          purchasing_power_parity: false,
          payment_frequency_count: 1,
          payment_frequency_interval: input.interval ?? 'Month',
          subscription_period_count: 10,
          subscription_period_interval: 'Year',
        },
        credit_entitlements: attach,
      });
    },
    createMeter: (input) =>
      admin('createMeter', () => {
        const legacy = input as { creditEntitlementId?: unknown; meterUnitsPerCredit?: unknown };
        if (legacy.creditEntitlementId !== undefined || legacy.meterUnitsPerCredit !== undefined) {
          throw new DodoEmulatorError(
            'createMeter: a meter is linked to credits on a usage-based product, not on its own: create the meter, then createUsagePlan({ creditEntitlementId, meters: [{ meterId, meterUnitsPerCredit }] }) and subscribe the customer.',
          );
        }
        const aggregation = input.aggregation ?? 'sum';
        return meters.create({
          name: input.name ?? input.eventName,
          event_name: input.eventName,
          measurement_unit: aggregation === 'count' ? 'events' : (input.aggregationKey ?? 'tokens'),
          aggregation:
            aggregation === 'count'
              ? { type: 'count' }
              : { type: 'sum', key: input.aggregationKey ?? 'tokens' },
        });
      }),
    createUsagePlan: (input) => {
      catalog.requireEntitlement(input.creditEntitlementId, 'createUsagePlan');
      return product('createUsagePlan', {
        name: input.name ?? 'API usage',
        tax_category: 'saas',
        price: {
          type: 'usage_based_price',
          fixed_price: input.price ?? 0,
          currency: input.currency ?? 'USD',
          discount: 0,
          purchasing_power_parity: false,
          payment_frequency_count: 1,
          payment_frequency_interval: input.interval ?? 'Month',
          subscription_period_count: 10,
          subscription_period_interval: 'Year',
          meters: input.meters.map((meter) => ({
            meter_id: meter.meterId,
            credit_entitlement_id: input.creditEntitlementId,
            meter_units_per_credit: String(meter.meterUnitsPerCredit),
            free_threshold: meter.freeThreshold ?? 0,
          })),
        },
        credit_entitlements: [
          {
            credit_entitlement_id: input.creditEntitlementId,
            credits_amount: String(input.credits ?? '0'),
            low_balance_threshold_percent: input.lowBalanceThresholdPercent ?? null,
          },
        ],
      });
    },
    subscribe: (customerId, productId, options = {}) =>
      admin('subscribe', () => {
        catalog.requireCustomer(customerId, 'subscribe');
        const onDemand =
          options.onDemand === undefined ? undefined : { mandateOnly: options.onDemand === 'mandate' };
        return subscriptions.start({ customerId, productId, quantity: options.quantity ?? 1, onDemand })
          .subscription;
      }),
    setSubscriptionStatus: (id, status, options) => subscriptions.setStatus(id, status, options),
    failCharges: (spec) => subscriptions.planChargeOutcome(spec),
    clearChargeOutcomes: () => subscriptions.clearChargeOutcomes(),
    openDispute: (paymentId, options) => disputes.open(paymentId, options),
    resolveDispute: (disputeId, outcome) => disputes.resolve(disputeId, outcome),
    setBalance: (customerId, creditEntitlementId, amount) => {
      catalog.requireCustomer(customerId, 'setBalance');
      catalog.requireEntitlement(creditEntitlementId, 'setBalance');
      const target = creditsAt(amount, 'setBalance', creditEntitlementId);
      ledger.setBalance(customerId, creditEntitlementId, target);
      return formatCreditUnits(target);
    },
    addCredits: (customerId, creditEntitlementId, amount, options = {}) => {
      catalog.requireCustomer(customerId, 'addCredits');
      catalog.requireEntitlement(creditEntitlementId, 'addCredits');
      const units = creditsAt(amount, 'addCredits', creditEntitlementId);
      if (units === 0n) throw new DodoEmulatorError('addCredits: credits must be greater than zero.');
      const entry = ledger.grant({
        customerId,
        entitlementId: creditEntitlementId,
        amount: units,
        transactionType: 'credit_added',
        description: options.reason ?? 'Credits added by the emulator admin API',
        referenceType: 'admin',
      });
      return formatCreditUnits(entry.balanceAfter);
    },
    balance: (customerId, creditEntitlementId) => {
      const record = ledger.balance(customerId, creditEntitlementId);
      return record === undefined ? undefined : formatCreditUnits(record.balance);
    },
    ledger: (filter = {}) =>
      ledger
        .ledger({ customerId: filter.customerId, entitlementId: filter.creditEntitlementId })
        .map((entry) => ledger.view(entry)),
    ingestedEvents: (filter) => events.list(filter),
    meterDeductions: (filter = {}) =>
      meters
        .deductionsList()
        .filter(
          (deduction) =>
            (filter.customerId === undefined || deduction.customerId === filter.customerId) &&
            (filter.meterId === undefined || deduction.meterId === filter.meterId),
        ),
    fault: (route, spec) => faults.add(route, spec),
    clearFaults: () => faults.clear(),
    completeCheckout: (sessionId, form) =>
      admin('completeCheckout', () => checkouts.complete(sessionId, form)),
    renewSubscription: (id) => subscriptions.renew(id),
    cancelSubscription: (id) => subscriptions.cancel(id),
    setWebhookUrl: (url) => webhooks.setUrl(url),
    webhookEvents: () => webhooks.list(),
    webhookDeliveries: () => webhooks.attempts(),
    waitForWebhooks: (filter) => webhooks.waitFor(filter),
    settle: (options = {}) => runtime.settle(options.timeoutMs ?? 10_000),
    requests: () => [...log],
  };
}
