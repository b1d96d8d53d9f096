import { type DodoPayments, NotFoundError, UnprocessableEntityError } from 'dodopayments';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';

describe('Dodo emulator: checkout, payments, refunds, subscriptions', () => {
  let dodo: DodoEmulator;
  let client: DodoPayments;
  let entitlementId: string;
  let customerId: string;

  beforeEach(async () => {
    dodo = await createDodoEmulator();
    client = dodo.client({ maxRetries: 0 });
    entitlementId = dodo.createCreditEntitlement({ precision: 2 }).id;
    customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
  });
  afterEach(() => dodo.close());

  it('serves the checkout page; paying it grants the pack, records the payment and redirects to return_url', async () => {
    const pack = dodo.createCreditPack({
      name: '$10 of credits',
      price: 1000,
      creditEntitlementId: entitlementId,
      credits: '1000',
    });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 2 }],
      customer: { customer_id: customerId },
      return_url: 'https://app.example.com/billing',
    });
    expect(session.checkout_url).toBe(`${dodo.baseURL}/checkout/${session.session_id}`);
    const page = await fetch(session.checkout_url as string);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('$10 of credits × 2: USD 20.00 (2000 credits)');
    expect((await client.checkoutSessions.retrieve(session.session_id)).payment_status).toBeNull();

    const paid = await fetch(session.checkout_url as string, { method: 'POST', redirect: 'manual' });
    expect(paid.status).toBe(303);
    const location = new URL(paid.headers.get('location') as string);
    expect(location.origin + location.pathname).toBe('https://app.example.com/billing');
    const paymentId = location.searchParams.get('payment_id') as string;
    expect(location.searchParams.get('status')).toBe('succeeded');

    const payment = await client.payments.retrieve(paymentId);
    expect(payment).toMatchObject({
      status: 'succeeded',
      total_amount: 2000,
      currency: 'USD',
      checkout_session_id: session.session_id,
    });
    expect(payment.customer.customer_id).toBe(customerId);
    expect((await client.checkoutSessions.retrieve(session.session_id)).payment_status).toBe('succeeded');
    expect(dodo.balance(customerId, entitlementId)).toBe('2000');
    expect(dodo.webhookEvents().map((webhook) => webhook.type)).toEqual([
      'payment.succeeded',
      'credit.added',
    ]);
    const added = dodo.webhookEvents()[1]?.payload.data;
    expect(added).toMatchObject({
      amount: '2000',
      balance_after: '2000',
      reference_id: paymentId,
      transaction_type: 'credit_added',
    });

    // Paying twice is refused; the page says it is paid.
    const again = await fetch(`${session.checkout_url}?complete=1`, { redirect: 'manual' });
    expect(again.status).toBe(409);
    expect(await again.text()).toContain('This checkout is paid');
    expect(() => dodo.completeCheckout(session.session_id)).toThrow(/already paid/);
    await expect(client.payments.retrieve('pay_missing')).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      client.checkoutSessions.create({ product_cart: [{ product_id: 'pdt_missing', quantity: 1 }] }),
    ).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      client.checkoutSessions.create({ product_cart: [{ product_id: pack.product_id, quantity: 0 }] }),
    ).rejects.toBeInstanceOf(UnprocessableEntityError);
  });

  it('refunds a payment: refund.succeeded, and the pack credits leave the balance', async () => {
    const pack = dodo.createCreditPack({
      name: 'Pack',
      price: 500,
      creditEntitlementId: entitlementId,
      credits: '500',
    });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 1 }],
      customer: { email: 'new@example.com', name: 'New' },
    });
    const { payment } = dodo.completeCheckout(session.session_id);
    const buyer = payment.customer.customer_id;
    expect(buyer).not.toBe(customerId);
    expect(dodo.balance(buyer, entitlementId)).toBe('500');

    const partial = await client.refunds.create({
      payment_id: payment.payment_id,
      items: [{ item_id: pack.product_id, amount: 100 }],
    });
    expect(partial).toMatchObject({
      status: 'succeeded',
      amount: 100,
      is_partial: true,
      payment_id: payment.payment_id,
    });
    expect(dodo.balance(buyer, entitlementId)).toBe('400');
    const rest = await client.refunds.create({ payment_id: payment.payment_id, reason: 'changed my mind' });
    // Without items, a refund takes what is left: 400 of 500.
    expect(rest).toMatchObject({ amount: 400, is_partial: true });
    await expect(client.refunds.create({ payment_id: payment.payment_id })).rejects.toBeInstanceOf(
      UnprocessableEntityError,
    );
    await expect(client.refunds.create({ payment_id: 'pay_missing' })).rejects.toBeInstanceOf(NotFoundError);
    const balance = await client.creditEntitlements.balances.retrieve(buyer, {
      credit_entitlement_id: entitlementId,
    });
    expect(balance).toMatchObject({ balance: '0', overage: '0' });
    expect((await client.refunds.retrieve(partial.refund_id)).amount).toBe(100);
    expect((await client.payments.retrieve(payment.payment_id)).refund_status).toBe('full');
    const types = dodo.webhookEvents().map((webhook) => webhook.type);
    expect(types).toEqual([
      'payment.succeeded',
      'credit.added',
      'refund.succeeded',
      'credit.manual_adjustment',
      'refund.succeeded',
      'credit.manual_adjustment',
    ]);
    expect(dodo.ledger({ customerId: buyer }).map((entry) => [entry.transaction_type, entry.amount])).toEqual(
      [
        ['credit_added', '500'],
        ['refund', '100'],
        ['refund', '400'],
      ],
    );
  });

  it('runs a subscription: active, renewed, plan change, cancelled, with billing dates, quantity and product id', async () => {
    const plan = dodo.createSubscriptionProduct({
      name: 'Team',
      price: 2500,
      creditEntitlementId: entitlementId,
      credits: '100',
    });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: plan.product_id, quantity: 3 }],
      customer: { customer_id: customerId },
    });
    const { subscription, payment } = dodo.completeCheckout(session.session_id);
    expect(subscription).toBeDefined();
    const id = subscription?.subscription_id as string;
    expect(payment).toMatchObject({ total_amount: 7500, subscription_id: id });
    expect(dodo.balance(customerId, entitlementId)).toBe('300');

    const active = await client.subscriptions.retrieve(id);
    expect(active).toMatchObject({
      status: 'active',
      quantity: 3,
      product_id: plan.product_id,
      payment_frequency_interval: 'Month',
    });
    const first = { previous: active.previous_billing_date, next: active.next_billing_date };
    expect(new Date(first.next).getUTCMonth()).toBe((new Date(first.previous).getUTCMonth() + 1) % 12);

    dodo.renewSubscription(id);
    const renewed = await client.subscriptions.retrieve(id);
    expect(renewed.previous_billing_date).toBe(first.next);
    expect(dodo.balance(customerId, entitlementId)).toBe('600');

    await client.subscriptions.changePlan(id, {
      product_id: plan.product_id,
      quantity: 5,
      proration_billing_mode: 'do_not_bill',
    });
    expect((await client.subscriptions.retrieve(id)).quantity).toBe(5);
    await expect(client.subscriptions.update(id, { quantity: 2 } as never)).rejects.toBeInstanceOf(
      UnprocessableEntityError,
    );

    const cancelled = await client.subscriptions.update(id, { status: 'cancelled' });
    expect(cancelled).toMatchObject({ status: 'cancelled' });
    expect(cancelled.cancelled_at).toBeTruthy();
    await expect(client.subscriptions.retrieve('sub_missing')).rejects.toBeInstanceOf(NotFoundError);
    expect(() => dodo.renewSubscription(id)).toThrow(/is cancelled, not active/);
    expect((await client.subscriptions.list({ customer_id: customerId })).items).toHaveLength(1);

    const subscriptionEvents = dodo
      .webhookEvents()
      .filter((webhook) => webhook.type.startsWith('subscription.'));
    expect(subscriptionEvents.map((webhook) => webhook.type)).toEqual([
      'subscription.active',
      'subscription.renewed',
      'subscription.plan_changed',
      'subscription.cancelled',
    ]);
    expect(subscriptionEvents[1]?.payload.data).toMatchObject({
      payload_type: 'Subscription',
      subscription_id: id,
      product_id: plan.product_id,
      quantity: 3,
      previous_billing_date: first.next,
      status: 'active',
    });
    expect(subscriptionEvents[2]?.payload.data).toMatchObject({ quantity: 5 });
    const payments = await client.payments.list({ subscription_id: id });
    expect(payments.items).toHaveLength(2);
  });

  it('cancels at the end of the period when asked, through PATCH and renewSubscription', async () => {
    const plan = dodo.createSubscriptionProduct({ name: 'Plus', price: 2000 });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: plan.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
    });
    const id = dodo.completeCheckout(session.session_id).subscription?.subscription_id as string;
    const updated = await client.subscriptions.update(id, { cancel_at_next_billing_date: true });
    expect(updated).toMatchObject({ status: 'active', cancel_at_next_billing_date: true });
    expect(dodo.renewSubscription(id).status).toBe('cancelled');
    expect(dodo.webhookEvents().map((webhook) => webhook.type)).toEqual([
      'payment.succeeded',
      'subscription.active',
      'subscription.updated',
      'subscription.cancelled',
    ]);
  });
});
