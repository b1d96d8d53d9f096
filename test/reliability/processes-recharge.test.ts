import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseUsd } from '../../src/money.js';
import { requireRedis } from '../support/redis.js';
import { appProcessSuite, chat } from './support.js';

/*
 * Auto-recharge across real processes: two app processes on one Redis, both seeing the same
 * customer's balance fall below the threshold in the same burst. Only the store's lease can
 * keep them to one charge.
 */

const redisUrl = await requireRedis('reliability: auto-recharge across processes');

describe.runIf(redisUrl)('auto-recharge across two processes on one Redis', () => {
  const suite = appProcessSuite(redisUrl!);

  it('a burst split over two processes crossing the threshold makes one charge, not two', {
    timeout: 45_000,
  }, async () => {
    const { dodo } = suite;
    const { first, second, store } = await suite.twoApps({
      autoRecharge: { usagePlanProductId: dodo.usagePlanId, webhookKey: dodo.emulator.webhookKey },
    });
    dodo.emulator.setWebhookUrl(`${second.url}/webhooks/dodo`);
    const customer = dodo.emulator.createCustomer({ email: `${randomUUID()}@example.com` }).customer_id;
    dodo.emulator.subscribe(customer, dodo.usagePlanId, { onDemand: 'mandate' });
    dodo.emulator.setBalance(customer, dodo.entitlementId, '10'); // $0.10: about 60 requests
    await store.setAutoRecharge(customer, {
      threshold: parseUsd('0.08', 'test'),
      amount: parseUsd('5', 'test'),
      monthlyLimit: parseUsd('50', 'test'),
    });
    // Both processes learn the balance first, so the burst races on the store alone.
    for (const process of [first, second]) expect((await chat(process.url, customer)).status).toBe(200);

    const statuses = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        chat((i % 2 ? first : second).url, customer).then((response) => response.status),
      ),
    );
    expect(statuses.filter((status) => status !== 200 && status !== 402)).toEqual([]);
    const client = dodo.emulator.client();
    const recharges = async () =>
      (await client.payments.list({ customer_id: customer })).items.filter(
        (payment) => typeof payment.metadata?.elb_recharge_attempt === 'string',
      );
    await expect
      .poll(
        async () => (await store.getAutoRecharge(customer, new Date().toISOString().slice(0, 7)))?.inFlight,
        {
          timeout: 15_000,
        },
      )
      .toBeUndefined();
    await dodo.emulator.settle();
    // Past the burst, with the credits in: more traffic charges nothing more.
    for (let i = 0; i < 6; i++) await chat((i % 2 ? first : second).url, customer);
    await dodo.emulator.settle();
    const payments = await recharges();
    expect(payments.map((payment) => [payment.status, payment.total_amount])).toEqual([['succeeded', 500]]);
    const grants = dodo.emulator
      .ledger({ customerId: customer })
      .filter((entry) => entry.metadata?.elb_recharge_attempt !== undefined);
    expect(grants.map((entry) => entry.amount)).toEqual(['500']);
    expect(await store.getAutoRecharge(customer, new Date().toISOString().slice(0, 7))).toMatchObject({
      recharged: parseUsd('5', 'test'),
      failures: 0,
      disabled: false,
    });
  });
});
