import express from 'express';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { DodoWebhooksOptions } from '../../src/dodo-webhooks/index.js';
import { softCapRouter } from '../../src/soft-cap-router/index.js';
import { subscriptionPeriod } from '../../src/store/subscription-period.js';
import type { BillingStore } from '../../src/store/types.js';
import type { DodoEmulator } from '../../src/testing/index.js';
import { requireRedis } from '../support/redis.js';
import { startReceiver } from '../testing/webhook-receiver.js';
import {
  eventBody,
  listen,
  post,
  postSigned,
  quietLogger,
  type Running,
  replayHeaders,
  startEmulator,
  startWebhookApp,
  storeKinds,
} from './support.js';

const redisUrl = await requireRedis('dodoWebhooks subscriptions on RedisStore');
const { kinds, cleanup } = storeKinds(redisUrl);
afterAll(cleanup);

describe.each(kinds)('dodoWebhooks: subscription plan state ($name)', (kind) => {
  let dodo: DodoEmulator | undefined;
  let receiver: Awaited<ReturnType<typeof startReceiver>> | undefined;
  const running: Running[] = [];
  const stores: BillingStore[] = [];

  afterEach(async () => {
    await dodo?.close();
    await receiver?.close();
    dodo = receiver = undefined;
    for (const server of running.splice(0)) await server.close();
    for (const store of stores.splice(0)) await store.close();
  });

  /** An emulator whose clock (a minute behind) moves one second per `tick()`, and a store. */
  async function setup(storeClock?: () => number) {
    let clock = Date.now() - 60_000;
    dodo = await startEmulator({ now: () => clock });
    const emulator = dodo;
    const customerId = emulator.createCustomer({ email: 'team@example.com' }).customer_id;
    const plus = emulator.createSubscriptionProduct({ name: 'Plus', price: 2000 });
    const team = emulator.createSubscriptionProduct({ name: 'Team', price: 3000 });
    const { store } = await kind.open(storeClock);
    stores.push(store);
    const startApp = async (extra: Partial<DodoWebhooksOptions> = {}) => {
      const app = await startWebhookApp({
        store,
        webhookKey: emulator.webhookKey,
        logger: quietLogger,
        ...extra,
      });
      running.push(app);
      emulator.setWebhookUrl(app.webhookUrl);
      return app;
    };
    const subscribe = async (productId: string, quantity: number) => {
      const session = await emulator.client().checkoutSessions.create({
        product_cart: [{ product_id: productId, quantity }],
        customer: { customer_id: customerId },
      });
      const subscription = emulator.completeCheckout(session.session_id).subscription;
      if (!subscription) throw new Error('no subscription');
      return subscription;
    };
    const tick = () => {
      clock += 1000;
    };
    return { dodo: emulator, store, customerId, plus, team, startApp, subscribe, tick };
  }

  it('records the plan from subscription.active: status, product, seats and current period', async () => {
    const { dodo, store, customerId, plus, startApp, subscribe } = await setup();
    await startApp();
    const subscription = await subscribe(plus.product_id, 3);
    const [active] = await dodo.waitForWebhooks({ type: 'subscription.active' });
    expect(await store.getSubscriptions(customerId)).toEqual([
      {
        subscriptionId: subscription.subscription_id,
        productId: plus.product_id,
        status: 'active',
        quantity: 3,
        periodStart: Date.parse(subscription.previous_billing_date),
        periodEnd: Date.parse(subscription.next_billing_date),
        updatedAt: Date.parse(active?.payload.timestamp as string),
      },
    ]);
  });

  it('keeps the newest state when renewal, plan change and cancellation arrive twice and in reverse', async () => {
    const { dodo, store, customerId, plus, team, startApp, subscribe, tick } = await setup();
    receiver = await startReceiver();
    dodo.setWebhookUrl(receiver.url);
    const { subscription_id: id } = await subscribe(plus.product_id, 1);
    tick();
    const renewed = dodo.renewSubscription(id);
    const period = { start: renewed.previous_billing_date, end: renewed.next_billing_date };
    tick();
    await dodo.client().subscriptions.changePlan(id, {
      product_id: team.product_id,
      quantity: 5,
      proration_billing_mode: 'prorated_immediately',
    });
    tick();
    dodo.cancelSubscription(id);
    await dodo.settle();
    const received = receiver.received.filter((delivery) =>
      JSON.parse(delivery.body).type.startsWith('subscription.'),
    );
    expect(received.map((delivery) => JSON.parse(delivery.body).type)).toEqual([
      'subscription.active',
      'subscription.renewed',
      'subscription.plan_changed',
      'subscription.cancelled',
    ]);
    const app = await startApp();
    for (const delivery of [...received].reverse()) {
      for (let copy = 0; copy < 2; copy += 1) {
        expect((await post(app.webhookUrl, delivery.body, replayHeaders(delivery))).status).toBe(200);
      }
    }
    expect(await store.getSubscriptions(customerId)).toEqual([
      expect.objectContaining({
        subscriptionId: id,
        productId: team.product_id,
        status: 'cancelled',
        quantity: 5,
        periodStart: Date.parse(period.start),
        periodEnd: Date.parse(period.end),
      }),
    ]);
  });

  it('follows live updates through the emulator: renewal moves the period, plan change the seats', async () => {
    const { dodo, store, customerId, plus, team, startApp, subscribe, tick } = await setup();
    await startApp();
    const { subscription_id: id } = await subscribe(plus.product_id, 1);
    tick();
    const renewed = dodo.renewSubscription(id);
    await dodo.waitForWebhooks({ type: 'subscription.renewed' });
    expect(await store.getSubscriptions(customerId)).toMatchObject([
      {
        status: 'active',
        productId: plus.product_id,
        periodStart: Date.parse(renewed.previous_billing_date),
        periodEnd: Date.parse(renewed.next_billing_date),
      },
    ]);
    tick();
    await dodo.client().subscriptions.changePlan(id, {
      product_id: team.product_id,
      quantity: 4,
      proration_billing_mode: 'prorated_immediately',
    });
    await dodo.waitForWebhooks({ type: 'subscription.plan_changed' });
    expect(await store.getSubscriptions(customerId)).toMatchObject([
      { productId: team.product_id, quantity: 4 },
    ]);
  });

  it('ignores an update older than the stored one, and counts seats from a configured add-on', async () => {
    const { dodo, store, customerId, team, startApp } = await setup();
    const app = await startApp({ seatAddonId: 'adn_seat' });
    const update = (timestamp: Date, status: string, seats: number) =>
      postSigned(app.webhookUrl, {
        secret: dodo.webhookKey,
        body: eventBody(
          'subscription.updated',
          {
            subscription_id: 'sub_1',
            customer: { customer_id: customerId },
            product_id: team.product_id,
            status,
            quantity: 1,
            addons: [
              { addon_id: 'adn_other', quantity: 99 },
              { addon_id: 'adn_seat', quantity: seats },
            ],
            previous_billing_date: '2026-11-01T00:00:00.000Z',
            next_billing_date: '2026-12-01T00:00:00.000Z',
          },
          timestamp,
        ),
      });
    const now = Date.now();
    expect((await update(new Date(now - 1000), 'active', 7)).status).toBe(200);
    expect((await update(new Date(now - 5000), 'on_hold', 2)).status).toBe(200);
    expect(await store.getSubscriptions(customerId)).toEqual([
      {
        subscriptionId: 'sub_1',
        productId: team.product_id,
        status: 'active',
        quantity: 7,
        periodStart: Date.parse('2026-11-01T00:00:00.000Z'),
        periodEnd: Date.parse('2026-12-01T00:00:00.000Z'),
        updatedAt: now - 1000,
      },
    ]);
  });

  it("keeps a past_due plan until Dodo's grace deadline; on_hold and paused are not subscribed", async () => {
    let now = Date.now();
    const { dodo, store, customerId, plus, startApp, subscribe, tick } = await setup(() => now);
    await startApp();
    const subscription = await subscribe(plus.product_id, 1);
    await dodo.waitForWebhooks({ type: 'subscription.active' });
    // Past the soft cap: a subscribed request is routed to the smaller model.
    const [state] = await store.getSubscriptions(customerId);
    await store.addUsage(customerId, {
      period: subscriptionPeriod(state!),
      counters: { tokens: 10n },
      ttlMs: 90 * 86_400_000,
    });
    const capped = express();
    capped.use(express.json());
    capped.post(
      '/v1/chat/completions',
      softCapRouter({
        store,
        customerId: () => customerId,
        plans: { [plus.product_id]: { softCap: { tokens: 1 }, downgrade: { 'gpt-4o': 'gpt-4o-mini' } } },
        logger: quietLogger,
      }),
      (req, res) => void res.json({ model: (req.body as { model: string }).model }),
    );
    const api = await listen(capped);
    running.push(api);
    const model = async () =>
      (
        (await (
          await fetch(`${api.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'gpt-4o', messages: [] }),
          })
        ).json()) as { model: string }
      ).model;
    expect(await model()).toBe('gpt-4o-mini');

    const endsAt = new Date(now + 60 * 60_000).toISOString();
    tick();
    dodo.setSubscriptionStatus(subscription.subscription_id, 'past_due', { pastDueEndsAt: endsAt });
    await dodo.waitForWebhooks({ type: 'subscription.past_due' });
    expect(await store.getSubscriptions(customerId)).toEqual([
      expect.objectContaining({ status: 'past_due', graceEndsAt: Date.parse(endsAt) }),
    ]);
    // In the grace period the plan holds; past its deadline (the on_hold webhook late) it does not.
    expect(await model()).toBe('gpt-4o-mini');
    const before = now;
    now = Date.parse(endsAt);
    expect(await model()).toBe('gpt-4o');
    now = before;

    for (const status of ['on_hold', 'active', 'paused'] as const) {
      tick();
      dodo.setSubscriptionStatus(subscription.subscription_id, status);
      await dodo.settle();
      expect([status, await model()]).toEqual([status, status === 'active' ? 'gpt-4o-mini' : 'gpt-4o']);
    }
    tick();
    dodo.setSubscriptionStatus(subscription.subscription_id, 'active');
    await dodo.waitForWebhooks({ type: 'subscription.unpaused' });
    expect(await model()).toBe('gpt-4o-mini');
  });
});
