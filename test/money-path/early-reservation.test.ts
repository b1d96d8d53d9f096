import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import express, { type Request, type RequestHandler, type Response } from 'express';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RequestBilling } from '../../src/billing-context.js';
import { type Billing, createBilling } from '../../src/create-billing.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import { subscriptionPeriod } from '../../src/store/subscription-period.js';
import type { BillingStore } from '../../src/store/types.js';
import { PRICING, startDodo, usageFromHeader } from '../support/billing-app.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';

/*
 * On an Express route, the first middleware that reads the customer's profile (tierRateLimit,
 * softCapRouter) sends requireCredits' reservation with it. These tests hold the money to the
 * same rules as a reservation made by requireCredits itself: adopted when it matches, replaced
 * when the soft cap changes the model, released when nobody adopts it.
 */

const redisUrl = await requireRedis('reservations sent ahead, on RedisStore');
const redis = redisUrl ? new Redis(redisUrl) : undefined;
const prefixes: string[] = [];
afterAll(async () => {
  if (!redis) return;
  for (const prefix of prefixes) await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

const kinds: [string, () => Promise<BillingStore>][] = [['MemoryStore', async () => new MemoryStore()]];
if (redis) {
  kinds.push([
    'RedisStore',
    async () => {
      await whenReady(redis);
      const prefix = `elb-early:${randomUUID()}:`;
      prefixes.push(prefix);
      return new RedisStore({ client: redis, prefix });
    },
  ]);
}

const ASK = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
const TIERS = [{ name: 'all', minSpend: '0', rpm: 100 }];

describe.each(kinds)('requireCredits reservations sent ahead (%s)', (_name, openStore) => {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let store: BillingStore;
  let billing: Billing;
  let customer: string;
  let server: ReturnType<express.Express['listen']> | undefined;
  let url: string;
  /** The billing state the handler saw, per request. */
  let seen: {
    early: RequestBilling['earlyReservation'];
    reservation: RequestBilling['reservation'];
    reserved: bigint;
  }[];

  beforeAll(async () => {
    dodo = await startDodo();
  });
  afterAll(() => dodo.emulator.close());
  afterEach(async () => {
    server?.close();
    await billing.close();
  });

  async function start(mount: (app: express.Express, handler: RequestHandler) => void) {
    store = await openStore();
    customer = dodo.customer({ email: `c${Math.random()}@example.com` }).customer_id;
    dodo.emulator.setBalance(customer, dodo.entitlementId, '100');
    billing = createBilling({
      store,
      dodo: dodo.emulator.client({ maxRetries: 0 }),
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: PRICING,
      creditsPerDollar: 100,
      logger: { warn: () => {}, error: () => {} },
    });
    seen = [];
    const handler: RequestHandler = async (req: Request, res: Response, next) => {
      const current = res.locals.billing as RequestBilling;
      seen.push({
        early: current.earlyReservation,
        reservation: current.reservation,
        reserved: (await store.getBalance(customer))?.reserved ?? 0n,
      });
      usageFromHeader(req, res, next);
    };
    const app = express().use(express.json());
    mount(app, handler);
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server!.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
  }

  const post = (headers: Record<string, string> = {}) =>
    fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-customer': customer,
        'x-test-usage': '100,50',
        ...headers,
      },
      body: JSON.stringify(ASK),
    });

  /** The customer's reserved credits once every request's billing has ended. */
  async function reservedWhenSettled(): Promise<bigint> {
    const deadline = Date.now() + 2_000;
    for (;;) {
      const reserved = (await store.getBalance(customer))?.reserved ?? 0n;
      if (reserved === 0n || Date.now() > deadline) return reserved;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  it('adopts the reservation sent ahead once requireCredits has run on the route', async () => {
    await start((app, handler) =>
      app.post(
        '/v1/chat/completions',
        billing.tierRateLimit({ tiers: TIERS }),
        billing.requireCredits(),
        billing.meterUsage(),
        handler,
      ),
    );
    for (let i = 0; i < 3; i++) expect((await post()).status).toBe(200);
    expect(seen[0]!.early).toBeUndefined();
    for (const later of seen.slice(1)) {
      expect(later.early?.plan.amount).toBe(later.reservation?.amount);
      expect(later.reserved).toBe(later.reservation?.amount);
    }
    expect(await reservedWhenSettled()).toBe(0n);
  });

  it('releases it when the tier refuses the request', async () => {
    await start((app, handler) =>
      app.post(
        '/v1/chat/completions',
        billing.tierRateLimit({ tiers: [{ name: 'one', minSpend: '0', rpm: 1 }] }),
        billing.requireCredits(),
        billing.meterUsage(),
        handler,
      ),
    );
    expect((await post()).status).toBe(200);
    const before = await store.getBalance(customer);
    expect((await post()).status).toBe(429);
    expect(await reservedWhenSettled()).toBe(0n);
    expect((await store.getBalance(customer))?.balance).toBe(before?.balance);
  });

  it('replaces it when the soft cap routes the request to a smaller model', async () => {
    await start((app, handler) =>
      app.post(
        '/v1/chat/completions',
        billing.tierRateLimit({ tiers: TIERS }),
        billing.softCapRouter({
          plans: { prod_plus: { softCap: { tokens: 1 }, downgrade: { 'gpt-4o': 'gpt-4o-mini' } } },
          chargeSubscribers: true,
        }),
        billing.requireCredits(),
        billing.meterUsage(),
        handler,
      ),
    );
    expect((await post()).status).toBe(200);
    const plus = {
      subscriptionId: 'sub_early',
      productId: 'prod_plus',
      status: 'active',
      quantity: 1,
      periodStart: Date.now() - 1_000,
      periodEnd: Date.now() + 86_400_000,
      updatedAt: 1,
    };
    await store.putSubscription(customer, plus);
    await store.addUsage(customer, {
      period: subscriptionPeriod(plus),
      counters: { tokens: 5n },
      ttlMs: 86_400_000,
    });
    const routed = await post();
    expect(routed.status).toBe(200);
    expect(routed.headers.get('x-llm-billing-downgraded-from')).toBe('gpt-4o');
    const [, downgraded] = seen;
    expect(downgraded!.early?.plan.model).toBe('gpt-4o');
    // Reserved again at the smaller model's estimate, under the same id: only that is held.
    expect(downgraded!.reservation!.amount < downgraded!.early!.plan.amount).toBe(true);
    expect(downgraded!.reserved).toBe(downgraded!.reservation!.amount);
    expect(await reservedWhenSettled()).toBe(0n);
  });

  it('releases it when requireCredits does not run for this request', async () => {
    await start((app, handler) => {
      const credits = billing.requireCredits();
      app.post(
        '/v1/chat/completions',
        billing.tierRateLimit({ tiers: TIERS }),
        (req, res, next) => (req.get('x-free') ? next() : credits(req, res, next)),
        handler,
      );
    });
    expect((await post()).status).toBe(200);
    expect((await post({ 'x-free': '1' })).status).toBe(200);
    const [, free] = seen;
    expect(free!.reservation).toBeUndefined();
    // Held while the request runs (the route ran requireCredits before), then given back.
    expect(free!.reserved).toBe(free!.early!.plan.amount);
    expect(await reservedWhenSettled()).toBe(0n);
  });

  it('sends nothing ahead from a middleware mounted with app.use, outside the route', async () => {
    await start((app, handler) => {
      app.use(billing.tierRateLimit({ tiers: TIERS }));
      app.post('/v1/chat/completions', billing.requireCredits(), billing.meterUsage(), handler);
    });
    for (let i = 0; i < 2; i++) expect((await post()).status).toBe(200);
    expect(seen.map((each) => each.early)).toEqual([undefined, undefined]);
    expect(seen[1]!.reserved).toBe(seen[1]!.reservation!.amount);
    expect(await reservedWhenSettled()).toBe(0n);
  });
});
