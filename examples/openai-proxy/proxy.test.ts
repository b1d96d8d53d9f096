import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseCredits, unitsPerCredit } from '../../src/index.js';
import type { EmbeddedCustomer } from './embedded.js';
import { type RunningExample, startExample } from './start.js';

// The official `openai` client against the example, embedded mode (emulator + mock LLM).
let example: RunningExample;

beforeAll(async () => {
  example = await startExample({ port: 0, env: {} });
});
afterAll(() => example?.close());

function services() {
  return example.embedded!;
}

function customer(dollars = '5.00'): EmbeddedCustomer {
  return services().addCustomer({ dollars });
}

/** A client that counts the HTTP requests it makes (retries included) and their statuses. */
function client(apiKey: string, options: { maxRetries?: number; beforeFetch?: () => void } = {}) {
  const statuses: number[] = [];
  const openai = new OpenAI({
    apiKey,
    baseURL: `${example.url}/v1`,
    maxRetries: options.maxRetries ?? 2,
    fetch: async (input, init) => {
      options.beforeFetch?.();
      const response = await fetch(input, init);
      statuses.push(response.status);
      return response;
    },
  });
  return { openai, statuses };
}

async function balance(apiKey: string) {
  const response = await fetch(`${example.url}/billing/balance`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  expect(response.status).toBe(200);
  return (await response.json()) as {
    balance: string;
    available: string;
    reserved: string;
    tier: { name: string; lifetime_spend: string };
    period: { by_model: { model: string; tokens: number; cost: string }[] };
  };
}

async function eventually<T>(
  read: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (accept(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const hello = [{ role: 'user' as const, content: 'Hello there' }];

describe('openai client → example proxy', () => {
  it('bills a JSON completion exactly, locally and on Dodo through the weighted meters', async () => {
    const buyer = customer();
    const { openai } = client(buyer.apiKey);
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
    expect(completion.choices[0]!.message.content).toBe('Mock reply: Hello there');
    expect(completion.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 4 });

    // 2 × $2.50/1M + 4 × $10.00/1M = $0.000045
    const after = await balance(buyer.apiKey);
    expect(after.balance).toBe('4.999955');
    expect(after.reserved).toBe('0.00');
    expect(after.period.by_model).toEqual([
      { model: 'gpt-4o', tokens: 6, cost: '0.000045', cost_display: '<$0.01' },
    ]);

    await example.billing.flush();
    const events = services().emulator.ingestedEvents({ customerId: buyer.customerId });
    // Weighted meters: tokens × (price / $0.05 per 1M), exact; the real counts ride along.
    expect(
      events.map((event) => [event.event_name, event.metadata?.tokens, event.metadata?.raw_tokens]),
    ).toEqual([
      ['llm.input_tokens', 100, 2],
      ['llm.output_tokens', 800, 4],
    ]);
    await services().emulator.settle();
    // 500 cents − 0.0045 cents, deducted by Dodo's meters at 200,000 weighted tokens per credit.
    expect(services().emulator.balance(buyer.customerId, services().creditEntitlementId)).toBe('499.9955');
  });

  it('streams with include_usage and bills the usage chunk', async () => {
    const buyer = customer();
    const { openai } = client(buyer.apiKey);
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: hello,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('Mock reply: Hello there');
    expect(usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 4 });
    // 2 × $0.15/1M + 4 × $0.60/1M = $0.0000027
    expect((await balance(buyer.apiKey)).balance).toBe('4.9999973');
  });

  it('bills a stream whose client did not ask for usage, and does not send it the usage chunk', async () => {
    const buyer = customer();
    const response = await fetch(`${example.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${buyer.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: hello, stream: true }),
    });
    const body = await response.text();
    expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(body).not.toContain('"prompt_tokens"');
    expect((await balance(buyer.apiKey)).balance).toBe('4.9999973');
  });

  it('lists the priced models', async () => {
    const { openai } = client(customer().apiKey);
    const ids = [];
    for await (const model of openai.models.list()) ids.push(model.id);
    expect(ids.sort()).toEqual(['gpt-4o', 'gpt-4o-mini', 'o1']);
  });

  it('answers a wrong key with 401 invalid_api_key: AuthenticationError', async () => {
    const { openai, statuses } = client('sk-not-a-key-0123456789');
    const error = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello }).catch((e) => e);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(error.status).toBe(401);
    expect(error.code).toBe('invalid_api_key');
    expect(statuses).toEqual([401]);
  });

  it('refuses a customer without credits with 402 insufficient_quota, which the SDK does not retry', async () => {
    const broke = customer('0');
    const { openai, statuses } = client(broke.apiKey);
    const upstreamBefore = example.mockLLM!.requests().length;
    const error = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello }).catch((e) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(error.status).toBe(402);
    expect(error.code).toBe('insufficient_quota');
    expect(error.type).toBe('insufficient_quota');
    expect(statuses).toEqual([402]);
    expect(example.mockLLM!.requests().length).toBe(upstreamBefore);
  });

  it('top-up through the emulator checkout and webhooks unblocks a refused customer', async () => {
    const broke = customer('0');
    const { openai } = client(broke.apiKey, { maxRetries: 0 });
    await expect(openai.chat.completions.create({ model: 'gpt-4o', messages: hello })).rejects.toMatchObject({
      status: 402,
    });

    const topUp = await fetch(`${example.url}/billing/top-up`, {
      method: 'POST',
      headers: { authorization: `Bearer ${broke.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ pack: 5 }),
    });
    expect(topUp.status).toBe(200);
    const { checkout_url } = (await topUp.json()) as { checkout_url: string };
    const page = await fetch(checkout_url);
    expect(await page.text()).toContain('Pay');
    // What the page's Pay button does: post the form; the emulator pays and redirects back.
    const paid = await fetch(checkout_url, { method: 'POST', redirect: 'manual' });
    const location = new URL(paid.headers.get('location')!);
    expect(`${location.origin}${location.pathname}`).toBe(`${example.url}/`);
    expect(location.searchParams.get('status')).toBe('succeeded');

    const after = await eventually(
      () => balance(broke.apiKey),
      (status) => status.balance === '5.00',
    );
    expect(after.balance).toBe('5.00');
    expect(after.tier.lifetime_spend).toBe('5.00');
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
    expect(completion.usage?.total_tokens).toBe(6);
  });

  it('sends a customer without an API account to open it before selling credits, then bills them on Dodo', async () => {
    const newcomer = services().addCustomer({ account: false });
    const post = (path: string, body?: unknown) =>
      fetch(`${example.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${newcomer.apiKey}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    // Credits Dodo's meters would never deduct are not sold.
    const refused = await post('/billing/top-up', { pack: 5 });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('api_account_required');

    // The sign-up step: the $0 usage plan's checkout, which keeps the card for later charges.
    const account = (await (await post('/billing/account')).json()) as {
      status: string;
      checkout_url: string;
    };
    expect(account.status).toBe('checkout');
    const opened = await fetch(account.checkout_url, { method: 'POST', redirect: 'manual' });
    const back = new URL(opened.headers.get('location')!);
    expect(back.searchParams.get('subscription_id')).toMatch(/^sub_/);
    expect(await (await post('/billing/account')).json()).toMatchObject({ status: 'open' });

    const topUp = (await (await post('/billing/top-up', { pack: 5 })).json()) as { checkout_url: string };
    await fetch(topUp.checkout_url, { method: 'POST', redirect: 'manual' });
    await eventually(
      () => balance(newcomer.apiKey),
      (status) => status.balance === '5.00',
    );
    const { openai } = client(newcomer.apiKey);
    await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
    await example.billing.flush();
    await services().emulator.settle();
    // Dodo deducted the request through the account's meters: 500 credits less its cost.
    const cents = unitsPerCredit(100);
    const left = services().emulator.balance(newcomer.customerId, services().creditEntitlementId)!;
    expect(parseCredits(left, cents)).toBeLessThan(parseCredits('500', cents));
    expect(services().emulator.meterDeductions({ customerId: newcomer.customerId })).not.toEqual([]);
  });

  it('answers an unknown pack with 400 unknown_pack', async () => {
    const response = await fetch(`${example.url}/billing/top-up`, {
      method: 'POST',
      headers: { authorization: `Bearer ${customer().apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ pack: 7 }),
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('unknown_pack');
  });

  it('limits tier 1 to 3 RPM with 429 + retry-after, which the SDK honours', async () => {
    const buyer = customer();
    const noRetry = client(buyer.apiKey, { maxRetries: 0 });
    for (let index = 0; index < 3; index++) {
      await noRetry.openai.chat.completions.create({ model: 'gpt-4o-mini', messages: hello });
    }
    const limited = await noRetry.openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: hello })
      .catch((e) => e);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect(limited.code).toBe('rate_limit_exceeded');
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(55);
    expect(retryAfter).toBeLessThanOrEqual(60);

    // The limiter's clock jumps to 1.5 s before the window ends (so the SDK's wait is short),
    // then follows real time: it is set from the real elapsed time before each request.
    const fakeStart = Date.now() + (retryAfter - 1.5) * 1000;
    const realStart = performance.now();
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const retrying = client(buyer.apiKey, {
        beforeFetch: () => vi.setSystemTime(fakeStart + (performance.now() - realStart)),
      });
      const started = performance.now();
      const completion = await retrying.openai.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: hello,
      });
      expect(completion.choices[0]!.message.content).toBe('Mock reply: Hello there');
      expect(retrying.statuses).toEqual([429, 200]);
      expect(performance.now() - started).toBeGreaterThanOrEqual(400);
    } finally {
      vi.useRealTimers();
    }
  });

  it('answers /healthz', async () => {
    const response = await fetch(`${example.url}/healthz`);
    expect(await response.json()).toMatchObject({
      status: 'ok',
      parts: { dodo: 'emulated', upstream: 'mock', store: 'memory' },
    });
  });
});

describe('client disconnect', () => {
  let slow: RunningExample;
  beforeAll(async () => {
    slow = await startExample({
      port: 0,
      env: {},
      mockLLM: { tokensPerSecond: 40, reply: 'word '.repeat(200) },
    });
  });
  afterAll(() => slow?.close());

  it('aborts the upstream request when the client goes away mid-stream', async () => {
    const buyer = slow.embedded!.addCustomer({ dollars: '5.00' });
    const abort = new AbortController();
    const openai = new OpenAI({ apiKey: buyer.apiKey, baseURL: `${slow.url}/v1`, maxRetries: 0 });
    const stream = await openai.chat.completions.create(
      { model: 'gpt-4o', messages: hello, stream: true, max_tokens: 400 },
      { signal: abort.signal },
    );
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) break; // leaves the loop: the SDK aborts the response
    }
    abort.abort();
    const upstream = await eventually(
      async () => slow.mockLLM!.requests().at(-1)!,
      (request) => request.aborted,
    );
    expect(upstream.aborted).toBe(true);
    expect(upstream.completed).toBe(false);
  });
});
