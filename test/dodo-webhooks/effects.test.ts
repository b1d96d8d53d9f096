import express from 'express';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type DodoWebhooksOptions, dodoWebhooks } from '../../src/dodo-webhooks/index.js';
import { requireCredits } from '../../src/require-credits/index.js';
import type { BillingStore } from '../../src/store/types.js';
import type { DodoEmulator, DodoEmulatorOptions } from '../../src/testing/index.js';
import { requireRedis } from '../support/redis.js';
import { type Received, startReceiver } from '../testing/webhook-receiver.js';
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
  usd,
  WEBHOOK_PATH,
} from './support.js';

const DAY = 24 * 60 * 60_000;
const redisUrl = await requireRedis('dodoWebhooks effects on RedisStore');
const { kinds, cleanup } = storeKinds(redisUrl);
afterAll(cleanup);

describe.each(kinds)('dodoWebhooks built-in effects: spend and balances ($name)', (kind) => {
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

  /**
   * An emulator with a $20 pack of 2000 credits (credits are cents), a customer, and a store.
   * `clock: 'manual'` gives the emulator a clock a minute behind that `tick()` moves one
   * second, so ledger entries and events have distinct, ordered times.
   */
  async function setup(options: { clock?: 'manual' } & DodoEmulatorOptions = {}) {
    let clock = Date.now() - 60_000;
    dodo = await startEmulator({ ...(options.clock === 'manual' ? { now: () => clock } : {}), ...options });
    const emulator = dodo;
    const entitlementId = emulator.createCreditEntitlement().id;
    const customerId = emulator.createCustomer({ email: 'ada@example.com' }).customer_id;
    const pack = emulator.createCreditPack({
      name: '$20 of credits',
      price: 2000,
      creditEntitlementId: entitlementId,
      credits: 2000,
    });
    const { store } = await kind.open();
    stores.push(store);
    const webhookOptions: DodoWebhooksOptions = {
      store,
      dodo: emulator.client(),
      creditEntitlementId: entitlementId,
      logger: quietLogger,
    };
    const startApp = async (extra: Partial<DodoWebhooksOptions> = {}) => {
      const app = await startWebhookApp({ ...webhookOptions, ...extra });
      running.push(app);
      emulator.setWebhookUrl(app.webhookUrl);
      return app;
    };
    const buyPack = async () => {
      const session = await emulator.client().checkoutSessions.create({
        product_cart: [{ product_id: pack.product_id, quantity: 1 }],
        customer: { customer_id: customerId },
      });
      return emulator.completeCheckout(session.session_id).payment;
    };
    const refund = (paymentId: string, amount?: number) =>
      emulator.client().refunds.create({
        payment_id: paymentId,
        items: [{ item_id: pack.product_id, amount: amount ?? null }],
      });
    const capture = async () => {
      receiver = await startReceiver();
      emulator.setWebhookUrl(receiver.url);
      return receiver.received;
    };
    const tick = () => {
      clock += 1000;
    };
    return {
      dodo: emulator,
      store,
      entitlementId,
      customerId,
      webhookOptions,
      startApp,
      buyPack,
      refund,
      capture,
      tick,
    };
  }

  const replay = (url: string, delivery: Received) => post(url, delivery.body, replayHeaders(delivery));

  it('adds a payment to lifetime spend exactly (minor units → dollars) with its first payment date', async () => {
    const { dodo, store, customerId, entitlementId, startApp, buyPack, tick } = await setup({
      clock: 'manual',
    });
    await startApp();
    const odd = dodo.createCreditPack({
      name: 'odd',
      price: 1999,
      creditEntitlementId: entitlementId,
      credits: 1,
    });
    const first = await buyPack();
    tick();
    const session = await dodo.client().checkoutSessions.create({
      product_cart: [{ product_id: odd.product_id, quantity: 3 }],
      customer: { customer_id: customerId },
    });
    dodo.completeCheckout(session.session_id);
    await dodo.waitForWebhooks({ type: 'payment.succeeded', count: 2 });
    // $20.00 + 3 × $19.99 = $79.97, exactly.
    expect(await store.getSpend(customerId)).toEqual({
      spend: 79_970_000_000_000n,
      firstPaymentAt: Date.parse(first.created_at),
    });
  });

  it('leaves spend and balance exact after a payment, a refund and a top-up, each twice and in reverse', async () => {
    const { dodo, store, customerId, entitlementId, startApp, buyPack, refund, capture, tick } = await setup({
      clock: 'manual',
    });
    const received = await capture();
    const payment = await buyPack(); // payment.succeeded, credit.added (balance 2000)
    tick();
    await refund(payment.payment_id, 500); // refund.succeeded, credit.manual_adjustment (1500)
    tick();
    dodo.addCredits(customerId, entitlementId, '1000'); // credit.added (2500)
    await dodo.settle();
    expect(received.map((delivery) => JSON.parse(delivery.body).type)).toEqual([
      'payment.succeeded',
      'credit.added',
      'refund.succeeded',
      'credit.manual_adjustment',
      'credit.added',
    ]);
    const app = await startApp();
    const answers = [];
    for (const delivery of [...received].reverse()) {
      answers.push((await replay(app.webhookUrl, delivery)).body);
      answers.push((await replay(app.webhookUrl, delivery)).body);
    }
    expect(answers).toEqual(
      received.flatMap(() => [{ received: true }, { received: true, duplicate: true }]),
    );
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('25'), pending: 0n });
    expect(dodo.balance(customerId, entitlementId)).toBe('2500');
  });

  it('leaves spend and balance exact when the emulator delivers every webhook twice and shuffled', async () => {
    const { dodo, store, customerId, entitlementId, startApp, buyPack, refund, tick } = await setup({
      clock: 'manual',
      duplicateWebhooks: true,
      shuffleWebhooks: true,
    });
    await startApp();
    const payment = await buyPack();
    tick();
    await refund(payment.payment_id, 500);
    tick();
    dodo.addCredits(customerId, entitlementId, '1000');
    await dodo.settle();
    expect(dodo.webhookDeliveries()).toHaveLength(10);
    expect(dodo.webhookDeliveries().every((delivery) => delivery.status === 200)).toBe(true);
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('25'), pending: 0n });
  });

  it('never lets an older balance_after overwrite newer local usage; a deduction is not counted twice', async () => {
    const { dodo, store, customerId, entitlementId, startApp, capture, tick } = await setup({
      clock: 'manual',
    });
    const received = await capture();
    dodo.setBalance(customerId, entitlementId, '1000'); // $10, captured: it will arrive late
    await dodo.settle();
    tick();
    const app = await startApp();
    dodo.addCredits(customerId, entitlementId, '500'); // $15
    await dodo.waitForWebhooks({ type: 'credit.added' });
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('15'), pending: 0n });
    // A request settled here for $3; Dodo has not deducted it yet.
    await store.settle({ customerId, settlementId: 'req_1', cost: usd('3'), events: [], retentionMs: DAY });
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('12'), pending: usd('3') });
    // The older manual adjustment (balance_after $10) arrives late: ignored.
    expect((await replay(app.webhookUrl, received[0] as Received)).status).toBe(200);
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('12'), pending: usd('3') });
    // Dodo's meter deducts the $3: the view stays at $12, pending is confirmed.
    tick();
    const meter = dodo.createMeter({
      eventName: 'cents',
      creditEntitlementId: entitlementId,
      meterUnitsPerCredit: '1',
    });
    await dodo.client().usageEvents.ingest({
      events: [
        {
          event_id: 'req_1',
          customer_id: customerId,
          event_name: meter.event_name,
          metadata: { tokens: 300 },
        },
      ],
    });
    await dodo.waitForWebhooks({ type: 'credit.deducted' });
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('12'), pending: 0n });
    expect(dodo.balance(customerId, entitlementId)).toBe('1200');
  });

  it('applies every credit.* ledger event as an observation (overage subtracted), for its entitlement only', async () => {
    const { dodo, store, customerId, entitlementId, startApp } = await setup();
    const app = await startApp();
    const at = Date.now() - 30_000;
    const entry = (
      type: string,
      seconds: number,
      balance: string,
      overage = '0',
      entitlement = entitlementId,
    ) =>
      postSigned(app.webhookUrl, {
        secret: dodo.webhookKey,
        body: eventBody(type, {
          customer_id: customerId,
          credit_entitlement_id: entitlement,
          amount: '1',
          balance_after: balance,
          overage_after: overage,
          created_at: new Date(at + seconds * 1000).toISOString(),
        }),
      });
    const steps: [string, string, string, bigint][] = [
      ['credit.added', '1000', '0', usd('10')],
      ['credit.manual_adjustment', '900', '0', usd('9')],
      ['credit.expired', '800', '0', usd('8')],
      ['credit.rolled_over', '850', '0', usd('8.5')],
      ['credit.rollover_forfeited', '700', '0', usd('7')],
      ['credit.overage_charged', '0', '125.5', usd('-1.255')],
      ['credit.overage_reset', '0', '0', 0n],
      ['credit.deducted', '600', '0', usd('6')],
    ];
    for (const [index, [type, balance, overage, expected]] of steps.entries()) {
      expect((await entry(type, index, balance, overage)).status).toBe(200);
      expect([type, (await store.getBalance(customerId))?.balance]).toEqual([type, expected]);
    }
    expect((await entry('credit.added', 99, '5000', '0', 'cde_other')).status).toBe(200);
    expect((await store.getBalance(customerId))?.balance).toBe(usd('6'));
  });

  it('takes a lost dispute out of spend, finding the customer through the dodo client', async () => {
    const { dodo, store, customerId, startApp, buyPack } = await setup();
    const app = await startApp();
    const payment = await buyPack();
    await dodo.waitForWebhooks({ type: 'credit.added' });
    const lost = {
      dispute_id: 'dsp_1',
      payment_id: payment.payment_id,
      amount: '2000',
      currency: 'USD',
      dispute_status: 'dispute_lost',
      dispute_stage: 'dispute',
      business_id: 'bus_emulator',
      created_at: new Date().toISOString(),
    };
    for (let i = 0; i < 2; i += 1) {
      const answer = await postSigned(app.webhookUrl, {
        secret: dodo.webhookKey,
        body: eventBody('dispute.lost', lost),
      });
      expect(answer.status).toBe(200);
    }
    expect((await store.getSpend(customerId)).spend).toBe(0n);
  });

  it('acknowledges a signed event it cannot read (200, logged) without applying any of it', async () => {
    const { dodo, store, customerId, entitlementId, startApp } = await setup();
    const errors: string[] = [];
    const app = await startApp({ logger: { warn: () => {}, error: (message) => void errors.push(message) } });
    await store.syncBalance(customerId, usd('5'), 1);
    const entry = {
      id: 'cle_bad',
      customer_id: customerId,
      credit_entitlement_id: entitlementId,
      amount: '1',
      balance_before: '500',
      balance_after: 'a lot',
      overage_after: '0',
      created_at: new Date().toISOString(),
    };
    const unreadable = [
      eventBody('credit.deducted', entry),
      eventBody('credit.added', { ...entry, balance_after: '600', overage_after: '1e' }),
      eventBody('refund.succeeded', {
        refund_id: 'ref_bad',
        customer: { customer_id: customerId },
        amount: 12.5,
      }),
      eventBody('payment.succeeded', {
        payment_id: 'pay_bad',
        customer: { customer_id: customerId },
        total_amount: 1.5,
      }),
    ];
    for (const body of unreadable) {
      const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, body });
      expect(answer.status).toBe(200);
      expect(answer.body).toMatchObject({ received: true, ignored: expect.any(String) });
    }
    expect(errors).toHaveLength(4);
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('5'), pending: 0n });
    expect(await store.getSpend(customerId)).toEqual({ spend: 0n, firstPaymentAt: undefined });
  });

  it('calls the app handler for credit.balance_low with the verified event', async () => {
    const { dodo, customerId, entitlementId, startApp } = await setup({ balanceLowThreshold: '500' });
    const low: unknown[] = [];
    await startApp({ on: { 'credit.balance_low': (event) => void low.push(event.data) } });
    dodo.setBalance(customerId, entitlementId, '1000');
    const meter = dodo.createMeter({
      eventName: 'cents',
      creditEntitlementId: entitlementId,
      meterUnitsPerCredit: '1',
    });
    await dodo.client().usageEvents.ingest({
      events: [
        { event_id: 'e1', customer_id: customerId, event_name: meter.event_name, metadata: { tokens: 600 } },
      ],
    });
    await dodo.waitForWebhooks({ type: 'credit.balance_low' });
    expect(low).toEqual([
      expect.objectContaining({ customer_id: customerId, available_balance: '400', threshold_amount: '500' }),
    ]);
  });

  describe('with requireCredits in front of an API route', () => {
    async function startApi(
      context: Awaited<ReturnType<typeof setup>>,
      extra: Partial<DodoWebhooksOptions> = {},
    ): Promise<{ webhookUrl: string; ask(): Promise<number> }> {
      const app = express();
      app.use(
        WEBHOOK_PATH,
        dodoWebhooks({
          ...context.webhookOptions,
          ...extra,
        }),
      );
      app.use(express.json());
      app.post(
        '/v1/chat/completions',
        requireCredits({
          store: context.store,
          dodo: context.dodo.client(),
          creditEntitlementId: context.entitlementId,
          customerId: (req) => req.header('x-customer'),
          pricing: { 'gpt-4o': { input: '2.50', output: '10.00' } },
          logger: quietLogger,
        }),
        (_req, res) => {
          res.json({ ok: true });
        },
      );
      const server = await listen(app);
      running.push(server);
      context.dodo.setWebhookUrl(`${server.url}${WEBHOOK_PATH}`);
      const ask = async () =>
        (
          await fetch(`${server.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-customer': context.customerId },
            body: JSON.stringify({
              model: 'gpt-4o',
              messages: [{ role: 'user', content: 'hi' }],
              max_tokens: 100,
            }),
          })
        ).status;
      return { webhookUrl: `${server.url}${WEBHOOK_PATH}`, ask };
    }

    it('admits a customer refused at $0 on the very next request after the top-up webhook', async () => {
      const context = await setup();
      const api = await startApi(context);
      expect(await api.ask()).toBe(402);
      await context.buyPack();
      await context.dodo.waitForWebhooks({ type: 'credit.added' });
      const fetchesBefore = context.dodo.requests().filter((request) => request.method === 'GET').length;
      expect(await api.ask()).toBe(200);
      // Admitted on the webhook's view, without asking Dodo again.
      expect(context.dodo.requests().filter((request) => request.method === 'GET')).toHaveLength(
        fetchesBefore,
      );
      expect((await context.store.getBalance(context.customerId))?.balance).toBe(usd('20'));
    });

    it('does not let refunded credits be spent once refund.succeeded is in, before the claw-back entry', async () => {
      const context = await setup();
      const api = await startApi(context);
      const payment = await context.buyPack();
      await context.dodo.waitForWebhooks({ type: 'credit.added' });
      expect(await api.ask()).toBe(200);
      // Capture the refund's webhooks and deliver only refund.succeeded: the claw-back is late.
      const received = await context.capture();
      await context.refund(payment.payment_id);
      await context.dodo.settle();
      const refunded = received.find((delivery) => JSON.parse(delivery.body).type === 'refund.succeeded');
      expect((await replay(api.webhookUrl, refunded as Received)).status).toBe(200);
      expect((await context.store.getSpend(context.customerId)).spend).toBe(0n);
      expect(await api.ask()).toBe(402);
    });
  });
});
