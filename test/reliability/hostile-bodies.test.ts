import type { AddressInfo } from 'node:net';
import express5 from 'express';
import express4 from 'express4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { MemoryStore } from '../../src/store/memory.js';
import { PRICING, recordingLogger, startDodo } from '../support/billing-app.js';

/**
 * Bodies a hostile client sends to crash or stall the billing path. Express 4 (a supported
 * peer) does not catch a rejected middleware promise: one stack overflow in a walk of the body
 * would end the process, and every usage event queued in memory with it.
 */
const nested = (depth: number) => `{"model":"gpt-4o","messages":${'['.repeat(depth)}${']'.repeat(depth)}}`;
const HOSTILE: [string, string, number][] = [
  ['messages nested 5,000 deep (10 kB)', nested(5_000), 400],
  [
    'content nested 100,000 deep',
    `{"model":"gpt-4o","messages":[{"role":"user","content":${'['.repeat(100_000)}${']'.repeat(100_000)}}]}`,
    400,
  ],
  [
    '600,000 values in one array',
    `{"model":"gpt-4o","messages":[${Array(600_000).fill('0').join(',')}]}`,
    400,
  ],
  [
    'a 4 MB string',
    JSON.stringify({
      model: 'gpt-4o',
      max_tokens: 5,
      messages: [{ role: 'user', content: 'x'.repeat(4_000_000) }],
    }),
    402,
  ],
  ['a JSON array as the body', '[1,2,3]', 400],
  ['a JSON string as the body', '"hello"', 400],
  [
    '__proto__ and constructor keys',
    '{"model":"gpt-4o","max_tokens":5,"__proto__":{"x":1},"constructor":{"prototype":{}},"messages":[]}',
    200,
  ],
  ['n as a string', '{"model":"gpt-4o","n":"20","messages":[]}', 400],
  ['max_tokens as a huge float', '{"model":"gpt-4o","max_tokens":1e308,"messages":[]}', 400],
  ['a model name of 10,000 characters', JSON.stringify({ model: 'm'.repeat(10_000), messages: [] }), 400],
];

describe.each([
  ['Express 4', express4 as unknown as typeof express5],
  ['Express 5', express5],
])('hostile bodies on %s', (_name, express) => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let url: string;
  let customer: string;
  let close: () => Promise<void>;
  const logger = recordingLogger();

  beforeAll(async () => {
    dodo = await startDodo();
    customer = dodo.emulator.createCustomer({ email: 'hostile@example.com' }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '1');
    const billing = createBilling({
      store: new MemoryStore(),
      dodo: dodo.emulator.client({ maxRetries: 0 }),
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: PRICING,
      logger,
    });
    const app = express();
    app.use(express.json({ limit: '16mb', strict: false }));
    app.post(
      '/v1/chat/completions',
      billing.chain({
        tierRateLimit: { tiers: [{ name: 'all', minSpend: '0', rpm: 10_000, tpm: 100_000_000 }] },
      }),
      (_req: express5.Request, res: express5.Response) => {
        res.json({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 1 } });
      },
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
    close = async () => {
      server.close();
      await billing.close();
      await dodo.emulator.close();
    };
  });
  afterAll(() => close());

  const post = (body: string) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-customer': customer },
      body,
    });

  it.each(HOSTILE)(
    '%s: answered %i, and the process serves the next request',
    async (_what, body, status) => {
      const started = performance.now();
      const response = await post(body);
      expect(response.status).toBe(status);
      expect(performance.now() - started).toBeLessThan(5_000);
      const next = await post(
        JSON.stringify({ model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
      );
      expect(next.status).toBe(200);
    },
  );
});
