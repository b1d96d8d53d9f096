import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiAccountCheckout, findApiAccount } from '../../src/api-account.js';
import { ConfigError } from '../../src/errors.js';
import { applySetup } from '../../src/setup/apply.js';
import { planSetup } from '../../src/setup/plan.js';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';
import { SEED_PRICING } from './support.js';

/**
 * The whole path Dodo documents, on the emulator through the real SDK: setup's usage plan, a
 * customer's API account opened through its checkout, a credit pack, usage events. Only the
 * customer with the account is deducted: Dodo's meters bill credits through a usage-based
 * subscription.
 */
describe('the API account: the usage-plan subscription through which Dodo deducts usage', () => {
  let emulator: DodoEmulator;
  let ids: Awaited<ReturnType<typeof applySetup>>['ids'];

  beforeAll(async () => {
    emulator = await createDodoEmulator({ meterDelayMs: 0 });
    const result = await applySetup(
      planSetup({ pricing: SEED_PRICING, creditsPerDollar: 100, meters: { strategy: 'weighted' } }),
      emulator.client({ maxRetries: 0 }),
    );
    expect(result.ok).toBe(true);
    ids = result.ids;
  });
  afterAll(() => emulator.close());

  /** Buys the $5 pack (500 credits) through a checkout. */
  async function buyPack(customerId: string) {
    const session = await emulator.client().checkoutSessions.create({
      product_cart: [{ product_id: ids.products['top-up-5']!, quantity: 1 }],
      customer: { customer_id: customerId },
    });
    emulator.completeCheckout(session.session_id);
  }

  /** 1,000 GPT-4o input tokens, weighted: 50,000 units = 0.25 credit (a quarter of a cent). */
  async function use(customerId: string, id: string) {
    await emulator.client().usageEvents.ingest({
      events: [
        {
          event_id: id,
          customer_id: customerId,
          event_name: 'llm.input_tokens',
          metadata: { model: 'gpt-4o', tokens: 50_000, raw_tokens: 1000, weight: 50 },
        },
      ],
    });
    await emulator.settle();
  }

  it('has usage deducted for a customer whose account is open, and not for one who only buys packs', async () => {
    const dodo = emulator.client({ maxRetries: 0 });
    const opened = emulator.createCustomer({ email: 'opened@example.com' }).customer_id;
    const packOnly = emulator.createCustomer({ email: 'packs@example.com' }).customer_id;

    const checkout = await createApiAccountCheckout({
      dodo,
      usagePlanProductId: ids.usagePlanProductId!,
      customer: { customerId: opened },
      returnUrl: 'https://app.example.com/billing',
    });
    expect(checkout).toMatchObject({
      status: 'checkout',
      checkoutUrl: expect.stringContaining('/checkout/'),
    });
    if (checkout.status !== 'checkout') throw new Error('no checkout');
    // The customer pays nothing: the plan is $0; the card is kept as an on-demand mandate.
    const { subscription, payment } = emulator.completeCheckout(checkout.sessionId);
    expect(payment).toBeUndefined();
    expect(subscription).toMatchObject({
      status: 'active',
      on_demand: true,
      product_id: ids.usagePlanProductId,
    });
    expect(subscription?.meter_credit_entitlement_cart).toHaveLength(2);

    for (const customer of [opened, packOnly]) await buyPack(customer);
    await use(opened, 'e-opened');
    await use(packOnly, 'e-packs');
    expect(emulator.balance(opened, ids.creditEntitlementId!)).toBe('499.75');
    expect(emulator.balance(packOnly, ids.creditEntitlementId!)).toBe('500');

    // Opening it again creates nothing: a second subscription would bill the usage twice.
    const again = await createApiAccountCheckout({
      dodo,
      usagePlanProductId: ids.usagePlanProductId!,
      customer: { customerId: opened },
      returnUrl: 'https://app.example.com/billing',
    });
    expect(again).toMatchObject({
      status: 'exists',
      account: { subscription_id: subscription?.subscription_id },
    });
    expect(
      await findApiAccount({ dodo, usagePlanProductId: ids.usagePlanProductId!, customerId: packOnly }),
    ).toBeUndefined();
  });

  it('creates the customer at checkout when given an email, and can leave the card unsaved', async () => {
    const dodo = emulator.client({ maxRetries: 0 });
    const checkout = await createApiAccountCheckout({
      dodo,
      usagePlanProductId: ids.usagePlanProductId!,
      customer: { email: 'new@example.com', name: 'New' },
      returnUrl: 'https://app.example.com/welcome',
      saveCard: false,
    });
    if (checkout.status !== 'checkout') throw new Error('no checkout');
    const paid = await fetch(checkout.checkoutUrl, { method: 'POST', redirect: 'manual' });
    const location = new URL(paid.headers.get('location')!);
    expect(location.pathname).toBe('/welcome');
    const subscriptionId = location.searchParams.get('subscription_id')!;
    expect(await dodo.subscriptions.retrieve(subscriptionId)).toMatchObject({
      status: 'active',
      on_demand: false,
      customer: { email: 'new@example.com' },
    });
  });

  it('refuses a missing plan id or return URL at once, and never waits past its deadline', async () => {
    const dodo = emulator.client({ maxRetries: 0 });
    await expect(
      createApiAccountCheckout({
        dodo,
        usagePlanProductId: '',
        customer: { customerId: 'cus_1' },
        returnUrl: 'x',
      }),
    ).rejects.toBeInstanceOf(ConfigError);
    await expect(
      createApiAccountCheckout({
        dodo,
        usagePlanProductId: ids.usagePlanProductId!,
        customer: { email: 'a@example.com' },
        returnUrl: 'not a url',
      }),
    ).rejects.toThrow(/returnUrl/);
    emulator.fault('GET /subscriptions', { hang: true });
    const started = Date.now();
    await expect(
      findApiAccount({
        dodo,
        usagePlanProductId: ids.usagePlanProductId!,
        customerId: 'cus_1',
        timeoutMs: 200,
      }),
    ).rejects.toThrow(/within 200 ms/);
    expect(Date.now() - started).toBeLessThan(1000);
    emulator.clearFaults();
  });
});
