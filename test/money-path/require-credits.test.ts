import express from 'express';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseUsd } from '../../src/money.js';
import { requireCredits } from '../../src/require-credits/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import { type BillingApp, chat, PRICING, startBillingApp, startDodo } from '../support/billing-app.js';

type ErrorBody = { error: { message: string; type: string; code: string | null; param: string | null } };

const GPT4O = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
/**
 * The input bound: one token per byte of the body's strings (413, a separator each included),
 * keys (34) and scalars (2), plus one per object or array (3) = 452 tokens at $2.50/1M; and the
 * request's own 50 output tokens at $10/1M.
 */
const GPT4O_ESTIMATE = parseUsd('0.00163', 'test');

describe('requireCredits', () => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let app: BillingApp;
  let store: MemoryStore;
  let customer: string;

  beforeAll(async () => {
    dodo = await startDodo();
  });
  afterAll(async () => {
    await dodo.emulator.close();
  });
  afterEach(async () => {
    dodo.emulator.clearFaults();
    await app?.close();
  });

  async function start(
    options: Parameters<typeof startBillingApp>[0]['requireCredits'] = {},
    credits = '100',
  ) {
    store = new MemoryStore();
    customer = dodo.customer({ email: `c${Math.random()}@example.com` }).customer_id;
    if (credits !== '0') dodo.emulator.setBalance(customer, dodo.entitlementId, credits);
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      requireCredits: options,
    });
  }

  it('answers 401 when the app names no customer', async () => {
    await start();
    const response = await chat(app, undefined, GPT4O);
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({
      error: {
        message: expect.stringContaining('No customer'),
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      },
    });
  });

  it('answers 400 for a request without a priced model, unless a default price is set', async () => {
    await start();
    const unknown = await chat(app, customer, { ...GPT4O, model: 'gpt-9' });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as ErrorBody).error).toMatchObject({
      code: 'model_not_priced',
      param: 'model',
    });
    expect((await chat(app, customer, { messages: [] })).status).toBe(400);
    await app.close();
    app = await startBillingApp({
      store,
      emulator: dodo.emulator,
      entitlementId: dodo.entitlementId,
      requireCredits: { defaultPrice: { input: '1', output: '1' } },
    });
    expect((await chat(app, customer, { ...GPT4O, model: 'gpt-9' }, [1, 1])).status).toBe(200);
  });

  it('answers 402 insufficient_quota, OpenAI-shaped, for a customer Dodo has no balance for', async () => {
    await start({}, '0');
    const response = await chat(app, customer, GPT4O);
    expect(response.status).toBe(402);
    expect(await response.json()).toEqual({
      error: {
        message: expect.stringMatching(/exceeded your current quota.*\$0\.00.*Top up/),
        type: 'insufficient_quota',
        param: null,
        code: 'insufficient_quota',
      },
    });
  });

  it('answers 429 instead when configured, telling the openai SDK not to retry', async () => {
    await start({ insufficientStatus: 429 }, '0');
    const response = await chat(app, customer, GPT4O);
    expect(response.status).toBe(429);
    expect(response.headers.get('x-should-retry')).toBe('false');
    expect(((await response.json()) as ErrorBody).error.code).toBe('insufficient_quota');
  });

  it('refuses what the available balance cannot cover, and says how much is available', async () => {
    await start({}, '0.15'); // 0.15 cents < 0.163 cents estimated
    const response = await chat(app, customer, GPT4O);
    expect(response.status).toBe(402);
    expect(((await response.json()) as ErrorBody).error.message).toContain('$0.0015');
    const smaller = await chat(app, customer, { ...GPT4O, max_tokens: 10 }, [100, 10]);
    expect(smaller.status).toBe(200);
  });

  it('fetches a missing balance once for many concurrent requests (single flight)', async () => {
    await start();
    const before = dodo.emulator.requests().filter((request) => request.path.includes('/balances/')).length;
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => chat(app, customer, GPT4O, [100, 50])),
    );
    expect(responses.map((response) => response.status)).toEqual(Array(20).fill(200));
    const fetches =
      dodo.emulator.requests().filter((request) => request.path.includes('/balances/')).length - before;
    expect(fetches).toBe(1);
  });

  it('fails closed with 503 billing_unavailable and retry-after when Dodo hangs, within its deadline', async () => {
    await start({ dodoTimeoutMs: 300 });
    dodo.emulator.fault('GET /credit-entitlements/{id}/balances/{customer_id}', { hang: true });
    const started = performance.now();
    const response = await chat(app, customer, GPT4O);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('5');
    expect(((await response.json()) as ErrorBody).error.code).toBe('billing_unavailable');
  });

  it('admits unreserved with failOpen when Dodo is down, and logs it', async () => {
    await start({ dodoTimeoutMs: 300, failOpen: true });
    dodo.emulator.fault('GET /credit-entitlements/{id}/balances/{customer_id}', { status: 500 });
    const response = await chat(app, customer, GPT4O, [100, 50]);
    expect(response.status).toBe(200);
    expect(app.logger.lines.some((line) => line.message.includes('failOpen'))).toBe(true);
  });

  it('refuses on the local view when a refusal cannot be double-checked with Dodo', async () => {
    await start({ balanceTtlMs: 1 }, '0.07');
    expect((await chat(app, customer, GPT4O)).status).toBe(402);
    dodo.emulator.fault('GET /credit-entitlements/{id}/balances/{customer_id}', { status: 500 });
    expect((await chat(app, customer, GPT4O)).status).toBe(402);
  });

  it('sees a top-up made at Dodo once the view is stale, before refusing', async () => {
    await start({ balanceTtlMs: 50 }, '0.07');
    expect((await chat(app, customer, GPT4O)).status).toBe(402);
    dodo.emulator.addCredits(customer, dodo.entitlementId, '10');
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect((await chat(app, customer, GPT4O, [100, 50])).status).toBe(200);
  });

  it('asks Dodo before admitting on a view marked stale (a refund clawed credits back)', async () => {
    await start({ balanceTtlMs: 60_000 }, '100');
    expect((await chat(app, customer, GPT4O, [100, 50])).status).toBe(200);
    dodo.emulator.setBalance(customer, dodo.entitlementId, '0');
    expect((await chat(app, customer, GPT4O, [100, 50])).status).toBe(200); // fresh view: no Dodo call
    await store.markBalanceStale(customer);
    expect((await chat(app, customer, GPT4O)).status).toBe(402);
    expect((await store.getBalance(customer))?.reserved).toBe(0n);
  });

  it('releases the reservation when the client aborts, when the handler fails, and when it answers', async () => {
    let releaseHandler: () => void = () => {};
    const handlerStarted = new Promise<void>((started) => {
      releaseHandler = started;
    });
    store = new MemoryStore();
    customer = dodo.customer({ email: 'abort@example.com' }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '1');
    const server = express()
      .use(express.json())
      .post(
        '/slow',
        requireCredits({
          store,
          dodo: dodo.emulator.client({ maxRetries: 0 }),
          creditEntitlementId: dodo.entitlementId,
          customerId: () => customer,
          pricing: PRICING,
        }),
        (_req, _res) => releaseHandler(), // never answers
      )
      .post(
        '/fails',
        requireCredits({
          store,
          dodo: dodo.emulator.client({ maxRetries: 0 }),
          creditEntitlementId: dodo.entitlementId,
          customerId: () => customer,
          pricing: PRICING,
        }),
        (_req, _res, next) => next(new Error('upstream exploded')),
      )
      .listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const abort = new AbortController();
      const pending = fetch(`${base}/slow`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(GPT4O),
        signal: abort.signal,
      }).catch(() => undefined);
      await handlerStarted;
      expect((await store.getBalance(customer))?.reserved).toBe(GPT4O_ESTIMATE);
      abort.abort();
      await pending;
      await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(0n);

      const failed = await fetch(`${base}/fails`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(GPT4O),
      });
      expect(failed.status).toBe(500);
      await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(0n);
      expect((await store.getBalance(customer))?.balance).toBe(parseUsd('0.01', 'test'));
    } finally {
      server.closeAllConnections();
      server.close();
      app = undefined as unknown as BillingApp;
    }
  });

  it('says at startup which option is missing or wrong', () => {
    const base = {
      store: new MemoryStore(),
      dodo: {} as never,
      creditEntitlementId: 'cde_1',
      customerId: () => 'c',
      pricing: PRICING,
    };
    expect(() => requireCredits({ ...base, store: undefined as never })).toThrow(/requireCredits: `store`/);
    expect(() => requireCredits({ ...base, dodo: undefined })).toThrow(/requireCredits: `dodo` is required/);
    expect(() => requireCredits({ ...base, creditEntitlementId: '' })).toThrow(
      /`creditEntitlementId` is required/,
    );
    expect(() => requireCredits({ ...base, customerId: 'x' as never })).toThrow(
      /`customerId` must be a function/,
    );
    expect(() => requireCredits({ ...base, pricing: { m: { input: 0.1 + 0.2, output: '1' } } })).toThrow(
      /pricing\["m"\]\.input/,
    );
    expect(() => requireCredits({ ...base, insufficientStatus: 403 as never })).toThrow(
      /`insufficientStatus` must be 402 or 429/,
    );
    expect(() => requireCredits({ ...base, balanceTtlMs: -1 })).toThrow(
      /`balanceTtlMs` must be a positive integer/,
    );
  });
});
