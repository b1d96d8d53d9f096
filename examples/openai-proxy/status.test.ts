import { request as httpRequest } from 'node:http';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { costOfTokens, formatUsd, parseUsd, resolvePricing, spendDayPeriod } from '../../src/index.js';
import type { ActivityReport } from './activity.js';
import type { BalanceReport } from './balance.js';
import { PRICING } from './billing-config.js';
import type { EmbeddedCustomer } from './embedded.js';
import { type RunningExample, startExample } from './start.js';

/*
 * What the status page reads, as a user sees it: money to the cent (exact beside it), spend per
 * day and recent requests from what was billed, and a checkout that returns to the app's address.
 */

const PRICES = resolvePricing(PRICING);
const hello = [{ role: 'user' as const, content: 'Hello there' }];

function costOf(model: string, usage: { prompt_tokens: number; completion_tokens: number }): bigint {
  return costOfTokens(PRICES.get(model)!, usage.prompt_tokens, usage.completion_tokens).total;
}

let example: RunningExample;

beforeAll(async () => {
  example = await startExample({ port: 0, env: {} });
});
afterAll(() => example?.close());

async function get<T>(customer: EmbeddedCustomer, path: string): Promise<{ status: number; body: T }> {
  const response = await fetch(`${example.url}${path}`, {
    headers: { authorization: `Bearer ${customer.apiKey}` },
  });
  return { status: response.status, body: (await response.json()) as T };
}

describe('GET /billing/balance', () => {
  it('shows money to the cent for people ($4.95, -$0.05), the exact amount beside it', async () => {
    const customer = example.embedded!.addCustomer({ dollars: '5.00' });
    // The welcome credits' webhooks first, so that none lands after the balances set here.
    await example.embedded!.emulator.settle();
    const store = example.wiring.store;
    const at = store.now();
    await store.syncBalance(customer.customerId, parseUsd('4.9507147', 'x'), at);
    const { body: rich } = await get<BalanceReport>(customer, '/billing/balance');
    expect(rich.available).toBe('4.9507147');
    expect(rich.display).toEqual({
      balance: '$4.95',
      available: '$4.95',
      reserved: '$0.00',
      lifetime_spend: '$0.00',
      next_tier_min_spend: '$50.00',
      period_cost: '$0.00',
    });

    await store.syncBalance(customer.customerId, parseUsd('-0.0492853', 'x'), at + 1);
    const { body: overdrawn } = await get<BalanceReport>(customer, '/billing/balance');
    expect(overdrawn.available).toBe('-0.0492853');
    expect(overdrawn.display.available).toBe('-$0.05');
  });
});

describe('GET /billing/activity', () => {
  it('lists the billed requests, newest first, with exactly what each cost, and adds them up per day', async () => {
    const customer = example.embedded!.addCustomer({ dollars: '5.00' });
    const openai = new OpenAI({ apiKey: customer.apiKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
    const first = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Count to five, slowly' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed: { prompt_tokens: number; completion_tokens: number } | undefined;
    for await (const chunk of stream) if (chunk.usage) streamed = chunk.usage;
    const costs = [costOf('gpt-4o', first.usage!), costOf('gpt-4o-mini', streamed!)];

    // The billing of a request ends when its response has closed: the log follows.
    const read = () => get<ActivityReport>(customer, '/billing/activity?days=14');
    await expect.poll(async () => (await read()).body.recent.length).toBe(2);
    const { body } = await read();
    expect(
      body.recent.map((request) => [request.model, request.input_tokens, request.output_tokens]),
    ).toEqual([
      ['gpt-4o-mini', streamed!.prompt_tokens, streamed!.completion_tokens],
      ['gpt-4o', first.usage!.prompt_tokens, first.usage!.completion_tokens],
    ]);
    expect(body.recent.map((request) => request.cost)).toEqual([formatUsd(costs[1]!), formatUsd(costs[0]!)]);
    expect(body.recent.map((request) => request.cost_display)).toEqual(['<$0.01', '<$0.01']);
    expect(body.recent.every((request) => request.charged && !request.estimated)).toBe(true);

    expect(body.days).toHaveLength(14);
    const today = new Date().toISOString().slice(0, 10);
    expect(body.days.at(-1)).toEqual({
      date: today,
      spend: formatUsd(costs[0]! + costs[1]!),
      spend_display: '<$0.01',
      bar: 1000,
    });
    expect(body.days.slice(0, -1).every((day) => day.spend === '0.00' && day.bar === 0)).toBe(true);
    expect(body.coverage).toMatch(/since it started/);
  });

  it('lists nothing for a request refused before the upstream (402): it was not billed', async () => {
    const broke = example.embedded!.addCustomer({ dollars: '0' });
    const response = await fetch(`${example.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${broke.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: hello }),
    });
    expect(response.status).toBe(402);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const { body } = await get<ActivityReport>(broke, '/billing/activity');
    expect(body.recent).toEqual([]);
    expect(body.days.every((day) => day.bar === 0)).toBe(true);
  });

  it('scales the days to the largest one exactly, rounding a small day up to a visible bar', async () => {
    const customer = example.embedded!.addCustomer({ dollars: '5.00' });
    const now = Date.now();
    // Days billed earlier, as the store's day counters hold them (what billing.spend reads).
    const spent = (daysAgo: number, cost: string) =>
      example.wiring.store.addUsage(customer.customerId, {
        period: spendDayPeriod(new Date(now - daysAgo * 86_400_000).toISOString().slice(0, 10)),
        counters: { cost: parseUsd(cost, 'x'), tokens: 2n },
        ttlMs: 86_400_000,
      });
    await spent(20, '9'); // older than the 7 days asked for
    await spent(3, '1.234567');
    await spent(3, '0.000433');
    await spent(1, '0.5');
    await spent(0, '0.000001');
    // Covered by a subscription: listed, not spent from the credits.
    example.activity.add(customer.customerId, {
      requestId: 'req-covered',
      at: now,
      model: 'gpt-4o',
      calls: 1,
      inputTokens: 1,
      outputTokens: 1,
      cost: parseUsd('2', 'x'),
      charged: false,
      estimated: false,
    });
    const { body } = await get<ActivityReport>(customer, '/billing/activity?days=7');
    expect(body.days.map((day) => [day.spend, day.spend_display, day.bar])).toEqual([
      ['0.00', '$0.00', 0],
      ['0.00', '$0.00', 0],
      ['0.00', '$0.00', 0],
      ['1.235', '$1.24', 1000],
      ['0.00', '$0.00', 0],
      ['0.50', '$0.50', 405], // 0.5 / 1.235 = 0.40485… → 405 thousandths, rounded up
      ['0.000001', '<$0.01', 1],
    ]);
    expect(body.recent[0]).toMatchObject({ cost: '2.00', cost_display: 'plan', charged: false });
    expect((await get(customer, '/billing/activity?days=0')).status).toBe(400);
    expect((await get(customer, '/billing/activity?days=32')).status).toBe(400);
  });
});

describe('GET /metrics', () => {
  /** One sample's value from the exposition text (0 when absent). */
  function sample(text: string, line: string): number {
    const found = text.split('\n').find((row) => row.startsWith(`${line} `));
    return found === undefined ? 0 : Number(found.slice(line.length + 1));
  }

  it('serves the billing metrics in Prometheus text: admissions, refusals by reason, settled dollars', async () => {
    const before = await (await fetch(`${example.url}/metrics`)).text();
    const customer = example.embedded!.addCustomer({ dollars: '5.00' });
    const broke = example.embedded!.addCustomer({ dollars: '0' });
    const openai = new OpenAI({ apiKey: customer.apiKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
    const answer = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
    const refused = await new OpenAI({
      apiKey: broke.apiKey,
      baseURL: `${example.url}/v1`,
      maxRetries: 0,
    }).chat.completions
      .create({ model: 'gpt-4o', messages: hello })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(OpenAI.APIError);
    expect((refused as InstanceType<typeof OpenAI.APIError>).status).toBe(402);

    const response = await fetch(`${example.url}/metrics`);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();
    const grew = (line: string) => sample(text, line) - sample(before, line);
    expect(grew('llm_billing_requests_admitted_total{model="gpt-4o"}')).toBe(1);
    expect(grew('llm_billing_requests_refused_total{reason="insufficient_quota"}')).toBe(1);
    expect(grew('llm_billing_settled_usd_total{model="gpt-4o",estimated="false"}')).toBeCloseTo(
      Number(formatUsd(costOf('gpt-4o', answer.usage!))),
      12,
    );
    expect(text).toContain('llm_billing_outbox_events{state="waiting"}');
    expect(text).toContain('process_cpu_user_seconds_total'); // the process's own metrics beside them
    expect(text).not.toContain(customer.customerId);
  });
});

describe("the top-up checkout's return URL", () => {
  /** Buys the $5 pack as the demo customer (node:http, so the Host header can be a proxy's) and pays it. */
  async function returnUrlOf(running: RunningExample, host?: string): Promise<string> {
    const { demo, emulator } = running.embedded!;
    const body = JSON.stringify({ pack: 5 });
    const answer = await new Promise<string>((resolve, reject) => {
      const request = httpRequest(
        `${running.url}/billing/top-up`,
        {
          method: 'POST',
          headers: {
            authorization: `Bearer ${demo.apiKey}`,
            'content-type': 'application/json',
            ...(host ? { host } : {}),
          },
        },
        (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => {
            text += chunk.toString();
          });
          response.on('end', () => resolve(text));
        },
      );
      request.on('error', reject);
      request.end(body);
    });
    const { session_id } = JSON.parse(answer) as { session_id: string };
    return emulator.completeCheckout(session_id).redirectUrl!;
  }

  it("is the request's own host, not the address the app listens on", async () => {
    expect(await returnUrlOf(example, 'demo.example.net:8443')).toMatch(
      /^http:\/\/demo\.example\.net:8443\/\?topup=5&payment_id=pay_\w+&status=succeeded$/,
    );
    expect(await returnUrlOf(example)).toMatch(
      new RegExp(`^${example.url.replace(/\./g, '\\.')}/\\?topup=5&`),
    );
  });

  it('is PUBLIC_URL when set', async () => {
    const behindProxy = await startExample({ port: 0, env: { PUBLIC_URL: 'https://billing.example.com/' } });
    try {
      expect(await returnUrlOf(behindProxy, 'internal:3000')).toMatch(
        /^https:\/\/billing\.example\.com\/\?topup=5&payment_id=pay_\w+&status=succeeded$/,
      );
    } finally {
      await behindProxy.close();
    }
  });
});
