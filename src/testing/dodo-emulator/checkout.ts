import type { DodoPayments } from 'dodopayments';
import { type CreditUnits, formatCreditUnits } from './amounts.js';
import { amountOf, type Catalog } from './catalog.js';
import { ApiError, DodoEmulatorError, invalid, notFound } from './errors.js';
import type { CartItem, Payments } from './payments.js';
import type { Runtime } from './runtime.js';
import type { Subscriptions } from './subscriptions.js';
import * as read from './validate.js';

interface Session {
  id: string;
  createdAt: number;
  cart: CartItem[];
  customerId: string | undefined;
  newCustomer: { email: string; name?: string } | undefined;
  returnUrl: string | undefined;
  metadata: Record<string, string | number | boolean>;
  recurring: boolean;
  onDemand: { mandateOnly: boolean; productPrice?: number } | undefined;
  billingCurrency: string | undefined;
  paymentId: string | undefined;
  subscriptionId: string | undefined;
  completed: boolean;
}

/** What completing a checkout produced. */
export interface CheckoutResult {
  /** The payment, or undefined for an on-demand subscription that only authorised a mandate. */
  payment: DodoPayments.Payment | undefined;
  subscription: DodoPayments.Subscription | undefined;
  /** Where the browser goes next (`return_url` with `payment_id`, `status`, `subscription_id`). */
  redirectUrl: string | undefined;
}

/**
 * Checkout sessions. `POST /checkouts` answers a `checkout_url` served by the emulator itself;
 * completing it (the page's Pay button, or `emulator.completeCheckout()`) records the payment,
 * starts the subscription if the product recurs, and grants the products' credits.
 */
export class Checkouts {
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly runtime: Runtime,
    private readonly catalog: Catalog,
    private readonly payments: Payments,
    private readonly subscriptions: Subscriptions,
    private readonly baseURL: () => string,
  ) {}

  create(input: unknown): DodoPayments.CheckoutSessionResponse {
    const body = read.object(input, 'body');
    const rawCart = read.array(body, 'product_cart');
    if (rawCart.length === 0) throw invalid('product_cart must hold at least one product.');
    const cart = rawCart.map((raw, index) => this.cartItem(raw, index));
    const recurring = cart.filter((item) => this.catalog.product(item.productId).is_recurring).length;
    if (recurring > 0 && cart.length > 1) {
      throw invalid('A subscription product must be the only item of product_cart.');
    }
    let customerId: string | undefined;
    let newCustomer: Session['newCustomer'];
    if (body.customer !== undefined && body.customer !== null) {
      const customer = read.object(body.customer, 'customer');
      if (typeof customer.customer_id === 'string')
        customerId = this.catalog.customer(customer.customer_id).customer_id;
      else
        newCustomer = { email: read.string(customer, 'email'), name: read.optionalString(customer, 'name') };
    }
    const returnUrl = read.optionalString(body, 'return_url');
    if (returnUrl !== undefined && !URL.canParse(returnUrl))
      throw invalid('return_url must be an absolute URL.');
    const onDemand = this.onDemandOf(body.subscription_data);
    if (onDemand && recurring === 0) {
      throw invalid('subscription_data.on_demand needs a subscription product in product_cart.');
    }
    const session: Session = {
      id: this.runtime.id('cks'),
      createdAt: this.runtime.now(),
      cart,
      customerId,
      newCustomer,
      returnUrl,
      metadata: read.metadata(body.metadata),
      recurring: recurring > 0,
      onDemand,
      billingCurrency: this.billingCurrencyOf(body, cart),
      paymentId: undefined,
      subscriptionId: undefined,
      completed: false,
    };
    this.sessions.set(session.id, session);
    return {
      session_id: session.id,
      checkout_url: `${this.baseURL()}/checkout/${session.id}`,
      client_secret: null,
      payment_id: null,
      publishable_key: null,
    };
  }

  private billingCurrencyOf(body: read.Body, cart: CartItem[]): string | undefined {
    const currency = read.optionalString(body, 'billing_currency');
    const [first] = cart;
    if (first) this.payments.rateOf(currency, this.catalog.product(first.productId).price.currency);
    return currency;
  }

  /**
   * `subscription_data.on_demand`: `mandate_only` is required ("Ensure on_demand.mandate_only is
   * provided on creation", https://docs.dodopayments.com/developer-resources/ondemand-subscriptions).
   */
  private onDemandOf(raw: unknown): Session['onDemand'] {
    if (raw === undefined || raw === null) return undefined;
    const data = read.object(raw, 'subscription_data');
    if (data.on_demand === undefined || data.on_demand === null) return undefined;
    const onDemand = read.object(data.on_demand, 'subscription_data.on_demand');
    const mandateOnly = read.optionalBoolean(onDemand, 'mandate_only');
    if (mandateOnly === undefined) throw invalid('subscription_data.on_demand.mandate_only is required.');
    const productPrice =
      onDemand.product_price === undefined || onDemand.product_price === null
        ? undefined
        : read.integer(onDemand, 'product_price', { min: 0 });
    return { mandateOnly, productPrice };
  }

  private cartItem(raw: unknown, index: number): CartItem {
    const item = read.object(raw, `product_cart[${index}]`);
    const product = this.catalog.product(read.string(item, 'product_id'));
    const quantity = read.integer(item, 'quantity', { min: 1 });
    let credits: Map<string, CreditUnits> | undefined;
    if (Array.isArray(item.credit_entitlements)) {
      credits = new Map();
      const attached = new Set(
        this.catalog.creditsOf(product.product_id).map((entry) => entry.entitlementId),
      );
      for (const [position, rawOverride] of item.credit_entitlements.entries()) {
        const field = `product_cart[${index}].credit_entitlements[${position}]`;
        const override = read.object(rawOverride, field);
        const entitlementId = read.string(override, 'credit_entitlement_id');
        if (!attached.has(entitlementId))
          throw invalid(`${field}: ${entitlementId} is not attached to ${product.product_id}.`);
        credits.set(entitlementId, read.credits(override.credits_amount, `${field}.credits_amount`));
      }
    }
    return { productId: product.product_id, quantity, credits };
  }

  private session(id: string): Session {
    const session = this.sessions.get(id);
    if (!session) throw notFound('Checkout session', id);
    return session;
  }

  status(id: string): DodoPayments.CheckoutSessionStatus {
    const session = this.session(id);
    const customerId = session.customerId;
    const customer = customerId ? this.catalog.customer(customerId) : undefined;
    return {
      id: session.id,
      created_at: this.runtime.iso(session.createdAt),
      customer_email: customer?.email ?? session.newCustomer?.email ?? null,
      customer_name: customer?.name ?? session.newCustomer?.name ?? null,
      payment_id: session.paymentId ?? null,
      payment_status: session.paymentId ? 'succeeded' : null,
    };
  }

  /** Pays the session, as the customer pressing Pay would. A session is paid at most once. */
  complete(id: string, form: { email?: string; name?: string } = {}): CheckoutResult {
    const session = this.sessions.get(id);
    if (!session)
      throw new DodoEmulatorError(`completeCheckout: unknown checkout session ${JSON.stringify(id)}.`);
    if (session.completed) {
      throw new ApiError(
        409,
        'CHECKOUT_SESSION_CONSUMED',
        `Checkout session ${id} is already completed (${session.paymentId ?? session.subscriptionId}).`,
      );
    }
    const customerId = session.customerId ?? this.customerFor(session, form);
    session.customerId = customerId;
    let subscription: DodoPayments.Subscription | undefined;
    let payment: DodoPayments.Payment | undefined;
    const [first] = session.cart;
    if (session.recurring && first) {
      ({ subscription, payment } = this.subscriptions.start({
        customerId,
        productId: first.productId,
        quantity: first.quantity,
        checkoutSessionId: session.id,
        metadata: session.metadata,
        onDemand: session.onDemand,
        billingCurrency: session.billingCurrency,
      }));
      session.subscriptionId = subscription.subscription_id;
    } else {
      payment = this.payments.succeed({
        customerId,
        cart: session.cart,
        checkoutSessionId: session.id,
        metadata: session.metadata,
        grantSource: 'one_time',
        billingCurrency: session.billingCurrency,
      });
    }
    session.paymentId = payment?.payment_id;
    session.completed = true;
    return { payment, subscription, redirectUrl: this.redirectUrl(session) };
  }

  private customerFor(session: Session, form: { email?: string; name?: string }): string {
    const email =
      session.newCustomer?.email ??
      form.email ??
      `customer-${session.id.slice(4, 12).toLowerCase()}@example.com`;
    const name = session.newCustomer?.name ?? form.name;
    return this.catalog.createCustomer({ email, name }).customer_id;
  }

  private redirectUrl(session: Session): string | undefined {
    if (!session.returnUrl) return undefined;
    const url = new URL(session.returnUrl);
    if (session.paymentId) url.searchParams.set('payment_id', session.paymentId);
    if (session.subscriptionId) url.searchParams.set('subscription_id', session.subscriptionId);
    url.searchParams.set('status', 'succeeded');
    return url.toString();
  }

  /** The plain-HTML checkout page. */
  page(id: string): string {
    const session = this.session(id);
    const lines = session.cart.map((item) => {
      const product = this.catalog.product(item.productId);
      const price = formatMinor(amountOf(product.price) * item.quantity, product.price.currency);
      const credits = this.catalog
        .creditsOf(item.productId)
        .map((grant) => `${formatCreditUnits(grant.credits * BigInt(item.quantity))} credits`)
        .join(', ');
      const every = product.is_recurring ? ' per period' : '';
      return `<li>${escapeHtml(product.name ?? product.product_id)} × ${item.quantity}: ${price}${every}${credits ? ` (${escapeHtml(credits)})` : ''}</li>`;
    });
    const body = session.completed
      ? `<p>This checkout is complete (${escapeHtml(session.paymentId ?? session.subscriptionId ?? '')}).</p>`
      : `<form method="post" action="/checkout/${escapeHtml(session.id)}">
${session.customerId || session.newCustomer ? '' : '<p><label>Email <input name="email" type="email" required></label></p>\n'}<button type="submit">Pay (emulated card 4242)</button>
</form>`;
    return page('Checkout', `<h1>Checkout</h1>\n<ul>\n${lines.join('\n')}\n</ul>\n${body}`);
  }

  /** The page shown after paying when the session has no `return_url`. */
  paidPage(result: CheckoutResult): string {
    return page(
      'Payment complete',
      `<h1>Payment complete</h1>\n<p>${result.payment ? `Payment <code>${escapeHtml(result.payment.payment_id)}</code> succeeded.` : `Subscription <code>${escapeHtml(result.subscription?.subscription_id ?? '')}</code> is active: the payment method is saved.`}</p>`,
    );
  }
}

function page(title: string, content: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)} · Dodo Payments emulator</title></head>
<body>
${content}
<p><small>Dodo Payments emulator: no real payment is made.</small></p>
</body></html>
`;
}

function formatMinor(amount: number, currency: string): string {
  return `${currency} ${(BigInt(amount) / 100n).toString()}.${String(amount % 100).padStart(2, '0')}`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}
