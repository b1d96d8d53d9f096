import type { Money } from '../src/index.js';

/**
 * `npm run bench:memory`: a MemoryStore serving one million distinct customers (a balance
 * sync, a reservation and a settlement each, as a request does) stays bounded by
 * `maxCustomers`: prints the resident set size as customers pass.
 */
const { MemoryStore }: typeof import('../src/index.js') = await import(
  new URL('../dist/index.js', import.meta.url).href
);
const CUSTOMERS = Number(process.env.CUSTOMERS ?? 1_000_000);
const MAX_CUSTOMERS = Number(process.env.MAX_CUSTOMERS ?? 100_000);
const store = new MemoryStore({ maxCustomers: MAX_CUSTOMERS });
const cost: Money = 750_000_000n;
const rss = () => `${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`;
const flusher = setInterval(async () => {
  // What the outbox flusher does: deliver and acknowledge.
  const batch = await store.claimOutbox(1000, 60_000);
  await store.ackOutbox(
    batch,
    batch.events.map((claimed) => claimed.event.event_id),
  );
}, 0);

console.log(`maxCustomers ${MAX_CUSTOMERS}; start: ${rss()}`);
const started = performance.now();
for (let i = 0; i < CUSTOMERS; i++) {
  const customerId = `cus_${i}`;
  await store.syncBalance(customerId, 5_000_000_000_000n, Date.now());
  await store.reserve(customerId, `req_${i}`, cost, 600_000);
  await store.settle({
    customerId,
    reservationId: `req_${i}`,
    settlementId: `req_${i}`,
    cost,
    events: [
      {
        event_id: `req_${i}:input`,
        customer_id: customerId,
        event_name: 'llm.input_tokens',
        timestamp: new Date().toISOString(),
        metadata: { model: 'gpt-4o', tokens: 100 },
      },
    ],
    usage: [{ period: '2026-11', counters: { tokens: 150n, cost }, ttlMs: 60_000 }],
    retentionMs: 86_400_000,
  });
  // Let the flusher run, as it does between requests.
  if ((i + 1) % 1000 === 0) await new Promise((resolve) => setImmediate(resolve));
  if ((i + 1) % 100_000 === 0) {
    console.log(`${(i + 1).toLocaleString('en-US')} customers: ${rss()}`);
  }
}
clearInterval(flusher);
globalThis.gc?.();
console.log(
  `done in ${((performance.now() - started) / 1000).toFixed(1)} s; after GC: ${rss()}; outbox ${JSON.stringify(await store.outboxStats())}`,
);
