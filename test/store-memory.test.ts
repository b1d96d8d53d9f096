import * as vitest from 'vitest';
import { describe, expect, it } from 'vitest';
import { ConfigError, StoreError } from '../src/errors.js';
import { MemoryStore } from '../src/store/memory.js';
import type { BillingStore, OutboxEvent } from '../src/store/types.js';
import { describeStoreConformance } from '../src/testing/index.js';

describeStoreConformance('memory', { createStore: (now) => new MemoryStore({ now }) }, vitest);

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const CREDIT = 10_000_000_000n;

function usageEvents(customerId: string, requestId: string): OutboxEvent[] {
  return (['input', 'output'] as const).map((kind) => ({
    event_id: `${requestId}:${kind}`,
    customer_id: customerId,
    event_name: `llm.${kind}_tokens`,
    timestamp: '2026-11-26T00:00:00.000Z',
    metadata: { model: 'gpt-4o', request_id: requestId, tokens: 1000 },
  }));
}

/**
 * What requireCredits does for one request: reserve; on `no_balance`, fetch Dodo's balance and
 * sync it, then reserve again. True when admitted.
 */
async function admit(store: BillingStore, customerId: string, requestId: string, dodoBalance: bigint) {
  let result = await store.reserve(customerId, requestId, CREDIT, 10 * MINUTE);
  if (!result.ok && result.reason === 'no_balance') {
    await store.syncBalance(customerId, dodoBalance, store.now());
    result = await store.reserve(customerId, requestId, CREDIT, 10 * MINUTE);
  }
  return result.ok;
}

describe('MemoryStore: bounded in customers, never forgetting money', () => {
  it('forgets the least recently used customer beyond maxCustomers', async () => {
    const store = new MemoryStore({ maxCustomers: 2 });
    await store.syncBalance('a', 1n, 1);
    await store.syncBalance('b', 2n, 1);
    await store.getBalance('a');
    await store.syncBalance('c', 3n, 1);
    expect(await store.getBalance('b')).toBeUndefined();
    expect((await store.getBalance('a'))?.balance).toBe(1n);
  });

  it('never forgets a customer with live reservations: 10 admitted on 10 credits, not 18', async () => {
    const store = new MemoryStore({ maxCustomers: 2 });
    // Dodo says 10 credits until it has deducted the usage, which it has not yet.
    const dodoBalance = 10n * CREDIT;
    let admitted = 0;
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 5; i++)
        if (await admit(store, 'big', `big-${round}-${i}`, dodoBalance)) admitted += 1;
      // Other customers come and go between the big customer's requests.
      for (let other = 0; other < 5; other++) await admit(store, `other-${round}-${other}`, 'r', CREDIT);
    }
    expect(admitted).toBe(10);
    expect((await store.getBalance('big'))?.reserved).toBe(10n * CREDIT);
  });

  it('never forgets a customer with usage Dodo has not confirmed deducting', async () => {
    const store = new MemoryStore({ maxCustomers: 2 });
    await store.syncBalance('big', 10n * CREDIT, 1);
    await store.reserve('big', 'r1', 4n * CREDIT, 10 * MINUTE);
    await store.settle({
      customerId: 'big',
      reservationId: 'r1',
      settlementId: 'r1',
      cost: 4n * CREDIT,
      events: usageEvents('big', 'r1'),
      retentionMs: DAY,
    });
    for (let other = 0; other < 10; other++) await store.syncBalance(`other-${other}`, CREDIT, 1);
    // Dodo's balance still says 10: a refetch would hand the 4 spent credits out again.
    expect(await store.getBalance('big')).toMatchObject({ balance: 6n * CREDIT, pending: 4n * CREDIT });
    expect(store.usage()).toMatchObject({ pinnedCustomers: 1 });

    // Once Dodo confirms the deduction the customer holds nothing: it may be forgotten again.
    await store.confirmDeducted('big', 'cle_1', 4n * CREDIT, DAY);
    for (let other = 10; other < 13; other++) await store.syncBalance(`other-${other}`, CREDIT, 1);
    expect(await store.getBalance('big')).toBeUndefined();
  });

  it('forgets a customer once its reservations have lapsed', async () => {
    let now = 1_790_000_000_000;
    const store = new MemoryStore({ maxCustomers: 2, now: () => now });
    await store.syncBalance('crashed', CREDIT, now);
    await store.reserve('crashed', 'r1', CREDIT, MINUTE);
    now += 2 * MINUTE;
    for (let other = 0; other < 10; other++) await store.syncBalance(`other-${other}`, CREDIT, now);
    expect(await store.getBalance('crashed')).toBeUndefined();
    expect(store.usage()).toMatchObject({ customers: 2, pinnedCustomers: 0 });
  });

  it('exceeds maxCustomers when every customer holds money, rather than forget any', async () => {
    const store = new MemoryStore({ maxCustomers: 2 });
    for (let i = 0; i < 5; i++) {
      await store.syncBalance(`cus_${i}`, CREDIT, 1);
      await store.reserve(`cus_${i}`, 'r1', CREDIT, 10 * MINUTE);
    }
    expect(store.usage()).toMatchObject({ customers: 5, pinnedCustomers: 5 });
    for (let i = 0; i < 5; i++) expect((await store.getBalance(`cus_${i}`))?.reserved).toBe(CREDIT);
    // A new customer is still served (and is the one forgotten next, not a pinned one).
    await store.syncBalance('new', CREDIT, 1);
    expect(await store.reserve('new', 'r1', CREDIT, 10 * MINUTE)).toMatchObject({ ok: true });
    expect(store.usage()).toMatchObject({ customers: 6, pinnedCustomers: 6 });
  });

  it('names the option that is wrong', () => {
    expect(() => new MemoryStore({ maxCustomers: 0 })).toThrow(/`maxCustomers` must be a positive integer/);
    expect(() => new MemoryStore({ maxBytes: -1 })).toThrow(ConfigError);
    expect(() => new MemoryStore({ maxBytes: 1.5 })).toThrow(/`maxBytes` must be a positive integer/);
    // The default caches take 6.4 MB up front: a bound below twice that is named at startup.
    expect(() => new MemoryStore({ maxBytes: 8 * 2 ** 20 })).toThrow(
      /`maxBytes` \(8388608\) leaves too little room: the caches of `maxCustomers` and `maxWebhookIds` take 6402048 bytes up front/,
    );
    expect(() => new MemoryStore({ maxBytes: 8 * 2 ** 20, maxCustomers: 1_000 })).not.toThrow();
  });
});

describe('MemoryStore: bounded in memory', () => {
  /** One request: reserve, then settle two usage events (what a metered request does). */
  async function request(store: MemoryStore, customerId: string, requestId: string) {
    const reserved = await store.reserve(customerId, requestId, CREDIT, 10 * MINUTE);
    expect(reserved.ok).toBe(true);
    await store.settle({
      customerId,
      reservationId: requestId,
      settlementId: requestId,
      cost: CREDIT,
      events: usageEvents(customerId, requestId),
      usage: [{ period: '2026-11', counters: { tokens: 2000n }, ttlMs: DAY }],
      retentionMs: DAY,
    });
  }

  it('refuses new paid requests at maxBytes with a 503 StoreError naming the bound and the fix; settle still accepts', async () => {
    const maxBytes = 256 * 1024;
    const store = new MemoryStore({ maxBytes, maxCustomers: 100, maxWebhookIds: 100 });
    await store.syncBalance('cus_1', 1_000_000n * CREDIT, 1);
    let admitted = 0;
    let refusal: unknown;
    while (admitted < 10_000) {
      try {
        await request(store, 'cus_1', `req_${admitted}`);
        admitted += 1;
      } catch (error) {
        refusal = error;
        break;
      }
      expect(store.usage().bytes).toBeLessThanOrEqual(maxBytes);
    }
    expect(admitted).toBeGreaterThan(50);
    expect(refusal).toBeInstanceOf(StoreError);
    expect(refusal).toMatchObject({ status: 503, code: 'ERR_ELB_STORE_UNAVAILABLE' });
    expect((refusal as Error).message).toMatch(/memory bound \(maxBytes 0\.3 MiB/);
    expect((refusal as Error).message).toMatch(/usage events waiting for Dodo/);
    expect((refusal as Error).message).toMatch(/raise `maxBytes`.*or use RedisStore/);
    expect(store.usage().bytes).toBeLessThanOrEqual(maxBytes);

    // Usage that was served is never dropped, even past the bound.
    const settled = await store.settle({
      customerId: 'cus_1',
      settlementId: 'unreserved',
      cost: CREDIT,
      events: usageEvents('cus_1', 'unreserved'),
      retentionMs: DAY,
    });
    expect(settled.applied).toBe(true);
    expect((await store.outboxStats()).waiting).toBe(2 * admitted + 2);

    // Once Dodo has taken the outbox, paid requests are admitted again.
    const batch = await store.claimOutbox(100_000, MINUTE);
    await store.ackOutbox(
      batch,
      batch.events.map((claimed) => claimed.event.event_id),
    );
    await request(store, 'cus_1', 'after');
  });

  it('refuses a new admission at the bound, not a re-admission of a request already in', async () => {
    const store = new MemoryStore({ maxBytes: 64 * 1024, maxCustomers: 100, maxWebhookIds: 100 });
    await store.syncBalance('cus_1', 1_000_000n * CREDIT, 1);
    const admission = (requestId: string, replace = false) => ({
      customerId: 'cus_1',
      requestId,
      replace,
      readProfile: false,
      credits: { min: CREDIT, max: CREDIT, overdraft: 0n },
      ttlMs: 10 * MINUTE,
    });
    let admitted = 0;
    let refusal: unknown;
    for (; admitted < 1_000; admitted++) {
      const settlement = {
        customerId: 'cus_1',
        reservationId: `req_${admitted}`,
        settlementId: `req_${admitted}`,
        cost: CREDIT,
        events: usageEvents('cus_1', `req_${admitted}`),
        retentionMs: DAY,
      };
      try {
        await store.admit(admission(`req_${admitted}`));
      } catch (error) {
        refusal = error;
        break;
      }
      await store.settle(settlement);
    }
    expect(refusal).toBeInstanceOf(StoreError);
    expect((refusal as Error).message).toMatch(/memory bound/);
    expect(store.usage().bytes).toBeLessThanOrEqual(64 * 1024);
    // A request admitted before the bound may still be re-admitted (a soft-cap rewrite).
    const before = store.usage().bytes;
    await store.settle({
      customerId: 'cus_1',
      settlementId: 'unreserved',
      cost: 0n,
      events: [],
      retentionMs: DAY,
    });
    expect(store.usage().bytes).toBeGreaterThan(before);
    await expect(store.admit(admission('new'))).rejects.toBeInstanceOf(StoreError);
    await expect(store.admit(admission(`req_${admitted - 1}`, true))).resolves.toMatchObject({
      credits: { ok: true },
    });
  });

  it('never forgets a subscriber holding only a share of its hard cap', async () => {
    const store = new MemoryStore({ maxCustomers: 2 });
    await store.putSubscription('sub', {
      subscriptionId: 'sub_1',
      productId: 'prod_team',
      status: 'active',
      quantity: 1,
      periodStart: 1_790_000_000_000,
      periodEnd: 1_792_592_000_000,
      updatedAt: 1,
    });
    const result = await store.admit({
      customerId: 'sub',
      requestId: 'r1',
      readProfile: false,
      plans: {
        activeStatuses: ['active'],
        byProduct: new Map([
          [
            'prod_team',
            { chargeCredits: false, hardCap: { unit: 'tokens', amount: 10_000n, perSeat: false } },
          ],
        ]),
        estimate: { tokens: 4_000n, cost: 0n },
      },
      ttlMs: 10 * MINUTE,
    });
    expect(result.subscription?.subscriptionId).toBe('sub_1');
    for (let other = 0; other < 5; other++) await store.syncBalance(`other-${other}`, CREDIT, 1);
    expect(await store.getSubscriptions('sub')).toHaveLength(1);
    expect(store.usage()).toMatchObject({ pinnedCustomers: 1 });
  });

  it('counts what it keeps, and gives the bytes back as it lets go', async () => {
    const store = new MemoryStore();
    const empty = store.usage().bytes;
    await store.syncBalance('cus_1', 1_000n * CREDIT, 1);
    const customer = store.usage().bytes;
    expect(customer).toBeGreaterThan(empty);
    await store.reserve('cus_1', 'r1', CREDIT, 10 * MINUTE);
    expect(store.usage().bytes).toBeGreaterThan(customer);
    await store.release('cus_1', 'r1');
    expect(store.usage().bytes).toBe(customer);

    await request(store, 'cus_1', 'r2');
    const outbox = (await store.outboxStats()).bytes;
    expect(outbox).toBeGreaterThan(0);
    const batch = await store.claimOutbox(10, MINUTE);
    await store.ackOutbox(
      batch,
      batch.events.map((claimed) => claimed.event.event_id),
    );
    expect((await store.outboxStats()).bytes).toBe(0);
    // What stays: the settlement's id (exactly once for a day) and the period's counter.
    expect(store.usage().bytes).toBeGreaterThan(customer);
    expect(store.usage().bytes).toBeLessThan(customer + outbox);

    const beforeWebhook = store.usage().bytes;
    await store.claimWebhook('wh_1', MINUTE);
    expect(store.usage().bytes).toBeGreaterThan(beforeWebhook);
    await store.releaseWebhook('wh_1');
    expect(store.usage().bytes).toBe(beforeWebhook);
  });

  it('keeps its newest 10,000 dead letters', async () => {
    const store = new MemoryStore();
    for (let i = 0; i < 10_001; i++) {
      await store.settle({
        customerId: 'cus_1',
        settlementId: `s_${i}`,
        cost: 0n,
        events: [usageEvents('cus_1', `s_${i}`)[0]!],
        retentionMs: DAY,
      });
    }
    const batch = await store.claimOutbox(20_000, MINUTE);
    await store.deadLetterOutbox(
      batch,
      batch.events.map((claimed) => ({ eventId: claimed.event.event_id, reason: 'refused' })),
    );
    expect((await store.outboxStats()).dead).toBe(10_000);
    expect((await store.listDeadLetters(1))[0]?.event.event_id).toBe('s_1:input');
  });

  it('delivers the events as they were settled, whatever the caller does with its objects after', async () => {
    const store = new MemoryStore();
    const events = usageEvents('cus_1', 'r1');
    await store.settle({ customerId: 'cus_1', settlementId: 'r1', cost: 0n, events, retentionMs: DAY });
    events[0]!.metadata.tokens = 1;
    const batch = await store.claimOutbox(10, MINUTE);
    expect(batch.events[0]?.event).toEqual(usageEvents('cus_1', 'r1')[0]);
  });
});
