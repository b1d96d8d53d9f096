import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseUsd } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { BillingStore } from '../../src/store/types.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';
import { type OpenAILikeApp, startOpenAILikeApp, upstreamBilled } from './openai-like.js';

const redisUrl = await requireRedis('the spend invariant on RedisStore');

/** Free text of any script: what a customer puts in a prompt, a tool, a schema. */
const text = fc.string({ unit: 'grapheme', maxLength: 300 });

const image = fc.constantFrom(
  { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } },
  { type: 'image_url', image_url: { url: `data:image/png;base64,${'iVBORw0KGgo'.repeat(200)}` } },
);

const message = fc.oneof(
  fc.record({ role: fc.constantFrom('user', 'system'), content: text }),
  fc.record({
    role: fc.constant('user'),
    content: fc.array(fc.oneof(fc.record({ type: fc.constant('text'), text }), image), {
      minLength: 1,
      maxLength: 3,
    }),
  }),
  fc.record({
    role: fc.constant('assistant'),
    content: fc.constant(null),
    tool_calls: fc.array(
      fc.record({
        id: fc.constant('call_1'),
        type: fc.constant('function'),
        function: fc.record({
          name: fc.constant('lookup'),
          arguments: text.map((q) => JSON.stringify({ q })),
        }),
      }),
      { minLength: 1, maxLength: 2 },
    ),
  }),
);

/** Request bodies over every field that changes what a request can cost. */
const body = fc.record(
  {
    model: fc.constantFrom('gpt-4o', 'gpt-4o-mini', 'o1'),
    messages: fc.array(message, { minLength: 1, maxLength: 3 }),
    n: fc.integer({ min: 1, max: 4 }),
    max_tokens: fc.integer({ min: 1, max: 3_000 }),
    stream: fc.boolean(),
    tools: fc.array(
      fc.record({
        type: fc.constant('function'),
        function: fc.record({
          name: fc.constant('lookup'),
          description: text,
          parameters: fc.constant({ type: 'object' }),
        }),
      }),
      { minLength: 1, maxLength: 2 },
    ),
    response_format: text.map((description) => ({
      type: 'json_schema',
      json_schema: { name: 'answer', schema: { type: 'object', description } },
    })),
  },
  { requiredKeys: ['model', 'messages'] },
);

const run = fc.record({
  balance: fc.constantFrom('0.01', '0.05', '0.20', '0.50'),
  bodies: fc.array(body, { minLength: 1, maxLength: 6 }),
});

const stores: [string, number, () => Promise<BillingStore>][] = [
  ['MemoryStore', 20, async () => new MemoryStore()],
];
let redis: Redis | undefined;
const prefix = `elb-invariant:${randomUUID()}:`;
if (redisUrl) {
  stores.push([
    'RedisStore',
    10,
    async () => {
      redis ??= new Redis(redisUrl, { maxRetriesPerRequest: 1 });
      await whenReady(redis);
      return new RedisStore({ client: redis, prefix });
    },
  ]);
}
afterAll(async () => {
  if (!redis) return;
  await deleteKeysWithPrefix(redis, prefix);
  await redis.quit();
});

describe.each(stores)('the spend invariant, for any requests (%s)', (_name, numRuns, createStore) => {
  let app: OpenAILikeApp;
  let store: BillingStore;
  beforeAll(async () => {
    store = await createStore();
    app = await startOpenAILikeApp(store);
  });
  afterAll(() => app.close());

  it('concurrent requests are billed no more than the balance at admission, and exactly what the upstream billed', async () => {
    await fc.assert(
      fc.asyncProperty(run, async ({ balance, bodies }) => {
        app.llm.reset();
        const customer = app.customerWith(balance);
        const responses = await Promise.all(bodies.map((request) => app.chat(customer, request)));
        await Promise.all(responses.map((response) => response.text()));
        for (const response of responses) expect([200, 402]).toContain(response.status);
        const billed = upstreamBilled(app.llm);
        expect(billed).toBeLessThanOrEqual(parseUsd(balance, 'balance'));
        await expect.poll(async () => (await store.getBalance(customer))?.reserved ?? 0n).toBe(0n);
        const view = await store.getBalance(customer);
        expect(parseUsd(balance, 'balance') - (view?.balance ?? parseUsd(balance, 'balance'))).toBe(billed);
      }),
      { numRuns },
    );
  });
});
