import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { DodoWebhooksOptions } from '../../src/dodo-webhooks/index.js';
import type { BillingStore } from '../../src/store/types.js';
import type { DodoEmulator } from '../../src/testing/index.js';
import { requireRedis } from '../support/redis.js';
import {
  type Answer,
  eventBody,
  gate,
  meterFor,
  postSigned,
  quietLogger,
  type Running,
  startEmulator,
  startWebhookApp,
  storeKinds,
  usd,
} from './support.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const redisUrl = await requireRedis('dodoWebhooks exactly-once on RedisStore');
const { kinds, cleanup } = storeKinds(redisUrl);
afterAll(cleanup);

describe.each(kinds)('dodoWebhooks: exactly once per webhook-id ($name)', (kind) => {
  let dodo: DodoEmulator | undefined;
  const apps: Running[] = [];
  const stores: BillingStore[] = [];

  afterEach(async () => {
    await dodo?.close();
    dodo = undefined;
    for (const app of apps.splice(0)) await app.close();
    for (const store of stores.splice(0)) await store.close();
  });

  async function setup(now?: () => number) {
    dodo = await startEmulator();
    const entitlementId = dodo.createCreditEntitlement().id;
    const customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    const opened = await kind.open(now);
    stores.push(opened.store);
    const emulator = dodo;
    const startApp = async (options: Partial<DodoWebhooksOptions> = {}, store = opened.store) => {
      const app = await startWebhookApp({
        store,
        webhookKey: emulator.webhookKey,
        creditEntitlementId: entitlementId,
        logger: quietLogger,
        ...options,
      });
      apps.push(app);
      return app;
    };
    const peerStore = async () => {
      if (!opened.peer) throw new Error('no peer store for this kind');
      const peer = await opened.peer();
      stores.push(peer);
      return peer;
    };
    return { dodo: emulator, entitlementId, customerId, store: opened.store, startApp, peerStore };
  }

  /** The signed body Dodo sends for an emitted webhook, freshly signed as each retry is. */
  const redeliver = (emulator: DodoEmulator, url: string, webhookId: string) => {
    const webhook = emulator.webhookEvents().find((each) => each.webhookId === webhookId);
    if (!webhook) throw new Error(`no webhook ${webhookId}`);
    return postSigned(url, {
      secret: emulator.webhookKey,
      id: webhookId,
      body: JSON.stringify(webhook.payload),
    });
  };

  const tally = (answers: Answer[]) =>
    answers.map((answer) =>
      answer.status === 200 ? (answer.body?.duplicate ? 'duplicate' : 'ran') : String(answer.status),
    );

  it('answers a replay of a done id 200 without running anything again', async () => {
    const { dodo, entitlementId, customerId, store, startApp } = await setup();
    const calls: string[] = [];
    const app = await startApp({ on: { 'credit.added': (event) => void calls.push(event.data.amount) } });
    dodo.setWebhookUrl(app.webhookUrl);
    dodo.addCredits(customerId, entitlementId, '10');
    const [sent] = await dodo.waitForWebhooks({ type: 'credit.added' });
    // Spend the credits locally: a replayed top-up must not reset the view to its old balance_after.
    await store.settle({
      customerId,
      settlementId: 'req_1',
      cost: usd('0.04'),
      events: [],
      retentionMs: DAY,
    });
    const webhookId = sent?.webhookId as string;
    const replays = [
      await redeliver(dodo, app.webhookUrl, webhookId),
      await redeliver(dodo, app.webhookUrl, webhookId),
    ];
    expect(replays).toEqual([
      { status: 200, body: { received: true, duplicate: true } },
      { status: 200, body: { received: true, duplicate: true } },
    ]);
    expect(calls).toEqual(['10']);
    expect(await store.getBalance(customerId)).toMatchObject({ balance: usd('0.06'), pending: usd('0.04') });
  });

  it('runs ten parallel copies of one delivery once: the copies that arrive while it runs get 409', async () => {
    const { dodo, entitlementId, customerId, store, startApp } = await setup();
    const held = gate();
    const entered = gate();
    const calls: string[] = [];
    const app = await startApp({
      on: {
        'credit.added': async (event, webhookId) => {
          calls.push(webhookId);
          entered.open();
          await held.promise;
          expect(event.data.amount).toBe('10');
        },
      },
    });
    dodo.setWebhookUrl(app.webhookUrl);
    dodo.addCredits(customerId, entitlementId, '10');
    await entered.promise;
    const [webhook] = dodo.webhookEvents();
    const webhookId = webhook?.webhookId as string;
    const copies = await Promise.all(
      Array.from({ length: 10 }, () => redeliver(dodo as DodoEmulator, app.webhookUrl, webhookId)),
    );
    expect(copies.map((copy) => [copy.status, copy.body?.error?.code])).toEqual(
      Array.from({ length: 10 }, () => [409, 'webhook_in_progress']),
    );
    held.open();
    await dodo.waitForWebhooks({ type: 'credit.added' });
    const afterwards = await Promise.all(
      Array.from({ length: 10 }, () => redeliver(dodo as DodoEmulator, app.webhookUrl, webhookId)),
    );
    expect(tally(afterwards)).toEqual(Array.from({ length: 10 }, () => 'duplicate'));
    expect(calls).toEqual([webhookId]);
    expect((await store.getBalance(customerId))?.balance).toBe(usd('0.10'));
  });

  it('runs ten copies racing for a fresh id once, and the emulator’s duplicate delivery not at all', async () => {
    const { dodo, startApp } = await setup();
    let runs = 0;
    const app = await startApp({
      on: {
        'custom.event': async () => {
          runs += 1;
          await new Promise((resolve) => setTimeout(resolve, 20));
        },
      },
    });
    const body = eventBody('custom.event', { n: 1 });
    const answers = await Promise.all(
      Array.from({ length: 10 }, () =>
        postSigned(app.webhookUrl, { secret: dodo.webhookKey, id: 'msg_race', body }),
      ),
    );
    expect(runs).toBe(1);
    expect(tally(answers).filter((answer) => answer === 'ran')).toHaveLength(1);
    expect(tally(answers).every((answer) => ['ran', '409', 'duplicate'].includes(answer))).toBe(true);
  });

  it('answers 5xx when a handler throws and runs the effect once when Dodo retries', async () => {
    const { dodo, entitlementId, customerId, store, startApp } = await setup();
    const pack = dodo.createCreditPack({
      name: '$20 pack',
      price: 2000,
      creditEntitlementId: entitlementId,
      credits: 2000,
    });
    let attempts = 0;
    const app = await startApp({
      on: {
        'payment.succeeded': () => {
          attempts += 1;
          if (attempts === 1) throw new Error('CRM is down');
        },
      },
    });
    dodo.setWebhookUrl(app.webhookUrl);
    const session = await dodo.client().checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
    });
    dodo.completeCheckout(session.session_id);
    await dodo.waitForWebhooks({ type: ['payment.succeeded', 'credit.added'], count: 2 });
    const payments = dodo.webhookDeliveries().filter((delivery) => delivery.type === 'payment.succeeded');
    expect(payments.map((delivery) => [delivery.attempt, delivery.status])).toEqual([
      [1, 500],
      [2, 200],
    ]);
    expect(attempts).toBe(2);
    expect(await store.getSpend(customerId)).toMatchObject({ spend: usd('20') });
    expect((await store.getBalance(customerId))?.balance).toBe(usd('20'));
  });

  /**
   * Two requests settled here, $1 and $2 (pending $3 until Dodo deducts them), then Dodo's meter
   * deducts the $1 one (100 credits): one `credit.deducted` webhook to the app. After it, Dodo says
   * $9 and the $2 request is still pending: the view is 9 − 2 = $7.
   */
  async function deductOneOfTwoSettled(options: Partial<DodoWebhooksOptions> = {}) {
    const { dodo, entitlementId, customerId, store, startApp } = await setup();
    dodo.setBalance(customerId, entitlementId, '1000');
    await store.syncBalance(customerId, usd('10'), Date.now() - MINUTE);
    for (const [id, cost] of [
      ['req_a', '1'],
      ['req_b', '2'],
    ] as const) {
      await store.settle({ customerId, settlementId: id, cost: usd(cost), events: [], retentionMs: DAY });
    }
    const { meter } = meterFor(dodo, { entitlementId, customerId, eventName: 'usd_cents', rate: '1' });
    const app = await startApp(options);
    dodo.setWebhookUrl(app.webhookUrl);
    await dodo.client().usageEvents.ingest({
      events: [
        {
          event_id: 'req_a',
          customer_id: customerId,
          event_name: meter.event_name,
          metadata: { tokens: 100 },
        },
      ],
    });
    await dodo.waitForWebhooks({ type: 'credit.deducted' });
    return { dodo, customerId, store, app, expected: { balance: usd('7'), pending: usd('2') } };
  }

  it('confirms a deduction once when the app handler fails and Dodo retries the delivery', async () => {
    let attempts = 0;
    const { dodo, customerId, store, expected } = await deductOneOfTwoSettled({
      on: {
        'credit.deducted': () => {
          attempts += 1;
          if (attempts === 1) throw new Error('analytics is down');
        },
      },
    });
    expect(dodo.webhookDeliveries().map((delivery) => delivery.status)).toEqual([500, 200]);
    expect(attempts).toBe(2);
    expect(await store.getBalance(customerId)).toMatchObject(expected);
  });

  it('confirms a deduction once even when its delivery is processed again (its done-mark lost in a crash)', async () => {
    const { dodo, customerId, store, app, expected } = await deductOneOfTwoSettled();
    expect(await store.getBalance(customerId)).toMatchObject(expected);
    // A process that applied the entry died before marking the delivery done; the next one
    // processes it again (here under a fresh id, as if the claim had been lost with it).
    const deducted = dodo.webhookEvents().find((webhook) => webhook.type === 'credit.deducted')!;
    const again = await postSigned(app.webhookUrl, {
      secret: dodo.webhookKey,
      id: `${deducted.webhookId}-again`,
      body: JSON.stringify(deducted.payload),
    });
    expect(tally([again])).toEqual(['ran']);
    expect(await store.getBalance(customerId)).toMatchObject(expected);
  });

  it('remembers a done id for 7 days by default (Dodo retries for days) and a dead claim for processingTtlMs', async () => {
    let now = Date.now();
    const { dodo, store, startApp } = await setup(() => now);
    let runs = 0;
    const app = await startApp({
      on: {
        'custom.event': () => {
          runs += 1;
        },
      },
    });
    const send = (id: string) =>
      postSigned(app.webhookUrl, { secret: dodo.webhookKey, id, body: eventBody('custom.event', {}) });
    expect(tally([await send('msg_kept')])).toEqual(['ran']);
    now += 6 * DAY + 23 * 60 * MINUTE;
    expect(tally([await send('msg_kept')])).toEqual(['duplicate']);
    now += 2 * 60 * MINUTE;
    expect(tally([await send('msg_kept')])).toEqual(['ran']);

    // A process that claimed an id and died: its duplicates wait, then one runs it.
    expect(await store.claimWebhook('msg_orphan', MINUTE)).toBe('claimed');
    expect(tally([await send('msg_orphan')])).toEqual(['409']);
    now += MINUTE + 1;
    expect(tally([await send('msg_orphan'), await send('msg_orphan')])).toEqual(['ran', 'duplicate']);
    expect(runs).toBe(3);
  });

  if (kind.name === 'RedisStore') {
    it('runs ten copies split across two app instances sharing one Redis once', async () => {
      const { dodo, entitlementId, customerId, store, startApp, peerStore } = await setup();
      const held = gate();
      const entered = gate();
      const calls: string[] = [];
      const handler = async (_event: unknown, webhookId: string) => {
        calls.push(webhookId);
        entered.open();
        await held.promise;
      };
      const appA = await startApp({ on: { 'credit.added': handler } });
      const appB = await startApp({ on: { 'credit.added': handler } }, await peerStore());
      dodo.setWebhookUrl(appA.webhookUrl);
      dodo.addCredits(customerId, entitlementId, '10');
      await entered.promise;
      const webhookId = dodo.webhookEvents()[0]?.webhookId as string;
      const copies = await Promise.all(
        Array.from({ length: 10 }, (_, i) => redeliver(dodo, (i % 2 ? appA : appB).webhookUrl, webhookId)),
      );
      expect(tally(copies)).toEqual(Array.from({ length: 10 }, () => '409'));
      held.open();
      await dodo.waitForWebhooks({ type: 'credit.added' });
      const afterwards = await Promise.all(
        Array.from({ length: 10 }, (_, i) => redeliver(dodo, (i % 2 ? appA : appB).webhookUrl, webhookId)),
      );
      expect(tally(afterwards)).toEqual(Array.from({ length: 10 }, () => 'duplicate'));
      expect(calls).toEqual([webhookId]);
      expect((await store.getBalance(customerId))?.balance).toBe(usd('0.10'));
    });

    it('lets another instance run a delivery the first one failed, once', async () => {
      const { dodo, entitlementId, customerId, store, startApp, peerStore } = await setup();
      const pack = dodo.createCreditPack({
        name: '$20 pack',
        price: 2000,
        creditEntitlementId: entitlementId,
        credits: 2000,
      });
      const ran: string[] = [];
      const appB = await startApp(
        { on: { 'payment.succeeded': () => void ran.push('B') } },
        await peerStore(),
      );
      const emulator = dodo;
      const appA = await startApp({
        on: {
          'payment.succeeded': () => {
            // Dodo's retry goes wherever the load balancer sends it: here, instance B.
            emulator.setWebhookUrl(appB.webhookUrl);
            throw new Error('instance A fails');
          },
        },
      });
      dodo.setWebhookUrl(appA.webhookUrl);
      const session = await dodo.client().checkoutSessions.create({
        product_cart: [{ product_id: pack.product_id, quantity: 1 }],
        customer: { customer_id: customerId },
      });
      dodo.completeCheckout(session.session_id);
      await dodo.waitForWebhooks({ type: ['payment.succeeded', 'credit.added'], count: 2 });
      expect(
        dodo
          .webhookDeliveries()
          .filter((delivery) => delivery.type === 'payment.succeeded')
          .map((delivery) => [delivery.url, delivery.status]),
      ).toEqual([
        [appA.webhookUrl, 500],
        [appB.webhookUrl, 200],
      ]);
      expect(ran).toEqual(['B']);
      expect((await store.getSpend(customerId)).spend).toBe(usd('20'));
    });
  }
});
