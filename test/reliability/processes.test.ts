import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { requireRedis } from '../support/redis.js';
import { appProcessSuite, COST, chat, customerWorth, expectEachOnce } from './support.js';

/*
 * Real processes: each app runs in its own Node process (app-process.ts) on one Redis; the Dodo
 * emulator and the load stay here. What one process holds in memory dies with it, so only what
 * the store keeps can make these pass.
 */

const redisUrl = await requireRedis('reliability: app processes');

describe.runIf(redisUrl)('billing apps in separate processes on one Redis', () => {
  const suite = appProcessSuite(redisUrl!);
  const { freshPrefix, app, storeOn } = suite;

  it('two processes, 200 concurrent requests, a balance worth 20: 20 admitted, each billed exactly once', {
    timeout: 45_000,
  }, async () => {
    const prefix = freshPrefix();
    // No background flush during the race: Dodo's balance must not move under a refresh.
    const [first, second] = await Promise.all([
      app(prefix, { flushIntervalMs: 60_000 }),
      app(prefix, { flushIntervalMs: 60_000 }),
    ]);
    const customer = customerWorth(suite.dodo, 20);
    // One request through each process first: the customer's balance view exists, so in the
    // race every admission is one script with the tier's counts — and atomic across processes.
    for (const process of [first!, second!]) expect((await chat(process.url, customer)).status).toBe(200);

    const statuses = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        chat((i % 2 ? first! : second!).url, customer).then((response) => response.status),
      ),
    );
    expect(statuses.filter((status) => status !== 200 && status !== 402)).toEqual([]);
    const admitted = 2 + statuses.filter((status) => status === 200).length;
    expect(admitted).toBe(20);

    await Promise.all([first!.flush(), second!.flush()]);
    expect(await storeOn(prefix).listDeadLetters()).toEqual([]);
    const events = suite.dodo.emulator.ingestedEvents({ customerId: customer });
    expectEachOnce(events, 2 * admitted);
    const view = await storeOn(prefix).getBalance(customer);
    expect(view).toMatchObject({ balance: 0n, reserved: 0n, pending: 20n * COST });
    expect(await storeOn(prefix).outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
  });

  it('SIGKILL mid-traffic: a new process delivers every event once, and the held money expires back', {
    timeout: 45_000,
  }, async () => {
    const prefix = freshPrefix();
    // Short lease and reservation TTL, so that what the dead process held lapses in real time.
    const short = { reservationTtlMs: 2_000, leaseMs: 2_000, flushIntervalMs: 50, maxBackoffMs: 200 };
    const doomed = await app(prefix, short);
    const store = storeOn(prefix);
    const customer = customerWorth(suite.dodo, 15);
    suite.dodo.emulator.fault('POST /events/ingest', { status: 503 });

    for (let i = 0; i < 10; i++) expect((await chat(doomed.url, customer)).status).toBe(200);
    // Five requests held in flight by a slow handler: five live reservations when it dies.
    const inFlight = Array.from({ length: 5 }, () =>
      chat(doomed.url, customer, { delayMs: 60_000 }).then(
        (response) => response.status,
        () => 'connection lost',
      ),
    );
    await expect.poll(async () => (await store.getBalance(customer))?.reserved).toBe(5n * COST);
    await expect
      .poll(async () => {
        const stats = await store.outboxStats();
        return stats.waiting + stats.leased;
      })
      .toBe(20);
    expect((await chat(doomed.url, customer)).status).toBe(402); // everything is spent or held

    await doomed.kill();
    expect(await Promise.all(inFlight)).toEqual(Array(5).fill('connection lost'));
    expect(suite.dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(0);
    suite.dodo.emulator.clearFaults();

    const successor = await app(prefix, short);
    await expect
      .poll(() => suite.dodo.emulator.ingestedEvents({ customerId: customer }).length, { timeout: 10_000 })
      .toBe(20);
    // The reservations of the requests that died with the process expire: spendable again.
    await expect.poll(async () => (await store.getBalance(customer))?.reserved, { timeout: 10_000 }).toBe(0n);
    for (let i = 0; i < 5; i++) expect((await chat(successor.url, customer)).status).toBe(200);
    expect((await chat(successor.url, customer)).status).toBe(402);

    await successor.flush();
    expect(await store.listDeadLetters()).toEqual([]);
    const events = suite.dodo.emulator.ingestedEvents({ customerId: customer });
    expectEachOnce(events, 30);
    expect(await store.getBalance(customer)).toMatchObject({
      balance: 0n,
      reserved: 0n,
      pending: 15n * COST,
    });
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
  });

  it('SIGKILL right after each of 6 responses: every request the client received is billed, each once', {
    timeout: 60_000,
  }, async () => {
    const prefix = freshPrefix();
    const customer = customerWorth(suite.dodo, 20);
    // Nothing leaves for Dodo before a process dies: only what the store kept can be billed.
    suite.dodo.emulator.fault('POST /events/ingest', { status: 503 });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const doomed = await app(prefix, { flushIntervalMs: 60_000 });
      const requestId = `served-${i}-${randomUUID()}`;
      const response = await chat(doomed.url, customer, { requestId });
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ object: 'chat.completion' });
      await doomed.kill(); // the instant the client has its whole answer
      ids.push(requestId);
    }
    suite.dodo.emulator.clearFaults();
    const successor = await app(prefix);
    await successor.flush();
    const events = suite.dodo.emulator.ingestedEvents({ customerId: customer });
    expectEachOnce(events, 12);
    expect(new Set(events.map((event) => event.metadata?.request_id))).toEqual(new Set(ids));
  });

  it('SIGKILL with 50 requests in flight: every response received complete is billed exactly once', {
    timeout: 60_000,
  }, async () => {
    const prefix = freshPrefix();
    const customer = customerWorth(suite.dodo, 60);
    const doomed = await app(prefix, { flushIntervalMs: 60_000 });
    expect((await chat(doomed.url, customer)).status).toBe(200); // the balance view exists
    suite.dodo.emulator.fault('POST /events/ingest', { status: 503 });
    const received = new Set<string>();
    const inFlight = Array.from({ length: 50 }, async (_, i) => {
      const requestId = `flight-${i}-${randomUUID()}`;
      try {
        const response = await chat(doomed.url, customer, { requestId, delayMs: 5 + i * 20 });
        if (response.status === 200) {
          await response.json();
          received.add(requestId);
        }
      } catch {
        // cut by the kill
      }
    });
    // Killed once ten answers are in: the others are in flight, some mid-settlement.
    await expect.poll(() => received.size, { timeout: 10_000, interval: 5 }).toBeGreaterThanOrEqual(10);
    await doomed.kill();
    await Promise.all(inFlight);
    expect(received.size).toBeLessThan(50);
    suite.dodo.emulator.clearFaults();
    const successor = await app(prefix);
    await successor.flush();
    const events = suite.dodo.emulator.ingestedEvents({ customerId: customer });
    const billed = new Set(events.map((event) => event.metadata?.request_id as string));
    for (const id of received) expect(billed.has(id), id).toBe(true);
    expectEachOnce(events, 2 * billed.size);
  });
});
