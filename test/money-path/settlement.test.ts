import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { formatCredits, parseCredits, parseUsd, unitsPerCredit } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { BillingStore } from '../../src/store/types.js';
import { type BillingAppOptions, chat, startBillingApp, startDodo } from '../support/billing-app.js';
import { appsOnEmulator } from '../support/emulator-apps.js';
import { deleteKeysWithPrefix, requireRedis, whenReady } from '../support/redis.js';

const CENTS = unitsPerCredit(100);
/**
 * At most 452 input tokens (the bound of its 400 characters, keys and structure) and 50 output:
 * $0.00163 = 0.163 credits held. The tests below bill it at that bound (`USAGE`), so that what
 * the balance covers and what is billed are the same amounts.
 */
const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 };
const COST = parseUsd('0.00163', 'test');
const USAGE: [number, number] = [452, 50];

describe('meterUsage settles what requireCredits admitted', () => {
  const emulated = appsOnEmulator((emulator) => emulator.clearFaults());
  const { customerWith } = emulated;
  const appOn = (store: BillingStore, options: Partial<BillingAppOptions> = {}) =>
    emulated.start({ store, ...options });

  it('bills a JSON answer exactly: balance view, usage counters and two deterministic events', async () => {
    const store = new MemoryStore();
    const app = await appOn(store);
    const customer = await customerWith('100');
    const response = await chat(app, customer, REQUEST, [1234, 56]);
    expect(response.status).toBe(200);
    const cost = parseUsd('0.003645', 'test'); // 1234 × $2.50/1M + 56 × $10/1M
    await expect
      .poll(async () => (await store.getBalance(customer))?.balance)
      .toBe(parseUsd('1', 'test') - cost);
    expect(await store.getBalance(customer)).toMatchObject({ reserved: 0n, pending: cost });
    const month = new Date().toISOString().slice(0, 7);
    expect(await store.getUsage(customer, month)).toMatchObject({
      input_tokens: 1234n,
      output_tokens: 56n,
      tokens: 1290n,
      cost,
      'tokens:gpt-4o': 1290n,
      'cost:gpt-4o': cost,
    });

    await app.billing.flush();
    const events = emulated.dodo.emulator.ingestedEvents({ customerId: customer });
    expect(events.map((event) => [event.event_name, event.metadata])).toEqual([
      ['llm.input_tokens', expect.objectContaining({ model: 'gpt-4o', tokens: 1234 })],
      ['llm.output_tokens', expect.objectContaining({ model: 'gpt-4o', tokens: 56 })],
    ]);
    const requestId = events[0]!.metadata?.request_id as string;
    expect(events.map((event) => event.event_id)).toEqual([`${requestId}:input`, `${requestId}:output`]);
  });

  it('bills an error answer nothing and releases its reservation', async () => {
    const store = new MemoryStore();
    const app = await appOn(store, {
      handler: (_req, res) => {
        res
          .status(500)
          .json({ error: { message: 'upstream failed', type: 'server_error', param: null, code: null } });
      },
    });
    const customer = await customerWith('1');
    expect((await chat(app, customer, REQUEST)).status).toBe(500);
    await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(0n);
    expect((await store.getBalance(customer))?.balance).toBe(parseUsd('0.01', 'test'));
    expect((await store.outboxStats()).waiting).toBe(0);
  });

  it('bills usage the app records itself, summed over several calls, with cached and reasoning tokens', async () => {
    const store = new MemoryStore();
    const app = await appOn(store, {
      handler: (_req, res) => {
        res.locals.billing.record({
          model: 'gpt-4o',
          inputTokens: 100,
          outputTokens: 10,
          cachedInputTokens: 40,
        });
        res.locals.billing.record({
          model: 'gpt-4o-mini',
          inputTokens: 1000,
          outputTokens: 200,
          reasoningTokens: 150,
        });
        res.send('my own answer, not OpenAI-shaped');
      },
    });
    const customer = await customerWith('100');
    expect((await chat(app, customer, REQUEST)).status).toBe(200);
    // 100 × 2.5 + 10 × 10 + 1000 × 0.15 + 200 × 0.60 (USD per 1M) = 620 µ$
    const cost = parseUsd('0.00062', 'test');
    await expect.poll(async () => (await store.getBalance(customer))?.pending).toBe(cost);
    await app.billing.flush();
    const events = emulated.dodo.emulator.ingestedEvents({ customerId: customer });
    expect(events.map((event) => event.metadata)).toEqual([
      expect.objectContaining({ model: 'gpt-4o', tokens: 100, cached_tokens: 40 }),
      expect.objectContaining({ model: 'gpt-4o', tokens: 10 }),
      expect.objectContaining({ model: 'gpt-4o-mini', tokens: 1000 }),
      expect.objectContaining({ model: 'gpt-4o-mini', tokens: 200, reasoning_tokens: 150 }),
    ]);
    expect(new Set(events.map((event) => event.event_id)).size).toBe(4);
  });

  it('admits at most what 100 concurrent requests can pay for, and bills exactly those (MemoryStore)', async () => {
    const store = new MemoryStore();
    const app = await appOn(store);
    const customer = await customerWith(formatCredits(10n * COST, CENTS)); // worth 10 requests
    const statuses = await Promise.all(
      Array.from({ length: 100 }, () =>
        chat(app, customer, REQUEST, USAGE).then((response) => response.status),
      ),
    );
    const admitted = statuses.filter((status) => status === 200).length;
    expect(admitted).toBe(10);
    expect(statuses.filter((status) => status === 402)).toHaveLength(90);
    await expect.poll(async () => (await store.getBalance(customer))?.balance).toBe(0n);
    await app.billing.flush();
    const events = emulated.dodo.emulator.ingestedEvents({ customerId: customer });
    expect(events).toHaveLength(2 * admitted);
    expect(new Set(events.map((event) => event.event_id)).size).toBe(2 * admitted);
  });

  it('converges to exactly Dodo’s balance once traffic stops and Dodo has deducted everything', async () => {
    const store = new MemoryStore();
    const app = await appOn(store, {
      before: (express, billing) =>
        express.use(
          '/webhooks/dodo',
          billing.dodoWebhooks({ webhookKey: emulated.dodo.emulator.webhookKey }),
        ),
    });
    emulated.dodo.emulator.setWebhookUrl(`${app.url}/webhooks/dodo`);
    try {
      const customer = await customerWith('3');
      await Promise.all(
        Array.from({ length: 25 }, (_, i) =>
          chat(app, customer, REQUEST, [97 + i, 13 + i]).then((r) => r.status),
        ),
      );
      await app.billing.flush();
      await emulated.dodo.emulator.settle();
      await expect.poll(async () => (await store.getBalance(customer))?.pending, { timeout: 5000 }).toBe(0n);
      const dodoBalance = parseCredits(
        emulated.dodo.emulator.balance(customer, emulated.dodo.entitlementId)!,
        CENTS,
      );
      expect((await store.getBalance(customer))?.balance).toBe(dodoBalance);
      expect(dodoBalance).toBeLessThan(parseCredits('3', CENTS));
    } finally {
      emulated.dodo.emulator.setWebhookUrl(undefined);
    }
  });

  it('delivers every event exactly once after ingest was down, without slowing responses meanwhile', async () => {
    const store = new MemoryStore();
    const app = await appOn(store);
    const customer = await customerWith('100');
    emulated.dodo.emulator.fault('POST /events/ingest', { status: 503 });
    const latencies: number[] = [];
    for (let i = 0; i < 20; i++) {
      const started = performance.now();
      expect((await chat(app, customer, REQUEST, USAGE)).status).toBe(200);
      latencies.push(performance.now() - started);
    }
    await new Promise((resolve) => setTimeout(resolve, 300)); // several failed flushes
    await expect(app.billing.flush(200)).rejects.toThrow(/not delivered/);
    expect(emulated.dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(0);
    expect(Math.max(...latencies)).toBeLessThan(200);

    emulated.dodo.emulator.clearFaults();
    await expect
      .poll(() => emulated.dodo.emulator.ingestedEvents({ customerId: customer }).length, { timeout: 5000 })
      .toBe(40);
    await app.billing.flush();
    const ids = emulated.dodo.emulator
      .ingestedEvents({ customerId: customer })
      .map((event) => event.event_id);
    expect(new Set(ids).size).toBe(40);
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
  });

  it('re-stamps events an outage kept past Dodo’s one-hour window, keeping the original time', async () => {
    let now = Date.now();
    const clock = () => now;
    const late = await startDodo({ now: clock });
    try {
      const store = new MemoryStore({ now: clock });
      const app = await startBillingApp({
        store,
        emulator: late.emulator,
        entitlementId: late.entitlementId,
      });
      emulated.track(app);
      const customer = late.customer({ email: 'late@example.com' }).customer_id;
      late.emulator.setBalance(customer, late.entitlementId, '100');
      late.emulator.fault('POST /events/ingest', { status: 503 });
      expect((await chat(app, customer, REQUEST, USAGE)).status).toBe(200);
      await expect(app.billing.flush(100)).rejects.toThrow(/not delivered/);
      const settledAt = new Date(now).toISOString();

      now += 2 * 60 * 60_000; // a two-hour outage: Dodo refuses events older than one hour
      late.emulator.clearFaults();
      await app.billing.flush(5000);
      const events = late.emulator.ingestedEvents({ customerId: customer });
      expect(events.map((event) => [event.metadata?.tokens, event.metadata?.original_timestamp])).toEqual([
        [USAGE[0], expect.any(String)],
        [50, expect.any(String)],
      ]);
      const original = Date.parse(String(events[0]!.metadata?.original_timestamp));
      expect(Math.abs(original - Date.parse(settledAt))).toBeLessThan(1000);
      expect(Date.parse(events[0]!.timestamp)).toBeGreaterThan(original + 60 * 60_000);
    } finally {
      await late.emulator.close();
    }
  });

  it('refuses, at the source, a model name Dodo could not take in event metadata: nothing is billed under it', async () => {
    const store = new MemoryStore();
    const app = await appOn(store, {
      handler: (req, res) => {
        // A model name longer than Dodo accepts in metadata (500 characters) never reaches the outbox.
        res.locals.billing.record({ model: req.get('x-model') ?? 'gpt-4o', inputTokens: 5, outputTokens: 5 });
        res.send('ok');
      },
    });
    const customer = await customerWith('100');
    expect((await chat(app, customer, REQUEST)).status).toBe(200);
    const refused = await fetch(`${app.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-customer': customer, 'x-model': 'm'.repeat(600) },
      body: JSON.stringify(REQUEST),
    });
    expect(refused.status).toBe(500);
    await app.billing.flush();
    expect(emulated.dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(2);
    expect(await store.listDeadLetters()).toEqual([]);
    await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(0n);
  });

  describe('on Redis, across two app instances', async () => {
    const redisUrl = await requireRedis('money path on Redis');
    const prefix = `elb-money:${randomUUID()}:`;
    const clients: Redis[] = [];
    const storeOnRedis = async (now?: () => number) => {
      const client = new Redis(redisUrl!, { maxRetriesPerRequest: 1 });
      clients.push(client);
      await whenReady(client);
      return new RedisStore({ client, prefix, ...(now ? { now } : {}) });
    };
    afterAll(async () => {
      if (clients[0]) await deleteKeysWithPrefix(clients[0], prefix);
      await Promise.all(clients.map((client) => client.quit()));
    });

    it.runIf(redisUrl)(
      'admits at most what the balance covers when 100 requests hit two instances at once',
      async () => {
        const [first, second] = [await appOn(await storeOnRedis()), await appOn(await storeOnRedis())];
        const customer = await customerWith(formatCredits(10n * COST, CENTS));
        const statuses = await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            chat(i % 2 ? first! : second!, customer, REQUEST, USAGE).then((response) => response.status),
          ),
        );
        expect(statuses.filter((status) => status === 200)).toHaveLength(10);
        await first!.billing.flush();
        await second!.billing.flush();
        const events = emulated.dodo.emulator.ingestedEvents({ customerId: customer });
        expect(events).toHaveLength(20);
        expect(new Set(events.map((event) => event.event_id)).size).toBe(20);
      },
    );

    it.runIf(redisUrl)(
      'a restarted instance delivers the outbox a dead one left, and its reservations expire',
      async () => {
        let now = Date.now();
        const deadStore = await storeOnRedis(() => now);
        const crashed = await appOn(deadStore, { requireCredits: { reservationTtlMs: 60_000 } });
        const customer = await customerWith(formatCredits(2n * COST, CENTS));
        emulated.dodo.emulator.fault('POST /events/ingest', { status: 503 }); // nothing leaves before the crash
        expect((await chat(crashed, customer, REQUEST, USAGE)).status).toBe(200);
        await expect
          .poll(async () => (await deadStore.outboxStats()).waiting + (await deadStore.outboxStats()).leased)
          .toBe(2);
        // What a request in flight leaves behind when its process dies: a live reservation.
        expect(await deadStore.reserve(customer, 'in-flight-when-killed', COST, 60_000)).toMatchObject({
          ok: true,
        });
        await crashed.crash();
        emulated.forget(crashed);
        emulated.dodo.emulator.clearFaults();

        const restarted = await appOn(await storeOnRedis(() => now));
        expect((await chat(restarted, customer, REQUEST, USAGE)).status).toBe(402);
        now += 61_000; // past the dead worker's lease, its backoff and the reservation's TTL
        await restarted.billing.flush(10_000);
        const events = emulated.dodo.emulator.ingestedEvents({ customerId: customer });
        expect(events).toHaveLength(2);
        expect((await chat(restarted, customer, REQUEST, USAGE)).status).toBe(200);
      },
    );
  });
});
