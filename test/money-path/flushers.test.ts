import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { ConfigError } from '../../src/errors.js';
import { meterUsage } from '../../src/meter-usage/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import { PRICING, startDodo } from '../support/billing-app.js';

/** One outbox flusher per store and Dodo client, owned by whoever created it. */
describe('outbox flushers', () => {
  let live: Awaited<ReturnType<typeof startDodo>>;
  let test: Awaited<ReturnType<typeof startDodo>>;
  beforeAll(async () => {
    [live, test] = await Promise.all([startDodo(), startDodo()]);
  });
  afterAll(async () => {
    await Promise.all([live.emulator.close(), test.emulator.close()]);
  });

  const billingOn = (dodo: typeof live, store = new MemoryStore()) =>
    createBilling({
      store,
      dodo: dodo.emulator.client({ maxRetries: 0 }),
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: PRICING,
    });

  it('two billings with two Dodo clients each deliver their own events through their own client', async () => {
    const [a, b] = [billingOn(live), billingOn(test)];
    const customers = [live, test].map((dodo) => {
      const customer = dodo.emulator.createCustomer({ email: 'twice@example.com' }).customer_id;
      dodo.emulator.setBalance(customer, dodo.entitlementId, '100');
      return customer;
    });
    for (const [index, billing] of [a, b].entries()) {
      const app = express().use(express.json());
      app.post('/v1', billing.chain(), (_req, res) =>
        res.json({ usage: { prompt_tokens: 3, completion_tokens: 4 } }),
      );
      const server = app.listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      const { port } = server.address() as { port: number };
      const response = await fetch(`http://127.0.0.1:${port}/v1`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-customer': customers[index]! },
        body: JSON.stringify({ model: 'gpt-4o', max_tokens: 4, messages: [] }),
      });
      expect(response.status).toBe(200);
      server.close();
    }
    await Promise.all([a.close(), b.close()]);
    expect(live.emulator.ingestedEvents({ customerId: customers[0] })).toHaveLength(2);
    expect(test.emulator.ingestedEvents({ customerId: customers[1] })).toHaveLength(2);
    expect(live.emulator.ingestedEvents({ customerId: customers[1] })).toHaveLength(0);
  });

  it('refuses, at startup, a second Dodo client on a store whose outbox another one delivers', async () => {
    const store = new MemoryStore();
    const first = meterUsage({
      store,
      dodo: live.emulator.client(),
      customerId: () => 'c',
      pricing: PRICING,
    });
    expect(() =>
      meterUsage({ store, dodo: test.emulator.client(), customerId: () => 'c', pricing: PRICING }),
    ).toThrow(ConfigError);
    await first.close();
    // Once its owner closed, the store may be delivered through another client.
    const second = meterUsage({
      store,
      dodo: test.emulator.client(),
      customerId: () => 'c',
      pricing: PRICING,
    });
    await second.close();
  });
});
