import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { DodoWebhooksOptions } from '../../src/dodo-webhooks/index.js';
import type { BillingStore } from '../../src/store/types.js';
import type { DodoEmulator } from '../../src/testing/index.js';
import { requireRedis } from '../support/redis.js';
import { startReceiver } from '../testing/webhook-receiver.js';
import {
  eventBody,
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
  async function setup() {
    let clock = Date.now() - 60_000;
    dodo = await startEmulator({ now: () => clock });
    const emulator = dodo;
    const customerId = emulator.createCustomer({ email: 'team@example.com' }).customer_id;
    const plus = emulator.createSubscriptionProduct({ name: 'Plus', price: 2000 });
    const team = emulator.createSubscriptionProduct({ name: 'Team', price: 3000 });
    const { store } = await kind.open();
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
});
