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

    // Paying twice is refused; the page says it is complete.
    const again = await fetch(`${session.checkout_url}?complete=1`, { redirect: 'manual' });
    expect(again.status).toBe(409);
    expect(await again.text()).toContain('This checkout is complete');
    expect(() => dodo.completeCheckout(session.session_id)).toThrow(/already completed/);
    await expect(client.payments.retrieve('pay_missing')).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      client.checkoutSessions.create({ product_cart: [{ product_id: 'pdt_missing', quantity: 1 }] }),
    ).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      client.checkoutSessions.create({ product_cart: [{ product_id: pack.product_id, quantity: 0 }] }),
    ).rejects.toBeInstanceOf(UnprocessableEntityError);
  });

  it('refunds a payment: refund.succeeded, and the pack credits leave the balance (no credit.* webhook: Dodo documents none)', async () => {
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
    const payment = dodo.completeCheckout(session.session_id).payment!;
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
    expect(types).toEqual(['payment.succeeded', 'credit.added', 'refund.succeeded', 'refund.succeeded']);
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

  it("takes a refund's credits back only as far as the balance holds them: a balance never goes below zero", async () => {
    const pack = dodo.createCreditPack({
      name: 'Pack',
      price: 500,
      creditEntitlementId: entitlementId,
      credits: '500',
    });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
    });
    const payment = dodo.completeCheckout(session.session_id).payment!;
    await client.creditEntitlements.balances.createLedgerEntry(customerId, {
      credit_entitlement_id: entitlementId,
      entry_type: 'debit',
      amount: '450',
    });
    await client.refunds.create({ payment_id: payment.payment_id });
    const balance = await client.creditEntitlements.balances.retrieve(customerId, {
      credit_entitlement_id: entitlementId,
    });
    expect(balance).toMatchObject({ balance: '0', overage: '0' });
    expect(dodo.ledger({ customerId }).map((entry) => [entry.transaction_type, entry.amount])).toEqual([
      ['credit_added', '500'],
      ['credit_deducted', '450'],
      ['refund', '50'],
    ]);
  });

  it("charges in the customer's currency under adaptive pricing and settles the price in USD, tax apart", async () => {
    await dodo.close();
    dodo = await createDodoEmulator({ exchangeRates: { INR: '85.5', JPY: '150' }, taxPercent: '18' });
    client = dodo.client({ maxRetries: 0 });
    entitlementId = dodo.createCreditEntitlement({ precision: 2 }).id;
    customerId = dodo.createCustomer({ email: 'ravi@example.com' }).customer_id;
    const pack = dodo.createCreditPack({
      name: '$20',
      price: 2000,
      creditEntitlementId: entitlementId,
      credits: '2000',
    });
    const pay = async (billing_currency?: DodoPayments.Currency) => {
      const session = await client.checkoutSessions.create({
        product_cart: [{ product_id: pack.product_id, quantity: 1 }],
        customer: { customer_id: customerId },
        ...(billing_currency ? { billing_currency } : {}),
      });
      return dodo.completeCheckout(session.session_id).payment!;
    };
    // $20.00 → ₹1,710.00, plus Dodo's 4% fee (₹68.40) = ₹1,778.40, plus 18% tax (₹320.11).
    expect(await pay('INR')).toMatchObject({
      currency: 'INR',
      total_amount: 177840 + 32011,
      tax: 32011,
      settlement_currency: 'USD',
      settlement_amount: 2000 + 360,
      settlement_tax: 360,
    });
    // Zero-decimal currencies convert by their own minor unit: $20 → ¥3,000 (+4% = ¥3,120, +18% tax).
    expect(await pay('JPY')).toMatchObject({
      currency: 'JPY',
      total_amount: 3120 + 561,
      tax: 561,
      settlement_amount: 2360,
    });
    expect(await pay()).toMatchObject({
      currency: 'USD',
      total_amount: 2360,
      tax: 360,
      settlement_amount: 2360,
    });
    // The credits are the pack's, whatever the currency paid.
    expect(dodo.balance(customerId, entitlementId)).toBe('6000');
    await expect(pay('EUR')).rejects.toBeInstanceOf(UnprocessableEntityError);
  });

  it('opens an on-demand subscription whose mandate authorises later charges, and refuses to charge any other', async () => {
    const plan = dodo.createSubscriptionProduct({ name: 'API account', price: 0 });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: plan.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
      subscription_data: { on_demand: { mandate_only: true } },
    });
    const { subscription, payment } = dodo.completeCheckout(session.session_id);
    expect(payment).toBeUndefined();
    const id = subscription!.subscription_id;
    expect(await client.subscriptions.retrieve(id)).toMatchObject({
      status: 'active',
      on_demand: true,
      has_payment_method: true,
    });
    expect(dodo.webhookEvents().map((webhook) => webhook.type)).toEqual(['subscription.active']);
    const charged = await client.subscriptions.charge(id, { product_price: 1000 });
    expect(await client.payments.retrieve(charged.payment_id)).toMatchObject({
      total_amount: 1000,
      subscription_id: id,
      status: 'succeeded',
    });
    await expect(client.subscriptions.charge(id, { product_price: 0 })).rejects.toBeInstanceOf(
      UnprocessableEntityError,
    );
    const other = dodo.subscribe(
      customerId,
      dodo.createSubscriptionProduct({ name: 'Plus', price: 2000 }).product_id,
    );
    await expect(client.subscriptions.charge(other.subscription_id, { product_price: 1000 })).rejects.toThrow(
      /not on-demand/,
    );
    dodo.setSubscriptionStatus(id, 'on_hold');
    await expect(client.subscriptions.charge(id, { product_price: 1000 })).rejects.toThrow(/on_hold/);
    await expect(
      client.checkoutSessions.create({
        product_cart: [{ product_id: plan.product_id, quantity: 1 }],
        subscription_data: { on_demand: {} as never },
      }),
    ).rejects.toThrow(/mandate_only is required/);
  });

  it('fails or holds on-demand charges on demand (declined: payment.failed; requires_action: a status, no webhook), granting nothing', async () => {
    const plan = dodo.createSubscriptionProduct({ name: 'API account', price: 0 });
    const id = dodo.subscribe(customerId, plan.product_id, { onDemand: 'mandate' }).subscription_id;
    const other = dodo.subscribe(customerId, plan.product_id, { onDemand: 'mandate' }).subscription_id;
    dodo.failCharges({ outcome: 'failed', subscriptionId: id, times: 1 });
    dodo.failCharges({ outcome: 'requires_action', times: 1 });
    const before = dodo.webhookEvents().length;
    const declined = await client.subscriptions.charge(id, {
      product_price: 500,
      metadata: { attempt: 'a1' },
    });
    expect(await client.payments.retrieve(declined.payment_id)).toMatchObject({
      status: 'failed',
      total_amount: 500,
      metadata: { attempt: 'a1' },
      error_code: 'CARD_DECLINED',
    });
    const held = await client.subscriptions.charge(other, { product_price: 500 });
    expect(await client.payments.retrieve(held.payment_id)).toMatchObject({
      status: 'requires_customer_action',
    });
    const paid = await client.subscriptions.charge(id, { product_price: 500 });
    expect(await client.payments.retrieve(paid.payment_id)).toMatchObject({ status: 'succeeded' });
    expect(
      dodo
        .webhookEvents()
        .slice(before)
        .map((webhook) => webhook.type),
    ).toEqual(['payment.failed', 'payment.succeeded']);
    expect(dodo.ledger({ customerId })).toEqual([]);
    expect(() => dodo.failCharges({ outcome: 'maybe' as never })).toThrow(/outcome/);
  });

  it('applies a fault after processing when asked: the charge is made, only its answer is lost', async () => {
    const plan = dodo.createSubscriptionProduct({ name: 'API account', price: 0 });
    const id = dodo.subscribe(customerId, plan.product_id, { onDemand: 'mandate' }).subscription_id;
    dodo.fault('POST /subscriptions/{id}/charge', { status: 503, afterProcessing: true, times: 1 });
    await expect(
      client.subscriptions.charge(id, { product_price: 700 }, { maxRetries: 0 }),
    ).rejects.toThrow();
    expect((await client.payments.list({ subscription_id: id })).items).toHaveLength(1);
    dodo.fault('POST /subscriptions/{id}/charge', { status: 503, times: 1 });
    await expect(
      client.subscriptions.charge(id, { product_price: 700 }, { maxRetries: 0 }),
    ).rejects.toThrow();
    expect((await client.payments.list({ subscription_id: id })).items).toHaveLength(1);
  });

  it("moves a subscription through Dodo's statuses, each with its webhook; past_due carries its deadline", async () => {
    const plan = dodo.createSubscriptionProduct({ name: 'Plus', price: 2000 });
    const id = dodo.subscribe(customerId, plan.product_id).subscription_id;
    dodo.setSubscriptionStatus(id, 'past_due', { pastDueEndsAt: '2030-01-08T00:00:00Z' });
    dodo.setSubscriptionStatus(id, 'active');
    dodo.setSubscriptionStatus(id, 'paused');
    dodo.setSubscriptionStatus(id, 'active');
    dodo.setSubscriptionStatus(id, 'on_hold');
    dodo.setSubscriptionStatus(id, 'expired');
    expect(() => dodo.setSubscriptionStatus(id, 'active')).toThrow(/is expired: it is over/);
    const events = dodo.webhookEvents().filter((webhook) => webhook.type.startsWith('subscription.'));
    expect(events.map((webhook) => [webhook.type, webhook.payload.data.status])).toEqual([
      ['subscription.active', 'active'],
      ['subscription.past_due', 'past_due'],
      ['subscription.active', 'active'],
      ['subscription.paused', 'paused'],
      ['subscription.unpaused', 'active'],
      ['subscription.on_hold', 'on_hold'],
      ['subscription.expired', 'expired'],
    ]);
    expect(events[1]?.payload.data.past_due_ends_at).toBe('2030-01-08T00:00:00.000Z');
    expect(events[2]?.payload.data.past_due_ends_at).toBeNull();
  });

  it('opens and resolves disputes with the Dispute payload: amount as a major-unit string, or a number of minor units', async () => {
    const pack = dodo.createCreditPack({
      name: 'Pack',
      price: 1000,
      creditEntitlementId: entitlementId,
      credits: '1000',
    });
    const session = await client.checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
    });
    const payment = dodo.completeCheckout(session.session_id).payment!;
    const dispute = dodo.openDispute(payment.payment_id, { amount: 400 });
    expect(dispute).toMatchObject({ amount: '4.00', currency: 'USD', dispute_status: 'dispute_opened' });
    dodo.resolveDispute(dispute.dispute_id, 'accepted');
    expect(() => dodo.resolveDispute(dispute.dispute_id, 'won')).toThrow(/already dispute_accepted/);
    expect(await client.disputes.retrieve(dispute.dispute_id)).toMatchObject({
      dispute_status: 'dispute_accepted',
      payment_id: payment.payment_id,
    });
    const disputes = dodo.webhookEvents().filter((webhook) => webhook.type.startsWith('dispute.'));
    expect(disputes.map((webhook) => [webhook.type, webhook.payload.data.amount])).toEqual([
      ['dispute.opened', '4.00'],
      ['dispute.accepted', '4.00'],
    ]);
    // Dodo documents no credit movement on a dispute: the balance is untouched.
    expect(dodo.balance(customerId, entitlementId)).toBe('1000');
    expect(() => dodo.openDispute(payment.payment_id, { amount: 1001 })).toThrow(
      /from 1 to the payment's 1000/,
    );

    await dodo.close();
    dodo = await createDodoEmulator({ numericAmounts: true });
    const numeric = dodo.createCreditEntitlement({ precision: 2 }).id;
    const buyer = dodo.createCustomer({ email: 'n@example.com' }).customer_id;
    const numericPack = dodo.createCreditPack({
      name: 'Pack',
      price: 1000,
      creditEntitlementId: numeric,
      credits: '1000',
    });
    const numericSession = await dodo.client().checkoutSessions.create({
      product_cart: [{ product_id: numericPack.product_id, quantity: 1 }],
      customer: { customer_id: buyer },
    });
    const paid = dodo.completeCheckout(numericSession.session_id).payment!;
    dodo.resolveDispute(dodo.openDispute(paid.payment_id, { amount: 400 }).dispute_id, 'lost');
    const types = dodo.webhookEvents().map((webhook) => [webhook.type, webhook.payload.data.amount]);
    expect(types).toEqual([
      ['payment.succeeded', undefined],
      ['credit.added', 1000],
      ['dispute.opened', 400],
      ['dispute.lost', 400],
    ]);
    expect(dodo.webhookEvents()[1]?.payload.data.balance_after).toBe(1000);
  });
});
