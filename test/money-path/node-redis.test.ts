import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../../src/money.js';
import { RedisStore } from '../../src/store/redis.js';
import { closeNodeRedisClients, connectedNodeRedisClient } from '../support/node-redis.js';
import { deleteKeysWithPrefix, requireRedis } from '../support/redis.js';
import { type OpenAILikeApp, startOpenAILikeApp, upstreamBilled } from './openai-like.js';

/*
 * The money path through the chain (tier limit, credits, metering, outbox to Dodo) with
 * RedisStore on a node-redis client: one dedicated file instead of a third store in every
 * money-path suite, since the store underneath is proven by the conformance suite on both clients.
 */

const usd = (text: string) => parseUsd(text, 'test');
const redisUrl = await requireRedis('money path on node-redis');

describe.runIf(redisUrl)('the chain on RedisStore over a node-redis client', () => {
  const prefix = `elb-test:${randomUUID()}:`;
  let app: OpenAILikeApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    const admin = new Redis(redisUrl!);
    await deleteKeysWithPrefix(admin, prefix);
    await admin.quit();
    closeNodeRedisClients();
  });

  async function start() {
    const client = await connectedNodeRedisClient(redisUrl!);
    const store = new RedisStore({ client, prefix: `${prefix}${randomUUID()}:` });
    app = await startOpenAILikeApp(store, {
      tierRateLimit: { tiers: [{ name: 'only', minSpend: '0', rpm: 4 }] },
    });
    return { store, app };
  }

  it('concurrent requests spend at most the balance, billed exactly, locally and in the events sent to Dodo', async () => {
    const { store, app } = await start();
    const customer = app.customerWith('0.40'); // each request can be billed 20 × 900 output = $0.18
    const statuses = await Promise.all(
      Array.from({ length: 4 }, () =>
        app
          .chat(customer, {
            model: 'gpt-4o',
            messages: [{ role: 'user', content: 'hi' }],
            n: 20,
            max_tokens: 900,
          })
          .then((response) => response.status),
      ),
    );
    expect(statuses.sort()).toEqual([200, 200, 402, 402]);
    const billed = upstreamBilled(app.llm);
    expect(billed).toBeGreaterThan(usd('0.36'));
    expect(billed).toBeLessThanOrEqual(usd('0.40'));
    await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(0n);
    expect((await store.getBalance(customer))?.balance).toBe(usd('0.40') - billed);

    await app.billing.flush();
    const events = app.dodo.emulator.ingestedEvents({ customerId: customer });
    expect(events).toHaveLength(4); // input and output of each admitted request
    const tokensSent = (name: string) =>
      events
        .filter((event) => event.event_name === name)
        .reduce((sum, event) => sum + Number(event.metadata?.tokens), 0);
    const answered = app.llm.requests().filter((request) => request.completion);
    expect(tokensSent('llm.input_tokens')).toBe(
      answered.reduce((sum, request) => sum + request.completion!.promptTokens, 0),
    );
    expect(tokensSent('llm.output_tokens')).toBe(
      answered.reduce((sum, request) => sum + request.completion!.completionTokens, 0),
    );
  });

  it('the tier limit counts in Redis: five concurrent requests at 4 RPM, one refused with 429', async () => {
    const { app } = await start();
    const customer = app.customerWith('5');
    const responses = await Promise.all(
      Array.from({ length: 5 }, () =>
        app.chat(customer, {
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 5,
        }),
      ),
    );
    const statuses = responses.map((response) => response.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 429]);
    const refused = responses.find((response) => response.status === 429)!;
    expect(refused.headers.get('x-ratelimit-limit-requests')).toBe('4');
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
  });
});
