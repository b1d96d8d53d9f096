import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import { describe, expect, it } from 'vitest';
import type { RequestBilling } from '../../src/billing-context.js';
import { createBilling } from '../../src/create-billing.js';
import { parseUsd } from '../../src/money.js';
import { PRICING, startDodo } from '../support/billing-app.js';
import { storesUnderTest } from '../support/stores.js';

const stores = await storesUnderTest('mount order');

const MIDDLEWARES = ['tierRateLimit', 'softCapRouter', 'requireCredits', 'meterUsage'] as const;
type Name = (typeof MIDDLEWARES)[number];

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((item, index) =>
    permutations([...items.slice(0, index), ...items.slice(index + 1)]).map((rest) => [item, ...rest]),
  );
}

const ORDERS = permutations(MIDDLEWARES);
const REQUEST = {
  model: 'gpt-4o',
  messages: [{ role: 'user', content: 'how much is this?' }],
  max_tokens: 30,
};
const tiers = [{ name: 'all', minSpend: '0', rpm: 10_000, tpm: 10_000_000 }];
const plans = { prod_unsubscribed: { softCap: { tokens: 1_000 }, downgrade: { 'gpt-4o': 'gpt-4o-mini' } } };

describe.each(stores)('what a request is billed never depends on mount order (%s)', (_name, createStore) => {
  it.each([
    ['given to createBilling', 'shared'],
    ['given to requireCredits alone', 'requireCredits'],
  ] as const)(
    'the app’s requestId %s: same hold, same event ids, same cost in all 24 orders and in chain()',
    async (_label, where) => {
      const dodo = await startDodo();
      const store = await createStore();
      const requestId = (req: express.Request) => req.get('x-request-id')!;
      const billing = createBilling({
        store,
        dodo: dodo.emulator.client({ maxRetries: 0 }),
        creditEntitlementId: dodo.entitlementId,
        customerId: (req) => req.get('x-customer') || undefined,
        pricing: PRICING,
        ...(where === 'shared' ? { requestId } : {}),
      });
      const own = where === 'requireCredits' ? { requestId } : {};
      const seen = new Map<string, { held: bigint | undefined; reserved: bigint | undefined }>();
      const handler: RequestHandler = async (req, res) => {
        seen.set(req.get('x-request-id')!, {
          held: (res.locals.billing as RequestBilling).reservation?.amount,
          reserved: (await store.getBalance(req.get('x-customer')!))?.reserved,
        });
        res.json({
          id: 'x',
          object: 'chat.completion',
          model: 'gpt-4o',
          choices: [],
          usage: { prompt_tokens: 100, completion_tokens: 20 },
        });
      };
      const middleware = (name: Name): RequestHandler => {
        switch (name) {
          case 'tierRateLimit':
            return billing.tierRateLimit({ tiers });
          case 'softCapRouter':
            return billing.softCapRouter({ plans });
          case 'requireCredits':
            return billing.requireCredits(own);
          case 'meterUsage':
            return billing.meterUsage({ flushIntervalMs: 20 });
        }
      };
      const app = express().use(express.json());
      for (const [index, order] of ORDERS.entries())
        app.post(`/order/${index}`, ...order.map(middleware), handler);
      app.post(
        '/chain',
        billing.chain({
          tierRateLimit: { tiers },
          softCapRouter: { plans },
          requireCredits: own,
          meterUsage: { flushIntervalMs: 20 },
        }),
        handler,
      );
      const server = app.listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      try {
        const paths = [...ORDERS.map((_, index) => `/order/${index}`), '/chain'];
        const outcomes = [];
        for (const path of paths) {
          const customer = dodo.emulator.createCustomer({ email: `${randomUUID()}@example.com` }).customer_id;
          dodo.emulator.setBalance(customer, dodo.entitlementId, '100');
          const id = `order-${randomUUID()}`;
          const response = await fetch(`${base}${path}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-customer': customer, 'x-request-id': id },
            body: JSON.stringify(REQUEST),
          });
          expect(response.status, path).toBe(200);
          await billing.flush();
          const events = dodo.emulator.ingestedEvents({ customerId: customer });
          outcomes.push({
            path,
            ...seen.get(id),
            eventIds: events.map((event) => event.event_id.replace(id, '<id>')),
            cost: parseUsd('1', 'test') - ((await store.getBalance(customer))?.balance ?? 0n),
          });
        }
        const [first] = outcomes;
        expect(first!.held).toBeGreaterThan(0n);
        expect(first!.reserved).toBe(first!.held);
        expect(first!.eventIds).toEqual(['<id>:input', '<id>:output']);
        expect(first!.cost).toBe(parseUsd('0.00045', 'test')); // 100 × $2.50/1M + 20 × $10/1M
        for (const outcome of outcomes) expect({ ...outcome, path: first!.path }).toEqual(first);
      } finally {
        server.close();
        await billing.close();
        await dodo.emulator.close();
      }
    },
  );
});
