import { randomUUID } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import express from 'express';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import type { RequestBilling } from '../../src/billing-context.js';
import { createBilling } from '../../src/create-billing.js';
import { parseUsd } from '../../src/money.js';
import { RedisStore } from '../../src/store/redis.js';
import { subscriptionPeriod } from '../../src/store/subscription-period.js';
import { PRICING, startDodo } from '../support/billing-app.js';
import { closeNodeRedisClients, connectedNodeRedisClient } from '../support/node-redis.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';

const redisUrl = await requireRedis('Redis round trips per request');

/**
 * Counts the commands a client sends and the round trips they take: commands sent in the same
 * turn of the event loop (a pipeline, or calls made in parallel) travel together, one round trip.
 */
function batchCounter() {
  let batches: string[][] = [];
  let batchOpen = false;
  return {
    sent(name: string) {
      if (!batchOpen) {
        batchOpen = true;
        batches.push([]);
        setImmediate(() => {
          batchOpen = false;
        });
      }
      batches.at(-1)!.push(name.toLowerCase());
    },
    reset() {
      batches = [];
    },
    /** The commands sent, one array per round trip (sorted: the order within one is the library's). */
    get roundTrips() {
      return batches.map((batch) => [...batch].sort());
    },
  };
}

/** An ioredis client whose commands are counted, and the writes its socket makes. */
async function countingIoredis(url: string) {
  const counter = batchCounter();
  const client = new Redis(url);
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string }, stream?: unknown) => {
    counter.sent(command.name);
    return send(command as never, stream as never);
  }) as typeof client.sendCommand;
  await whenReady(client);
  const writes = socketWriteCounter(client.stream as Socket);
  return { client, counter, writes, close: () => client.disconnect() };
}

/**
 * Counts the writes a socket hands to the system (`_write` for one chunk, `_writev` for what
 * piled up while it was corked): each is a system call, which costs more than a script's work.
 */
function socketWriteCounter(socket: Socket) {
  let writes = 0;
  const internals = socket as unknown as Record<'_write' | '_writev', (...args: unknown[]) => void>;
  for (const method of ['_write', '_writev'] as const) {
    const original = internals[method]!;
    internals[method] = function (this: Socket, ...args: unknown[]) {
      writes += 1;
      return original.apply(this, args);
    };
  }
  return {
    reset() {
      writes = 0;
    },
    get count() {
      return writes;
    },
  };
}

/** A node-redis client whose commands are counted. */
async function countingNodeRedis(url: string) {
  const counter = batchCounter();
  const client = await connectedNodeRedisClient(url);
  // `createClient` returns a view of the client: its command methods (the rate limiter's EVAL,
  // MULTI) send through the client itself, `_self`, where the count is taken.
  const self = (client as unknown as { _self: typeof client })._self;
  const send = self.sendCommand.bind(self);
  self.sendCommand = ((args: string[], ...rest: unknown[]) => {
    counter.sent(String(args[0]));
    return (send as (...all: unknown[]) => Promise<unknown>)(args, ...rest);
  }) as typeof client.sendCommand;
  return { client, counter, close: () => closeNodeRedisClients() };
}

/*
 * On node-redis, `rate-limiter-flexible` sends its script with EVAL (its node-redis mode), in
 * the same round trip: the count of round trips is what matters, and it is the same.
 */
const LIBRARIES = [
  { library: 'ioredis', connect: countingIoredis, limiterScript: 'evalsha' },
  { library: 'node-redis', connect: countingNodeRedis, limiterScript: 'eval' },
] as const;

(redisUrl ? describe : describe.skip)('Redis round trips of an admitted request (billing.chain)', () => {
  const prefix = `elb-rt:${randomUUID()}:`;
  const admin = new Redis(redisUrl!);
  afterAll(async () => {
    await deleteKeysWithPrefix(admin, prefix);
    admin.disconnect();
  });

  it.each(
    LIBRARIES.flatMap((library) => (['route', 'app.use'] as const).map((mount) => ({ ...library, mount }))),
  )(
    'takes two round trips per admitted request, the first one included, mounted on $mount, on $library: admission, then settlement',
    async ({ mount, connect, limiterScript, library }) => {
      const dodo = await startDodo();
      const customer = dodo.emulator.createCustomer({ email: 'round-trips@example.com' }).customer_id;
      const subscriber = dodo.emulator.createCustomer({ email: 'subscriber@example.com' }).customer_id;
      const connected = await connect(redisUrl!);
      const { client, counter: counting, close } = connected;
      const writes = 'writes' in connected ? connected.writes : undefined;
      const store = new RedisStore({ client, prefix: `${prefix}${library}:${mount}:` });
      // The balance view exists (as after any earlier request): no Dodo call on the hot path.
      await store.syncBalance(customer, parseUsd('1', 'test'), Date.now());
      await store.putSubscription(subscriber, {
        subscriptionId: 'sub_rt',
        productId: 'prod_plus',
        status: 'active',
        quantity: 1,
        periodStart: Date.now() - 1000,
        periodEnd: Date.now() + 30 * 86_400_000,
        updatedAt: 1,
      });
      const billing = createBilling({
        store,
        dodo: dodo.emulator.client({ maxRetries: 0 }),
        creditEntitlementId: dodo.entitlementId,
        customerId: (req) => req.get('x-customer'),
        pricing: PRICING,
      });
      let settled: () => void = () => {};
      const chain = billing.chain({
        tierRateLimit: { tiers: [{ name: 'all', minSpend: '0', rpm: 1000, tpm: 1_000_000 }] },
        softCapRouter: { plans: { prod_plus: { softCap: { tokens: 1_000_000 }, downgrade: {} } } },
        meterUsage: { flushIntervalMs: 1_000_000_000 },
      });
      const handler: express.RequestHandler = (_req, res) => {
        (res.locals.billing as RequestBilling).onEnd(() => setTimeout(() => settled(), 50));
        res.json({ choices: [], usage: { prompt_tokens: 10, completion_tokens: 5 } });
      };
      const app = express().use(express.json());
      if (mount === 'app.use') app.use(chain).post('/v1/chat/completions', handler);
      else app.post('/v1/chat/completions', chain, handler);
      const server = app.listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
      const request = async (customerId: string) => {
        const done = new Promise<void>((resolve) => {
          settled = resolve;
        });
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-customer': customerId },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] }),
        });
        expect(response.status).toBe(200);
        await done;
      };
      try {
        for (const customerId of [customer, subscriber, customer]) {
          counting.reset();
          writes?.reset();
          await request(customerId);
          // (1) the admission script (duplicate check, profile, subscription and cap, credit
          // hold) with the RPM and TPM counts; (2) the settlement with the TPM correction.
          expect(counting.roundTrips).toEqual([
            ['evalsha', limiterScript, limiterScript].sort(),
            ['evalsha', limiterScript].sort(),
          ]);
          // On ioredis, each round trip's commands leave in one socket write (node-redis
          // writes a tick's commands together itself).
          if (writes) expect(writes.count).toBe(2);
        }
        expect(dodo.emulator.requests().filter((call) => call.path.includes('/balances/'))).toHaveLength(0);
        expect((await store.getBalance(customer))?.reserved).toBe(0n);
        const period = subscriptionPeriod((await store.getSubscriptions(subscriber))[0]!);
        expect(await store.getUsage(subscriber, period)).toMatchObject({ tokens: 15n });
      } finally {
        server.close();
        await billing.close();
        await dodo.emulator.close();
        close();
      }
    },
  );
});
