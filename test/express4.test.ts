import type { AddressInfo } from 'node:net';
import express4 from 'express4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBilling } from '../src/create-billing.js';
import { MemoryStore } from '../src/store/memory.js';
import { PRICING, startDodo } from './support/billing-app.js';

/** The peer range is Express 4.21+ and 5.x: the same chain on an Express 4 app. */
describe('on Express 4', () => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let server: ReturnType<ReturnType<typeof express4>['listen']>;
  let url: string;
  let customer: string;
  const store = new MemoryStore();

  beforeAll(async () => {
    dodo = await startDodo();
    customer = dodo.customer({ email: 'express4@example.com' }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '0.17'); // one request's hold: $0.00163
    const billing = createBilling({
      store,
      dodo: dodo.emulator.client({ maxRetries: 0 }),
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: PRICING,
      webhookKey: dodo.emulator.webhookKey,
    });
    const app = express4();
    app.use('/webhooks/dodo', billing.dodoWebhooks());
    app.use(express4.json());
    app.post(
      '/v1/chat/completions',
      billing.tierRateLimit({ tiers: [{ name: 'one', minSpend: '0', rpm: 100 }] }),
      billing.requireCredits(),
      billing.meterUsage(),
      (_req, res) => {
        res.json({ choices: [], usage: { prompt_tokens: 100, completion_tokens: 50 } });
      },
    );
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    dodo.emulator.setWebhookUrl(`${url}/webhooks/dodo`);
  });
  afterAll(async () => {
    server.close();
    await dodo.emulator.close();
  });

  const chat = () =>
    fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-customer': customer },
      body: JSON.stringify({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'x'.repeat(400) }],
        max_tokens: 50,
      }),
    });

  it('admits, bills, refuses at zero with 402 and takes a top-up webhook', async () => {
    const admitted = await chat();
    expect(admitted.status).toBe(200);
    expect(admitted.headers.get('x-ratelimit-limit-requests')).toBe('100');
    await expect.poll(async () => (await store.getBalance(customer))?.pending).toBe(750_000_000n);
    const refused = await chat();
    expect(refused.status).toBe(402);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('insufficient_quota');
    dodo.emulator.addCredits(customer, dodo.entitlementId, '100');
    await dodo.emulator.waitForWebhooks({ type: 'credit.added' });
    await expect.poll(async () => (await chat()).status).toBe(200);
  });
});
