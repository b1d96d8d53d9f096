import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type RunningExample, startExample } from './start.js';

// A customer creates a second API key with its own budget, then spends it with the `openai` client.
let example: RunningExample;

beforeAll(async () => {
  example = await startExample({ port: 0, env: {} });
});
afterAll(() => example?.close());

async function keys(apiKey: string, init?: RequestInit) {
  return fetch(`${example.url}/billing/keys`, {
    ...init,
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
  });
}

it('a second key with a budget is refused once it has spent it, while the first key goes on', async () => {
  const owner = example.embedded!.addCustomer({ dollars: '5.00' });
  const created = await keys(owner.apiKey, { method: 'POST', body: JSON.stringify({ budget: '0.01' }) });
  expect(created.status).toBe(201);
  const { api_key: limitedKey, key_id: keyId } = (await created.json()) as {
    api_key: string;
    key_id: string;
  };
  expect(limitedKey).toMatch(/^sk-/);

  const limited = new OpenAI({ apiKey: limitedKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
  // A long prompt: the first request alone spends more than the key's $0.01 (tier 1 allows 3 a minute).
  const story = 'Once upon a time, '.repeat(1_500);
  const ask = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: story }], max_tokens: 50 };
  const first = await limited.chat.completions.create(ask).withResponse();
  expect(first.response.headers.get('x-billing-budget-remaining')).toBe('0');
  const refused = await limited.chat.completions.create(ask).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(OpenAI.APIError);
  expect(refused).toMatchObject({ status: 402, code: 'budget_exceeded', type: 'insufficient_quota' });

  // The account still has credits: the owner's first key is not held by the second's budget.
  const owners = new OpenAI({ apiKey: owner.apiKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
  expect((await owners.chat.completions.create(ask)).choices).toHaveLength(1);

  const listed = (await (await keys(owner.apiKey)).json()) as {
    keys: { key_id: string; budget: { spent: string; hard: string; remaining: string } | null }[];
  };
  // The key's spend crossed 50, 80 and 100 % of its budget in one request: three alerts, once each.
  const alerts = async () =>
    (
      (await (
        await fetch(`${example.url}/billing/alerts`, { headers: { authorization: `Bearer ${owner.apiKey}` } })
      ).json()) as { alerts: { kind: string; key?: string; crossed?: number | string }[] }
    ).alerts.filter((alert) => alert.kind === 'budget' && alert.key === keyId);
  await expect.poll(async () => (await alerts()).length).toBe(3);
  expect((await alerts()).map((alert) => alert.crossed).sort()).toEqual([100, 50, 80]);
  const budgeted = listed.keys.find((key) => key.key_id === keyId)!;
  expect(budgeted.budget).toMatchObject({ hard: '0.01', remaining: '0' });
  expect(Number(budgeted.budget!.spent)).toBeGreaterThanOrEqual(0.01); // display only: exact strings compared above
});

it('refuses a budget that is not a dollar amount, and creates nothing', async () => {
  const owner = example.embedded!.addCustomer({ dollars: '1.00' });
  for (const budget of ['-1', '1e3', 'abc', 5, '5000']) {
    const response = await keys(owner.apiKey, { method: 'POST', body: JSON.stringify({ budget }) });
    expect(response.status).toBe(400);
  }
  const listed = (await (await keys(owner.apiKey)).json()) as { keys: unknown[] };
  expect(listed.keys).toHaveLength(1); // the customer's own key only
});
