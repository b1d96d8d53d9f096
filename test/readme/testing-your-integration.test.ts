import express from 'express';
import { createBilling, MemoryStore } from 'express-llm-billing';
import { createDodoEmulator } from 'express-llm-billing/testing';
import request from 'supertest';
import { expect, it } from 'vitest';

it('refuses a customer without credits with 402, as OpenAI does', async () => {
  const dodo = await createDodoEmulator(); // a local Dodo Payments API: no network, no keys
  const credits = dodo.createCreditEntitlement({ name: 'USD credits' });
  const customer = dodo.createCustomer({ email: 'dev@example.com' });

  const billing = createBilling({
    store: new MemoryStore(),
    dodo: dodo.client(), // the real `dodopayments` SDK, pointed at the emulator
    creditEntitlementId: credits.id,
    customerId: (req) => req.get('x-customer-id'),
    pricing: { 'gpt-4o': { input: '2.50', output: '10.00' } },
  });
  const app = express().use(express.json());
  app.post('/v1/chat/completions', billing.chain(), (_req, res) => {
    res.json({ choices: [], usage: { prompt_tokens: 10, completion_tokens: 5 } });
  });

  const response = await request(app)
    .post('/v1/chat/completions')
    .set('x-customer-id', customer.customer_id)
    .send({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello' }] });

  expect(response.status).toBe(402);
  expect(response.body.error.code).toBe('insufficient_quota');

  dodo.addCredits(customer.customer_id, credits.id, '500'); // $5.00 of credits (cents)
  await billing.close();
  await dodo.close();
});
