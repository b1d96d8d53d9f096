import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type OpenAI from 'openai';
import { RateLimitError } from 'openai';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { estimateInputTokens, utf8ByteTokens } from '../../src/estimate/input.js';
import { meterUsage } from '../../src/meter-usage/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { BillingStore } from '../../src/store/types.js';
import {
  createDodoEmulator,
  createMockLLM,
  type DodoEmulator,
  type MockLLM,
  mockCompletion,
} from '../../src/testing/index.js';
import { openAIDuration } from '../../src/tier-rate-limit/headers.js';
import { GUIDE_TIERS, OPENAI_TIERS, type Tier, tierRateLimit } from '../../src/tier-rate-limit/index.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';
import {
  customerFromApiKey,
  pay,
  proxyTo,
  type RunningApp,
  recordingLogger,
  refund,
  sleep,
  startApp,
} from './harness.js';

const DAY = 24 * 60 * 60_000;
const redisUrl = await requireRedis('tierRateLimit on RedisStore');
const redis = redisUrl ? new Redis(redisUrl, { maxRetriesPerRequest: 1 }) : undefined;
const prefixes: string[] = [];
afterAll(async () => {
  if (!redis) return;
  for (const prefix of prefixes) await deleteKeysWithPrefix(redis, prefix);
  await redis.quit();
});

type StoreFactory = (now?: () => number) => Promise<{ store: BillingStore; prefix?: string }>;
const stores: [string, StoreFactory][] = [
  ['MemoryStore', async (now) => ({ store: new MemoryStore({ now }) })],
];
if (redis) {
  stores.push([
    'RedisStore',
    async (now) => {
      await whenReady(redis);
      const prefix = `elb-test:${randomUUID()}:`;
      prefixes.push(prefix);
      return { store: new RedisStore({ client: redis, prefix, now }), prefix };
    },
  ]);
}

const ask = (content = 'Hello there', extra: Record<string, unknown> = {}) => ({
  model: 'gpt-4o',
  messages: [{ role: 'user' as const, content }],
  ...extra,
});

/**
 * What TPM counts at admission: the bound of the input (the same estimate `requireCredits`
 * holds credits for) and the output the request may generate: its `max_tokens`, else the
 * default ceiling of 4,096 tokens.
 */
const admissionTokens = (body: Record<string, unknown>) =>
  estimateInputTokens(body, { estimateTokens: utf8ByteTokens, imageTokens: 1445 }) +
  ((body.max_tokens as number | undefined) ?? 4096);

/** The 429's body and headers, as the `openai` client saw them. */
async function refusal(client: OpenAI, body = ask()): Promise<RateLimitError> {
  const error = await client.chat.completions.create(body).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(RateLimitError);
  return error as RateLimitError;
}

function expectWindowHeaders(
  headers: Headers,
  kind: 'requests' | 'tokens',
  limit: number,
  remaining: number,
) {
  expect(headers.get(`x-ratelimit-limit-${kind}`)).toBe(String(limit));
  expect(headers.get(`x-ratelimit-remaining-${kind}`)).toBe(String(remaining));
  // A fixed one-minute window that opened during this test.
  expect(headers.get(`x-ratelimit-reset-${kind}`)).toMatch(/^(1m0s|5\ds)$/);
}

describe.each(stores)('tierRateLimit through Dodo webhooks (%s)', (_name, createStore) => {
  let dodo: DodoEmulator;
  let llm: MockLLM;
  let app: RunningApp;
  let store: BillingStore;
  let clock: number;
  let customerId: string;
  let sixtyDollars: string;
  const logger = recordingLogger();

  const start = async (tiers: readonly Tier[], chain: 'meter' | 'alone' = 'alone') => {
    store = (await createStore(() => clock)).store;
    const limit = tierRateLimit({ store, customerId: customerFromApiKey, tiers, logger });
    const meter = meterUsage({
      store,
      dodo: dodo.client({ maxRetries: 0 }),
      customerId: customerFromApiKey,
      pricing: { 'gpt-4o': { input: '2.50', output: '10.00' } },
      logger,
    });
    app = await startApp({
      store,
      dodo,
      chain: chain === 'meter' ? [limit, meter] : [limit],
      handler: proxyTo(llm),
      logger,
    });
    if (chain === 'meter') closers.push(() => meter.close());
  };
  const closers: (() => Promise<void>)[] = [];

  beforeEach(async () => {
    clock = Date.now();
    dodo = await createDodoEmulator();
    llm = await createMockLLM();
    const credits = dodo.createCreditEntitlement();
    customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    sixtyDollars = dodo.createCreditPack({
      name: '$60 of credits',
      price: 6000,
      creditEntitlementId: credits.id,
      credits: '6000',
    }).product_id;
  });
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
    await app?.close();
    await llm.close();
    await dodo.close();
  });

  it('tier 1 allows 3 RPM with OpenAI’s headers, then answers the 4th with OpenAI’s 429', async () => {
    await start(GUIDE_TIERS);
    const client = app.client(customerId);
    for (const remaining of [2, 1, 0]) {
      const { data, response } = await client.chat.completions.create(ask()).withResponse();
      expect(data.choices[0]?.message.content).toBe('Mock reply: Hello there');
      expectWindowHeaders(response.headers, 'requests', 3, remaining);
      expect(response.headers.get('x-ratelimit-limit-tokens')).toBeNull();
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await refusal(client);
      expect(error.status).toBe(429);
      expect(error.code).toBe('rate_limit_exceeded');
      expect(error.type).toBe('requests');
      expect(error.param).toBeNull();
      const waitMs = Number(error.headers?.get('retry-after-ms'));
      expect(waitMs).toBeGreaterThan(55_000);
      expect(waitMs).toBeLessThanOrEqual(60_000);
      expect(error.headers?.get('retry-after')).toBe(String(Math.ceil(waitMs / 1000)));
      expectWindowHeaders(error.headers as Headers, 'requests', 3, 0);
      // Refused requests are not counted: the second refusal still says "Used 3".
      expect(error.error).toEqual({
        message: `Rate limit reached for gpt-4o in organization ${customerId} on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in ${openAIDuration(waitMs)}. Your usage tier is tier-1; spending more unlocks higher limits.`,
        type: 'requests',
        param: null,
        code: 'rate_limit_exceeded',
      });
    }
    expect(llm.requests()).toHaveLength(3);
  });

  it('a $60 payment moves the customer to tier 2 on the next request; a refund moves them back', async () => {
    await start(GUIDE_TIERS);
    const client = app.client(customerId);
    for (let index = 0; index < 3; index++) await client.chat.completions.create(ask());
    await refusal(client);

    const paymentId = await pay(dodo, customerId, sixtyDollars);
    // The minute's count carries over: 3 admitted before, this is the 4th of tier 2's 10.
    const upgraded = await client.chat.completions.create(ask()).withResponse();
    expectWindowHeaders(upgraded.response.headers, 'requests', 10, 6);
    // The tier never comes from the request.
    const claimed = await client.chat.completions
      .create(ask('Hello there', { tier: 'tier-1', user: 'tier-3' }), { headers: { 'x-tier': 'tier-3' } })
      .withResponse();
    expectWindowHeaders(claimed.response.headers, 'requests', 10, 5);

    await refund(dodo, paymentId);
    const error = await refusal(client);
    expectWindowHeaders(error.headers as Headers, 'requests', 3, 0);
    expect(error.message).toContain('on requests per min (RPM): Limit 3, Used 5, Requested 1.');
    expect(error.message).toContain('Your usage tier is tier-1');
  });

  it('days since the first payment gate OpenAI’s tier 2 (store clock)', async () => {
    await start(OPENAI_TIERS);
    const client = app.client(customerId);
    const free = await client.chat.completions.create(ask()).withResponse();
    expectWindowHeaders(free.response.headers, 'requests', 3, 2);
    expectWindowHeaders(free.response.headers, 'tokens', 40_000, 40_000 - admissionTokens(ask()));

    await pay(dodo, customerId, sixtyDollars);
    const tier1 = await client.chat.completions.create(ask()).withResponse();
    expectWindowHeaders(tier1.response.headers, 'requests', 500, 500 - 2);

    const { firstPaymentAt } = await store.getSpend(customerId);
    clock = firstPaymentAt! + 7 * DAY - 60_000;
    const almost = await client.chat.completions.create(ask()).withResponse();
    expectWindowHeaders(almost.response.headers, 'requests', 500, 500 - 3);

    clock += 60_000;
    const tier2 = await client.chat.completions.create(ask()).withResponse();
    expectWindowHeaders(tier2.response.headers, 'requests', 5_000, 5_000 - 4);
    expect(tier2.response.headers.get('x-ratelimit-limit-tokens')).toBe('450000');
  });

  it.each(['meter', 'alone'] as const)(
    'TPM takes the estimate at admission and is corrected with the actual usage (%s)',
    async (chain) => {
      await start([{ name: 'only', minSpend: '0', rpm: 100, tpm: 1_000 }], chain);
      const client = app.client(customerId);
      // 44 characters, keys and structure → at most 97 prompt tokens, plus max_tokens 200: 297.
      const body = ask('one two three four five six seven eight nine', { max_tokens: 200 });
      const estimate = admissionTokens(body);
      const actual = mockCompletion('chat', body).totalTokens;
      expect([estimate, actual]).toEqual([297, 20]);
      const input = estimate - 200;

      const first = await client.chat.completions.create(body).withResponse();
      expectWindowHeaders(first.response.headers, 'tokens', 1_000, 1_000 - estimate);
      await sleep(100);
      const second = await client.chat.completions.create(body).withResponse();
      expectWindowHeaders(second.response.headers, 'tokens', 1_000, 1_000 - actual - estimate);
      await sleep(100);

      // 40 tokens used: a request estimated at 961 does not fit, one at 960 does.
      const big = (maxTokens: number) =>
        ask('one two three four five six seven eight nine', { max_tokens: maxTokens });
      const error = await refusal(client, big(1_000 - 2 * actual - input + 1));
      expect(error.type).toBe('tokens');
      expect(error.code).toBe('rate_limit_exceeded');
      expect(error.message).toContain(
        `on tokens per min (TPM): Limit 1000, Used ${2 * actual}, Requested ${1_000 - 2 * actual + 1}.`,
      );
      expectWindowHeaders(error.headers as Headers, 'tokens', 1_000, 1_000 - 2 * actual);
      // The refused tokens were not kept: a request that fits exactly is admitted.
      const fits = await client.chat.completions.create(big(1_000 - 2 * actual - input)).withResponse();
      expectWindowHeaders(fits.response.headers, 'tokens', 1_000, 0);
    },
  );

  it('a tier without TPM sends only the request headers; the shared token window still counts its usage', async () => {
    await start(
      [
        { name: 'metered', minSpend: '0', rpm: 100, tpm: 1_000 },
        { name: 'unmetered', minSpend: '50', rpm: 100 },
      ],
      'meter',
    );
    const client = app.client(customerId);
    const body = ask('one two three four five six seven eight nine', { max_tokens: 200 });
    const actual = mockCompletion('chat', body).totalTokens;
    const paymentId = await pay(dodo, customerId, sixtyDollars);
    const unmetered = await client.chat.completions.create(body).withResponse();
    expectWindowHeaders(unmetered.response.headers, 'requests', 100, 99);
    expect(unmetered.response.headers.get('x-ratelimit-limit-tokens')).toBeNull();
    await sleep(100);
    // Back on the metered tier within the minute: what the unmetered request used is counted.
    await refund(dodo, paymentId);
    const metered = await client.chat.completions.create(body).withResponse();
    expectWindowHeaders(metered.response.headers, 'tokens', 1_000, 1_000 - actual - admissionTokens(body));
  });

  it('requests per day: the 429 names RPD, and the refused request is not counted in RPM either', async () => {
    await start([{ name: 'only', minSpend: '0', rpm: 100, rpd: 2 }]);
    const client = app.client(customerId);
    await client.chat.completions.create(ask());
    await client.chat.completions.create(ask());
    const error = await refusal(client);
    expect(error.message).toContain(
      'on requests per day (RPD): Limit 2, Used 2, Requested 1. Please try again in ',
    );
    expect(Number(error.headers?.get('retry-after-ms'))).toBeGreaterThan(86_000_000);
    expectWindowHeaders(error.headers as Headers, 'requests', 100, 98);
  });

  it('a request larger than the TPM limit is refused as too large, and not retried', async () => {
    await start([{ name: 'only', minSpend: '0', rpm: 100, tpm: 100 }]);
    const error = await refusal(app.client(customerId, 2), ask('Hello there', { max_tokens: 500 }));
    expect(error.error).toMatchObject({ code: 'rate_limit_exceeded', param: null });
    expect((error.error as { message: string }).message).toBe(
      `Request too large for gpt-4o in organization ${customerId} on tokens per min (TPM): Limit 100, Requested ${admissionTokens(ask('Hello there', { max_tokens: 500 }))}. The input or output tokens must be reduced in order to run successfully.`,
    );
    expect(error.type).toBe('tokens');
    expect(error.headers?.get('x-should-retry')).toBe('false');
    expect(app.arrivals).toHaveLength(1);
  });
});

describe.runIf(redis)('the openai client against a 429 (RedisStore)', () => {
  let app: RunningApp;
  afterEach(() => app?.close());

  it('sees a RateLimitError without retries, and with retries waits as retry-after-ms says', async () => {
    await whenReady(redis!);
    const prefix = `elb-test:${randomUUID()}:`;
    prefixes.push(prefix);
    const store = new RedisStore({ client: redis!, prefix });
    const answered: string[] = [];
    app = await startApp({
      store,
      chain: [
        (_req, res, next) => {
          res.on('finish', () => answered.push(`${res.statusCode} ${res.getHeader('retry-after-ms') ?? ''}`));
          next();
        },
        tierRateLimit({
          store,
          customerId: customerFromApiKey,
          tiers: GUIDE_TIERS,
          logger: recordingLogger(),
        }),
      ],
      handler: (req, res) => {
        res.json({ id: 'x', object: 'chat.completion', model: req.body.model, choices: [], usage: null });
      },
    });
    const customer = 'cus_retry';
    for (let index = 0; index < 3; index++) await app.client(customer).chat.completions.create(ask());
    const error = await refusal(app.client(customer));
    expect(error.code).toBe('rate_limit_exceeded');

    // Near the end of the window: its key expires in 1.2 s.
    await redis!.pexpire(`${prefix}rate-limit:tier:rpm:${customer}`, 1_200);
    app.arrivals.length = 0;
    answered.length = 0;
    const started = performance.now();
    const completion = await app.client(customer, 2).chat.completions.create(ask());
    expect(completion.object).toBe('chat.completion');
    expect(answered).toHaveLength(2);
    const [refused, admitted] = answered;
    const waitMs = Number(refused!.split(' ')[1]);
    expect(refused).toMatch(/^429 \d+$/);
    expect(waitMs).toBeGreaterThan(1_000);
    expect(waitMs).toBeLessThanOrEqual(1_200);
    expect(admitted).toBe('200 ');
    const gap = app.arrivals[1]! - app.arrivals[0]!;
    expect(gap).toBeGreaterThanOrEqual(waitMs - 5);
    expect(gap).toBeLessThan(waitMs + 500);
    expect(performance.now() - started).toBeLessThan(3_000);
  });
});
