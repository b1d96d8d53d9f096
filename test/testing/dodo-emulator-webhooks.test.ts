import {
  APIConnectionError,
  APIConnectionTimeoutError,
  type DodoPayments,
  InternalServerError,
} from 'dodopayments';
import { Webhook } from 'standardwebhooks';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';
import { startReceiver } from './webhook-receiver.js';

describe('Dodo emulator: webhook delivery and faults', () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let dodo: DodoEmulator;
  let client: DodoPayments;

  beforeEach(async () => {
    receiver = await startReceiver();
  });
  afterEach(async () => {
    await dodo?.close();
    await receiver.close();
  });

  async function start(options: Parameters<typeof createDodoEmulator>[0] = {}) {
    dodo = await createDodoEmulator({ webhookUrl: receiver.url, webhookRetry: [20, 20], ...options });
    client = dodo.client({ maxRetries: 0, timeout: 1000 });
    const entitlementId = dodo.createCreditEntitlement().id;
    const customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    return { entitlementId, customerId };
  }

  it('signs webhooks as Dodo does: the SDK and standardwebhooks verify them with the webhook key', async () => {
    const { entitlementId, customerId } = await start();
    expect(dodo.webhookKey).toMatch(/^whsec_/);
    dodo.addCredits(customerId, entitlementId, '12.5');
    const [sent] = await dodo.waitForWebhooks({ type: 'credit.added' });
    const [delivery] = receiver.received;
    expect(delivery).toBeDefined();
    const headers = delivery?.headers as Record<string, string>;
    expect(headers['webhook-id']).toBe(sent?.webhookId);
    const event = client.webhooks.unwrap(delivery?.body as string, { headers });
    expect(event).toMatchObject({
      type: 'credit.added',
      business_id: 'bus_emulator',
      data: { amount: '12.5', customer_id: customerId },
    });
    expect(new Webhook(dodo.webhookKey).verify(delivery?.body as string, headers)).toBeTruthy();
    expect(() =>
      new Webhook(`whsec_${Buffer.from('another key').toString('base64')}`).verify(
        delivery?.body as string,
        headers,
      ),
    ).toThrow();
  });

  it('retries a non-2xx answer with the same webhook-id and a fresh signature, then marks it failed', async () => {
    // A clock that moves one second per reading, so that each attempt's timestamp differs.
    let tick = Date.now();
    const { entitlementId, customerId } = await start({ webhookRetry: [30, 30], now: () => (tick += 1000) });
    receiver.answers.push(500, 503);
    dodo.addCredits(customerId, entitlementId, '1');
    await dodo.waitForWebhooks({ type: 'credit.added' });
    expect(receiver.received).toHaveLength(3);
    const ids = new Set(receiver.received.map((request) => request.headers['webhook-id']));
    expect(ids.size).toBe(1);
    const signatures = new Set(receiver.received.map((request) => request.headers['webhook-signature']));
    const timestamps = new Set(receiver.received.map((request) => request.headers['webhook-timestamp']));
    expect(signatures.size).toBe(3);
    expect(timestamps.size).toBe(3);
    for (const request of receiver.received) {
      expect(() =>
        client.webhooks.unwrap(request.body, { headers: request.headers as Record<string, string> }),
      ).not.toThrow();
    }
    expect(dodo.webhookDeliveries().map((attempt) => [attempt.attempt, attempt.status, attempt.ok])).toEqual([
      [1, 500, false],
      [2, 503, false],
      [3, 200, true],
    ]);

    receiver.answers.push(500, 500, 500);
    dodo.addCredits(customerId, entitlementId, '2');
    await dodo.settle();
    expect(dodo.webhookEvents().at(-1)).toMatchObject({ status: 'failed', attempts: 3 });
    await expect(dodo.waitForWebhooks({ type: 'credit.added', count: 2, timeoutMs: 50 })).rejects.toThrow(
      /credit.added \(failed\)/,
    );
  });

  it('can deliver every webhook twice and out of order', async () => {
    const { entitlementId, customerId } = await start({ duplicateWebhooks: true, shuffleWebhooks: true });
    for (let i = 1; i <= 8; i += 1) dodo.addCredits(customerId, entitlementId, String(i));
    await dodo.settle();
    expect(receiver.received).toHaveLength(16);
    const ids = receiver.received.map((request) => request.headers['webhook-id'] as string);
    expect(new Set(ids).size).toBe(8);
    const amounts = receiver.received
      .filter((_, i) => i % 2 === 0)
      .map((request) => JSON.parse(request.body).data.amount);
    expect([...amounts].sort((a, b) => Number(a) - Number(b))).toEqual([
      '1',
      '2',
      '3',
      '4',
      '5',
      '6',
      '7',
      '8',
    ]);
    // 8! orders: the chance of the original order is 1 in 40320.
    expect(amounts).not.toEqual(['1', '2', '3', '4', '5', '6', '7', '8']);
  });

  it('records webhooks without sending them when no URL is set, until setWebhookUrl', async () => {
    dodo = await createDodoEmulator();
    const entitlementId = dodo.createCreditEntitlement().id;
    const customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    dodo.addCredits(customerId, entitlementId, '1');
    expect(dodo.webhookEvents()).toMatchObject([{ type: 'credit.added', status: 'recorded' }]);
    dodo.setWebhookUrl(receiver.url);
    dodo.addCredits(customerId, entitlementId, '1');
    await dodo.waitForWebhooks({ type: 'credit.added', count: 2 });
    expect(receiver.received).toHaveLength(1);
    expect(() => dodo.setWebhookUrl('not a url')).toThrow(/webhookUrl/);
  });

  it('injects faults per route: status codes, delays, drops and hangs, a limited number of times', async () => {
    const { entitlementId, customerId } = await start();
    dodo.setBalance(customerId, entitlementId, '5');
    const params = { credit_entitlement_id: entitlementId };
    const balances = () => client.creditEntitlements.balances.retrieve(customerId, params);

    dodo.fault('GET /credit-entitlements/{id}/balances/{customer_id}', { status: 503, times: 1 });
    await expect(balances()).rejects.toBeInstanceOf(InternalServerError);
    expect((await balances()).balance).toBe('5');
    // The SDK's own retries get through a fault that happens once.
    dodo.fault(`GET /credit-entitlements/${entitlementId}/balances/${customerId}`, { status: 500, times: 1 });
    expect(
      (await dodo.client({ maxRetries: 1 }).creditEntitlements.balances.retrieve(customerId, params)).balance,
    ).toBe('5');

    dodo.fault('POST /events/ingest', { delayMs: 120, times: 1 });
    const started = Date.now();
    await client.usageEvents.ingest({
      events: [{ event_id: 'slow', customer_id: customerId, event_name: 'x' }],
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);

    dodo.fault('POST /events/ingest', { drop: true, times: 1 });
    await expect(
      client.usageEvents.ingest({
        events: [{ event_id: 'dropped', customer_id: customerId, event_name: 'x' }],
      }),
    ).rejects.toBeInstanceOf(APIConnectionError);

    dodo.fault('*', { hang: true });
    await expect(
      dodo.client({ maxRetries: 0, timeout: 100 }).customers.retrieve(customerId),
    ).rejects.toBeInstanceOf(APIConnectionTimeoutError);
    dodo.clearFaults();
    expect((await client.customers.retrieve(customerId)).customer_id).toBe(customerId);
    expect(dodo.requests().filter((request) => request.fault)).toHaveLength(5);
    expect(() => dodo.fault('POST /events/ingest', {})).toThrow(/at least one of/);
    expect(() => dodo.fault('POST /events/ingest', { status: 42 })).toThrow(/status/);
  });

  it('close() stops pending deductions and deliveries and leaves no handle behind', async () => {
    const { entitlementId, customerId } = await start({ meterDelayMs: 10_000, webhookRetry: [10_000] });
    const meter = dodo.createMeter({ eventName: 'tokens' });
    const plan = dodo.createUsagePlan({
      creditEntitlementId: entitlementId,
      meters: [{ meterId: meter.id, meterUnitsPerCredit: '1' }],
    });
    dodo.subscribe(customerId, plan.product_id, { onDemand: 'mandate' });
    dodo.fault('*', { hang: true, times: 1 });
    const hanging = fetch(`${dodo.baseURL}/customers`).catch((error: unknown) => error);
    receiver.answers.push(500);
    dodo.addCredits(customerId, entitlementId, '1');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const before = process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
    await client.usageEvents
      .ingest({
        events: [
          { event_id: 'late', customer_id: customerId, event_name: 'tokens', metadata: { tokens: 1 } },
        ],
      })
      .catch(() => undefined);
    await dodo.close();
    await dodo.close();
    expect(await hanging).toBeInstanceOf(Error);
    const after = process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
    expect(after).toBeLessThan(before);
    expect(dodo.meterDeductions()).toEqual([]);
  });
});
