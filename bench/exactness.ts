import { Redis } from 'ioredis';
import { MemoryStore } from '../src/store/memory.js';
import { RedisStore } from '../src/store/redis.js';
import type { BillingStore } from '../src/store/types.js';
import { startRedisCluster, startRedisServer, whenReady } from '../test/support/redis.js';

/**
 * `npx tsx --import ./tools/register-lua.mjs bench/exactness.ts [settlements]`: a million (by
 * default) one-token settlements on MemoryStore, RedisStore and RedisStore on a Cluster, each
 * compared with one settlement of all the tokens at once — the balance, what is pending and the
 * usage counters must be equal to the unit. Too long for `npm test` on Redis (minutes); the
 * store conformance suite runs the same comparison with 2,000.
 */
const settlements = Number(process.argv[2] ?? 1_000_000);
/** $0.15 per 1M tokens (GPT-4o mini's input), in 10^-12 USD a token. */
const PER_TOKEN = 150_000n;
const DAY = 86_400_000;
const BATCH = 500;
const START = 10n ** 15n; // $1,000 of balance

async function compare(name: string, store: BillingStore): Promise<boolean> {
  const began = Date.now();
  const [ones, once] = [`cus_ones_${began}`, `cus_once_${began}`];
  for (const customerId of [ones, once]) await store.syncBalance(customerId, START, began);
  const oneToken = { cost: PER_TOKEN, tokens: 1n };
  for (let first = 0; first < settlements; first += BATCH) {
    const size = Math.min(BATCH, settlements - first);
    await Promise.all(
      Array.from({ length: size }, (_, index) =>
        store.settle({
          customerId: ones,
          settlementId: `one-${first + index}`,
          cost: PER_TOKEN,
          events: [],
          usage: [{ period: 'p', counters: oneToken, ttlMs: DAY }],
          retentionMs: 60_000,
        }),
      ),
    );
  }
  const whole = PER_TOKEN * BigInt(settlements);
  await store.settle({
    customerId: once,
    settlementId: 'all-at-once',
    cost: whole,
    events: [],
    usage: [{ period: 'p', counters: { cost: whole, tokens: BigInt(settlements) }, ttlMs: DAY }],
    retentionMs: 60_000,
  });
  const [a, b] = await Promise.all([store.getBalance(ones), store.getBalance(once)]);
  const [usageA, usageB] = await Promise.all([store.getUsage(ones, 'p'), store.getUsage(once, 'p')]);
  const equal =
    a?.balance === START - whole &&
    a.balance === b?.balance &&
    a.pending === whole &&
    a.pending === b.pending &&
    usageA.cost === whole &&
    usageA.cost === usageB.cost &&
    usageA.tokens === BigInt(settlements) &&
    usageA.tokens === usageB.tokens;
  console.log(
    `${name.padEnd(20)} ${settlements} one-token settlements in ${((Date.now() - began) / 1000).toFixed(1)} s: ` +
      `balance ${a?.balance} vs ${b?.balance}, pending ${a?.pending} vs ${b?.pending}, ` +
      `cost counter ${usageA.cost} vs ${usageB.cost}, tokens ${usageA.tokens} vs ${usageB.tokens}: ${equal ? 'equal' : 'DIFFERENT'}`,
  );
  return equal;
}

const results: boolean[] = [];
results.push(await compare('MemoryStore', new MemoryStore()));
const server = await startRedisServer();
const redis = new Redis(server.url);
await whenReady(redis);
results.push(await compare('RedisStore', new RedisStore({ client: redis, prefix: 'elb-exact:' })));
redis.disconnect();
await server.stop();
const cluster = await startRedisCluster();
const clusterClient = cluster.client();
await whenReady(clusterClient);
results.push(
  await compare('RedisStore (Cluster)', new RedisStore({ client: clusterClient, prefix: 'elb-exact:' })),
);
await cluster.stop();
process.exit(results.every(Boolean) ? 0 : 1);
