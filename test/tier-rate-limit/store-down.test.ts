import { Redis } from 'ioredis';
import OpenAI, { InternalServerError, RateLimitError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/store/redis.js';
import { GUIDE_TIERS, tierRateLimit } from '../../src/tier-rate-limit/index.js';
import { type RedisServer, requireRedisBinaries, startRedisServer, whenReady } from '../support/redis.js';
import { customerFromApiKey, type RunningApp, recordingLogger, startApp } from './harness.js';

describe.runIf(requireRedisBinaries('tierRateLimit with its Redis down'))(
  'tierRateLimit when the store is down',
  () => {
    let server: RedisServer | undefined;
    let client: Redis | undefined;
    let app: RunningApp | undefined;
    afterEach(async () => {
      await app?.close();
      client?.disconnect();
      await server?.stop();
    });

    async function startDown(whenStoreDown?: 'fail-closed' | { instances: number }) {
      server = await startRedisServer();
      client = new Redis(server.url, { maxRetriesPerRequest: 1, retryStrategy: () => 100 });
      client.on('error', () => {});
      await whenReady(client);
      const store = new RedisStore({ client, prefix: 'elb-test:' });
      const logger = recordingLogger();
      app = await startApp({
        store,
        chain: [
          tierRateLimit({
            store,
            customerId: customerFromApiKey,
            tiers: GUIDE_TIERS,
            logger,
            ...(whenStoreDown ? { whenStoreDown } : {}),
          }),
        ],
        handler: (req, res) => {
          res.json({ id: 'x', object: 'chat.completion', model: req.body.model, choices: [], usage: null });
        },
      });
      const openai = new OpenAI({ apiKey: 'cus_down', baseURL: app.baseURL, maxRetries: 0 });
      const ask = () =>
        openai.chat.completions
          .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] })
          .withResponse();
      expect((await ask()).response.headers.get('x-ratelimit-remaining-requests')).toBe('2');
      expect(logger.lines).toEqual([]);
      await server.kill();
      await new Promise((resolve) => setTimeout(resolve, 50));
      return { ask, logger };
    }

    it('fails closed by default: 503 billing_unavailable within the deadline, logged, never a 429', async () => {
      const { ask, logger } = await startDown();
      const started = performance.now();
      const error = await ask().catch((caught: unknown) => caught);
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(error).toBeInstanceOf(InternalServerError);
      expect((error as InternalServerError).status).toBe(503);
      expect((error as InternalServerError).code).toBe('billing_unavailable');
      expect(logger.lines.some((line) => line.message.includes('fail-closed'))).toBe(true);
    });

    it('with whenStoreDown { instances }, limits each process to its share of the tier, and logs it', async () => {
      const { ask, logger } = await startDown({ instances: 2 });
      // Tier 1's 3 requests a minute, shared by 2 processes: 2 for this one.
      const started = performance.now();
      for (const remaining of ['1', '0']) {
        const { response } = await ask();
        expect(response.status).toBe(200);
        expect(response.headers.get('x-ratelimit-limit-requests')).toBe('2');
        expect(response.headers.get('x-ratelimit-remaining-requests')).toBe(remaining);
      }
      const error = await ask().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RateLimitError);
      expect((error as RateLimitError).message).toContain(
        'on requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in ',
      );
      expect(performance.now() - started).toBeLessThan(1_500);
      expect(logger.lines[0]).toEqual({
        level: 'warn',
        message: 'store unavailable: limiting on the last known tier',
      });
    });
  },
);
