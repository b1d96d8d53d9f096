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
  meterFor,
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
      // A pack's checkout always pays (only a mandate-only subscription does not).
      return emulator.completeCheckout(session.session_id).payment!;
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
    await refund(payment.payment_id, 500); // refund.succeeded; the claw-back (1500) has no webhook
    tick();
    dodo.addCredits(customerId, entitlementId, '1000'); // credit.added (2500)
    await dodo.settle();
    expect(received.map((delivery) => JSON.parse(delivery.body).type)).toEqual([
      'payment.succeeded',
      'credit.added',
      'refund.succeeded',
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
    // The last top-up is the newest credit.added ($10 granted), not the pack bought before it.
    expect(await store.getBalance(customerId)).toMatchObject({
      balance: usd('25'),
      pending: 0n,
      lastTopUp: usd('10'),
    });
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
    expect(dodo.webhookDeliveries()).toHaveLength(8);
    expect(dodo.webhookDeliveries().every((delivery) => delivery.status === 200)).toBe(true);
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
    // The last top-up is the newest credit.added ($10 granted), not the pack bought before it.
    expect(await store.getBalance(customerId)).toMatchObject({
      balance: usd('25'),
      pending: 0n,
      lastTopUp: usd('10'),
    });
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
    const { meter } = meterFor(dodo, { entitlementId, customerId, eventName: 'cents', rate: '1' });
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

  it('takes a lost or accepted dispute out of spend once, finding the customer through the dodo client', async () => {
    const { dodo, store, customerId, startApp, buyPack } = await setup();
    await startApp();
    const first = await buyPack();
    const second = await buyPack();
    await dodo.waitForWebhooks({ type: 'credit.added', count: 2 });
    expect((await store.getSpend(customerId)).spend).toBe(usd('40'));
    // Accepted: "the funds are returned to the cardholder", like a lost dispute.
    dodo.resolveDispute(dodo.openDispute(first.payment_id, { amount: 500 }).dispute_id, 'accepted');
    await dodo.waitForWebhooks({ type: 'dispute.accepted' });
    expect((await store.getSpend(customerId)).spend).toBe(usd('35'));
    const lost = dodo.openDispute(second.payment_id);
    dodo.resolveDispute(lost.dispute_id, 'challenged');
    dodo.resolveDispute(lost.dispute_id, 'lost');
    await dodo.waitForWebhooks({ type: 'dispute.lost' });
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
    // Won, cancelled, opened: no change. The same dispute delivered again: none either.
    dodo.resolveDispute(dodo.openDispute(first.payment_id, { amount: 100 }).dispute_id, 'won');
    const replayed = dodo.webhookEvents().find((webhook) => webhook.type === 'dispute.lost')!;
    expect(
      (
        await postSigned(dodo.webhookDeliveries()[0]!.url, {
          secret: dodo.webhookKey,
          body: JSON.stringify(replayed.payload),
        })
      ).status,
    ).toBe(200);
    await dodo.settle();
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
  });

  it('answers 503 within its deadline when Dodo hangs on the payment a dispute needs; the retry applies it once', async () => {
    const { dodo, store, customerId, startApp, buyPack } = await setup();
    const app = await startApp({ dodoTimeoutMs: 300 });
    const payment = await buyPack();
    await dodo.waitForWebhooks({ type: 'credit.added' });
    const body = eventBody('dispute.lost', {
      dispute_id: 'dsp_hang',
      payment_id: payment.payment_id,
      amount: '5.00',
      currency: 'USD',
      dispute_status: 'dispute_lost',
      dispute_stage: 'dispute',
      business_id: 'bus_emulator',
      created_at: new Date().toISOString(),
    });
    const id = 'msg_dispute_hang';
    dodo.fault('GET /payments/{id}', { hang: true });
    const started = Date.now();
    const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, id, body });
    const took = Date.now() - started;
    expect(answer).toMatchObject({ status: 503, body: { error: { code: 'dodo_unavailable' } } });
    // The SDK's own defaults (60 s × 3 tries) never apply: the deadline does.
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(1500);
    expect((await store.getSpend(customerId)).spend).toBe(usd('20'));
    // Not marked done: Dodo's retry, once Dodo answers again, applies it, and only once.
    dodo.clearFaults();
    expect((await postSigned(app.webhookUrl, { secret: dodo.webhookKey, id, body })).body).toEqual({
      received: true,
    });
    expect((await postSigned(app.webhookUrl, { secret: dodo.webhookKey, id, body })).body).toEqual({
      received: true,
      duplicate: true,
    });
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
  });

  it('reads a dispute amount as a major-unit string ("20.00") or a number of minor units (2000)', async () => {
    const { dodo, store, customerId, startApp, buyPack } = await setup();
    const app = await startApp();
    const payment = await buyPack();
    await dodo.waitForWebhooks({ type: 'credit.added' });
    const dispute = (id: string, amount: unknown) =>
      postSigned(app.webhookUrl, {
        secret: dodo.webhookKey,
        body: eventBody('dispute.lost', {
          dispute_id: id,
          payment_id: payment.payment_id,
          amount,
          currency: 'USD',
          dispute_status: 'dispute_lost',
          dispute_stage: 'dispute',
          business_id: 'bus_emulator',
          created_at: new Date().toISOString(),
        }),
      });
    expect((await dispute('dsp_string', '2.50')).status).toBe(200);
    expect((await store.getSpend(customerId)).spend).toBe(usd('17.5'));
    expect((await dispute('dsp_number', 250)).status).toBe(200);
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
    // Never more than the payment brought: a dispute cannot take out more than $20.
    expect((await dispute('dsp_huge', '2000')).status).toBe(200);
    expect((await store.getSpend(customerId)).spend).toBe(usd('-5'));
  });

  it('counts payments and refunds in US dollars from the settlement, tax excluded, whatever the customer paid in', async () => {
    const { dodo, store, customerId, entitlementId, startApp } = await setup({
      exchangeRates: { INR: '85' },
      taxPercent: '18',
    });
    await startApp();
    const pack = dodo.createCreditPack({
      name: '$20',
      price: 2000,
      creditEntitlementId: entitlementId,
      credits: 2000,
    });
    const session = await dodo.client().checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
      billing_currency: 'INR',
    });
    const payment = dodo.completeCheckout(session.session_id).payment!;
    await dodo.waitForWebhooks({ type: 'credit.added' });
    // ₹1,700 + 4% fee + 18% tax was paid; $20.00 + $3.60 tax was settled: $20 of spend.
    expect(payment).toMatchObject({ currency: 'INR', settlement_amount: 2360, settlement_tax: 360 });
    expect(payment.total_amount).toBeGreaterThan(200_000);
    expect((await store.getSpend(customerId)).spend).toBe(usd('20'));
    // A quarter of what the customer paid, refunded in rupees: a quarter of the $20.
    await dodo.client().refunds.create({
      payment_id: payment.payment_id,
      items: [{ item_id: pack.product_id, amount: payment.total_amount / 4 }],
    });
    await dodo.waitForWebhooks({ type: 'refund.succeeded' });
    expect((await store.getSpend(customerId)).spend).toBe(usd('15'));
    // The rest (is_partial: true) is its share; the spend ends at zero.
    await dodo.client().refunds.create({ payment_id: payment.payment_id });
    await dodo.waitForWebhooks({ type: 'refund.succeeded', count: 2 });
    expect((await store.getSpend(customerId)).spend).toBe(0n);
  });

  it('reads a refund without an amount as the whole payment', async () => {
    const { dodo, store, customerId, startApp, buyPack } = await setup();
    const app = await startApp();
    const payment = await buyPack();
    await dodo.waitForWebhooks({ type: 'credit.added' });
    const answer = await postSigned(app.webhookUrl, {
      secret: dodo.webhookKey,
      body: eventBody('refund.succeeded', {
        refund_id: 'ref_null',
        payment_id: payment.payment_id,
        customer: { customer_id: customerId },
        amount: null,
        currency: null,
        is_partial: false,
        status: 'succeeded',
      }),
    });
    expect(answer.status).toBe(200);
    expect((await store.getSpend(customerId)).spend).toBe(0n);
  });

  it('applies ledger amounts sent as JSON numbers, as Dodo has been seen sending them', async () => {
    const { dodo, store, customerId, entitlementId, startApp } = await setup({
      clock: 'manual',
      numericAmounts: true,
    });
    await startApp();
    dodo.addCredits(customerId, entitlementId, '1000.5');
    await dodo.waitForWebhooks({ type: 'credit.added' });
    expect(dodo.webhookEvents()[0]?.payload.data.balance_after).toBe(1000.5);
    expect((await store.getBalance(customerId))?.balance).toBe(usd('10.005'));
    await store.settle({ customerId, settlementId: 'req_1', cost: usd('3'), events: [], retentionMs: DAY });
    meterFor(dodo, { entitlementId, customerId, eventName: 'cents', rate: '1' });
    await dodo.client().usageEvents.ingest({
      events: [
        { event_id: 'req_1', customer_id: customerId, event_name: 'cents', metadata: { tokens: 300 } },
      ],
    });
    await dodo.waitForWebhooks({ type: 'credit.deducted' });
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('7.005'), pending: 0n });
  });

  it('does not count a debit made through the API as metered usage: pending usage stays pending', async () => {
    const { dodo, store, customerId, entitlementId, startApp, tick } = await setup({ clock: 'manual' });
    await startApp();
    dodo.setBalance(customerId, entitlementId, '1000');
    await dodo.waitForWebhooks({ type: 'credit.manual_adjustment' });
    tick();
    await store.settle({ customerId, settlementId: 'req_1', cost: usd('3'), events: [], retentionMs: DAY });
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('7'), pending: usd('3') });
    // A $2 debit through the API (a refund of a sale, say): credit.deducted, reference_type "api".
    await dodo.client().creditEntitlements.balances.createLedgerEntry(customerId, {
      credit_entitlement_id: entitlementId,
      entry_type: 'debit',
      amount: '200',
      idempotency_key: 'manual-1',
    });
    await dodo.waitForWebhooks({ type: 'credit.deducted' });
    expect(dodo.webhookEvents().at(-1)?.payload.data.reference_type).toBe('api');
    // Dodo says $8; the $3 of usage is still ours to subtract: $5, not $8.
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('5'), pending: usd('3') });
    tick();
    meterFor(dodo, { entitlementId, customerId, eventName: 'cents', rate: '1' });
    await dodo.client().usageEvents.ingest({
      events: [
        { event_id: 'req_1', customer_id: customerId, event_name: 'cents', metadata: { tokens: 300 } },
      ],
    });
    await dodo.waitForWebhooks({ type: 'credit.deducted', count: 2 });
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('5'), pending: 0n });
  });

  it('acknowledges a signed event it cannot read (200, logged) without applying any of it', async () => {
    const { dodo, store, customerId, entitlementId, startApp, buyPack } = await setup();
    const paid = await buyPack(); // before the app listens: its own webhooks are not delivered
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
        payment_id: paid.payment_id,
        customer: { customer_id: customerId },
        amount: 12.5,
        is_partial: true,
      }),
      eventBody('payment.succeeded', {
        payment_id: 'pay_bad',
        customer: { customer_id: customerId },
        total_amount: 150,
        settlement_amount: 1.5,
        settlement_currency: 'USD',
      }),
      // A dispute of a payment Dodo does not know: nothing to take from.
      eventBody('dispute.lost', {
        dispute_id: 'dsp_bad',
        payment_id: 'pay_missing',
        amount: '1.00',
        currency: 'USD',
      }),
    ];
    for (const body of unreadable) {
      const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, body });
      expect(answer.status).toBe(200);
      expect(answer.body).toMatchObject({ received: true, ignored: expect.any(String) });
    }
    expect(errors).toHaveLength(5);
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('5'), pending: 0n });
    expect(await store.getSpend(customerId)).toEqual({ spend: 0n, firstPaymentAt: undefined });
  });

  it('applies a credit.added whose amount it cannot read to the balance, leaving the last top-up as it was', async () => {
    const { dodo, store, customerId, entitlementId, startApp } = await setup();
    const warnings: string[] = [];
    const app = await startApp({
      logger: { warn: (message) => void warnings.push(message), error: () => {} },
    });
    await store.syncBalance(customerId, usd('5'), 1);
    await store.recordTopUp(customerId, { topUpId: 'cle_before', amount: usd('5'), at: 1 });
    const entry = {
      id: 'cle_odd',
      customer_id: customerId,
      credit_entitlement_id: entitlementId,
      amount: 'a lot',
      balance_before: '500',
      balance_after: '600',
      overage_after: '0',
      created_at: new Date().toISOString(),
    };
    const body = eventBody('credit.added', entry);
    const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, body });
    expect(answer.status).toBe(200);
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('6'), lastTopUp: usd('5') });
    expect(warnings.some((message) => message.includes('unreadable amount'))).toBe(true);
  });

  it('calls the app handler for credit.balance_low with the verified event', async () => {
    const { dodo, customerId, entitlementId, startApp } = await setup();
    const low: unknown[] = [];
    await startApp({ on: { 'credit.balance_low': (event) => void low.push(event.data) } });
    // Dodo's threshold is a subscription's: 50% of the 1000 credits its plan issues per cycle.
    const meter = dodo.createMeter({ eventName: 'cents' });
    const plan = dodo.createUsagePlan({
      creditEntitlementId: entitlementId,
      meters: [{ meterId: meter.id, meterUnitsPerCredit: '1' }],
      credits: '1000',
      lowBalanceThresholdPercent: 50,
    });
    dodo.subscribe(customerId, plan.product_id, { onDemand: 'mandate' });
    dodo.setBalance(customerId, entitlementId, '1000');
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
