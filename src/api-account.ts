import type DodoPayments from 'dodopayments';
import { withDeadline } from './dodo-call.js';
import { ConfigError } from './errors.js';
import { DodoUnavailableError } from './require-credits/balance-fetcher.js';

/**
 * A customer's API account on Dodo: their subscription to the $0 usage plan that `setup` creates
 * (`usagePlanProductId`). Dodo's meters deduct credits only through a usage-based product the
 * customer is subscribed to ("For usage-based products, meters automatically deduct credits",
 * https://docs.dodopayments.com/features/credit-based-billing): without this subscription a
 * customer's credit packs are never drawn down by their usage on Dodo.
 */
export type ApiAccount = DodoPayments.Subscriptions.SubscriptionListResponse;

/** Statuses of a subscription that still exists (not over): a second one would bill usage twice. */
const LIVE: ReadonlySet<string> = new Set(['pending', 'active', 'past_due', 'on_hold', 'paused']);

export interface FindApiAccountOptions {
  dodo: DodoPayments;
  /** The usage plan's product id (`setup` prints it as `usagePlanProductId`). */
  usagePlanProductId: string;
  customerId: string;
  /** Deadline of the Dodo call, in ms. @default 10_000 */
  timeoutMs?: number;
}

/**
 * The customer's API account — their live subscription to the usage plan, whatever its status —
 * or undefined when they have none (or only ended ones). Only an `active` one has Dodo deduct
 * their usage.
 */
export async function findApiAccount(options: FindApiAccountOptions): Promise<ApiAccount | undefined> {
  const { dodo, usagePlanProductId } = checkPlan(options);
  const { customerId } = options;
  if (typeof customerId !== 'string' || customerId === '') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      'findApiAccount: `customerId` must be a non-empty string.',
    );
  }
  const page = await call(options.timeoutMs, 'the subscriptions list', (request) =>
    dodo.subscriptions.list(
      { customer_id: customerId, product_id: usagePlanProductId, page_size: 100 },
      request,
    ),
  );
  return page.items.find(
    (subscription) =>
      subscription.product_id === usagePlanProductId &&
      subscription.customer.customer_id === customerId &&
      LIVE.has(subscription.status),
  );
}

export interface ApiAccountCheckoutOptions extends Omit<FindApiAccountOptions, 'customerId'> {
  /** An existing Dodo customer (`{ customerId }`), or who the checkout creates (`{ email, name? }`). */
  customer: { customerId: string } | { email: string; name?: string };
  /** Where Dodo's checkout sends the customer back (with `subscription_id` and `status`). */
  returnUrl: string;
  /**
   * Keep the customer's payment method as an on-demand mandate, charged nothing now: the
   * subscription can then be charged later with `dodo.subscriptions.charge` (auto-recharge)
   * (https://docs.dodopayments.com/developer-resources/ondemand-subscriptions). @default true
   */
  saveCard?: boolean;
  metadata?: Record<string, string>;
}

/** What `createApiAccountCheckout` did. */
export type ApiAccountCheckout =
  /** The customer already has an account (a live subscription to the plan): no checkout. */
  | { status: 'exists'; account: ApiAccount }
  /** A checkout to send the customer to; paying it (nothing: the plan is $0) opens the account. */
  | { status: 'checkout'; checkoutUrl: string; sessionId: string };

/**
 * Opens a customer's API account: a Dodo checkout session for the $0 usage plan (default: saving
 * their card as an on-demand mandate, for auto-recharge). A customer who already holds a live
 * subscription to the plan gets none — a second would have Dodo's meters deduct their usage
 * twice. Call it at sign-up, before they buy credits.
 *
 * @example
 * ```ts
 * const opened = await createApiAccountCheckout({
 *   dodo, usagePlanProductId, customer: { customerId }, returnUrl: 'https://app.example.com/billing',
 * });
 * if (opened.status === 'checkout') res.redirect(opened.checkoutUrl);
 * ```
 */
export async function createApiAccountCheckout(
  options: ApiAccountCheckoutOptions,
): Promise<ApiAccountCheckout> {
  const { dodo, usagePlanProductId } = checkPlan(options);
  if (typeof options.returnUrl !== 'string' || !URL.canParse(options.returnUrl)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      'createApiAccountCheckout: `returnUrl` must be an absolute URL.',
    );
  }
  const { customer } = options;
  if ('customerId' in customer) {
    const account = await findApiAccount({ ...options, customerId: customer.customerId });
    if (account) return { status: 'exists', account };
  }
  const session = await call(options.timeoutMs, 'the checkout session', (request) =>
    dodo.checkoutSessions.create(
      {
        product_cart: [{ product_id: usagePlanProductId, quantity: 1 }],
        customer:
          'customerId' in customer
            ? { customer_id: customer.customerId }
            : { email: customer.email, ...(customer.name ? { name: customer.name } : {}) },
        return_url: options.returnUrl,
        ...(options.saveCard === false ? {} : { subscription_data: { on_demand: { mandate_only: true } } }),
        metadata: { elb_api_account: 'true', ...options.metadata },
      },
      request,
    ),
  );
  if (!session.checkout_url) {
    throw new DodoUnavailableError(
      `Dodo created checkout session ${session.session_id} without a checkout_url.`,
    );
  }
  return { status: 'checkout', checkoutUrl: session.checkout_url, sessionId: session.session_id };
}

function checkPlan<T extends { dodo: DodoPayments; usagePlanProductId: string }>(options: T): T {
  if (!options?.dodo) {
    throw new ConfigError(
      'ERR_ELB_MISSING_OPTION',
      'API account: `dodo` (a DodoPayments client) is required.',
    );
  }
  if (typeof options.usagePlanProductId !== 'string' || options.usagePlanProductId === '') {
    throw new ConfigError(
      'ERR_ELB_MISSING_OPTION',
      'API account: `usagePlanProductId` is required — the usage plan `express-llm-billing setup` prints.',
    );
  }
  return options;
}

function call<T>(
  timeoutMs: number | undefined,
  what: string,
  request: (options: { timeout: number; maxRetries: 0; signal: AbortSignal }) => Promise<T>,
): Promise<T> {
  const deadline = timeoutMs ?? 10_000;
  return withDeadline(
    deadline,
    () => new DodoUnavailableError(`Dodo did not answer ${what} within ${deadline} ms.`),
    request,
  );
}
