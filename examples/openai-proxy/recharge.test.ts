import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type RunningExample, startExample } from './start.js';

// A customer turns auto-recharge on; a request that takes the balance below the threshold
// charges their saved card once, and the credits arrive.
let example: RunningExample;

beforeAll(async () => {
  example = await startExample({ port: 0, env: {} });
});
afterAll(() => example?.close());

function autoRecharge(apiKey: string, method: string, body?: unknown) {
  return fetch(`${example.url}/billing/auto-recharge`, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

it('recharges the saved card once when a request takes the balance below the threshold', async () => {
  const owner = example.embedded!.addCustomer({ dollars: '1.00' });
  expect(await (await autoRecharge(owner.apiKey, 'GET')).json()).toEqual({ auto_recharge: null });
  const set = await autoRecharge(owner.apiKey, 'PUT', {
    threshold: '1.00',
    amount: '5.00',
    monthly_limit: '20.00',
  });
  expect(set.status).toBe(200);
  expect(await set.json()).toMatchObject({
    auto_recharge: { threshold: '1', amount: '5', monthlyLimit: '20', recharged: '0', disabled: false },
  });

  const client = new OpenAI({ apiKey: owner.apiKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
  await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Hello' }],
    max_tokens: 5,
  });
  await expect
    .poll(
      async () =>
        ((await (await autoRecharge(owner.apiKey, 'GET')).json()) as { auto_recharge: { recharged: string } })
          .auto_recharge.recharged,
      {
        timeout: 10_000,
      },
    )
    .toBe('5');
  await expect
    .poll(
      async () => {
        const balance = (await (
          await fetch(`${example.url}/billing/balance`, {
            headers: { authorization: `Bearer ${owner.apiKey}` },
          })
        ).json()) as { available: string };
        return Number(balance.available); // display only: the exact string is what the API compares
      },
      { timeout: 10_000 },
    )
    .toBeGreaterThan(5.5);

  expect((await autoRecharge(owner.apiKey, 'DELETE')).status).toBe(200);
  expect(await (await autoRecharge(owner.apiKey, 'GET')).json()).toEqual({ auto_recharge: null });
});

it('refuses settings that are not dollar amounts, and sets nothing', async () => {
  const owner = example.embedded!.addCustomer({ dollars: '1.00' });
  for (const body of [
    { threshold: '1.00', amount: '0.001', monthly_limit: '20.00' },
    { threshold: '1.00', amount: '5.00', monthly_limit: '1.00' },
    { threshold: 1, amount: '5.00', monthly_limit: '20.00' },
  ]) {
    const response = await autoRecharge(owner.apiKey, 'PUT', body);
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: 'invalid_auto_recharge' } });
  }
  expect(await (await autoRecharge(owner.apiKey, 'GET')).json()).toEqual({ auto_recharge: null });
});
