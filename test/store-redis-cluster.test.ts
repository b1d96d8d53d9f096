import { randomUUID } from 'node:crypto';
import type { Cluster } from 'ioredis';
import * as vitest from 'vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreError } from '../src/errors.js';
import { RedisStore } from '../src/store/redis.js';
import { RedisKeyspace } from '../src/store/redis-keys.js';
import { describeStoreConformance } from '../src/testing/index.js';
import {
  closeNodeRedisClients,
  connectedNodeRedisCluster,
  type NodeRedisClusterForTests,
} from './support/node-redis.js';
import {
  type RedisClusterForTests,
  requireRedisBinaries,
  startRedisCluster,
  whenReady,
} from './support/redis.js';

/*
 * The same conformance suite on a real three-master Redis Cluster, through both clients
 * RedisStore accepts (ioredis's `Cluster` and node-redis's `createCluster`, on one cluster to
 * keep the run lean): any script whose keys span two slots fails here with CROSSSLOT, and a
 * command routed to the wrong node with MOVED, so this is what proves the hash-tag layout and
 * the routing by first key.
 */

if (!requireRedisBinaries('RedisStore on Redis Cluster')) {
  describe.skip('RedisStore on Redis Cluster (redis-server not available)', () => {
    it('needs redis-server', () => {});
  });
} else {
  let cluster: RedisClusterForTests;
  let client: Cluster;
  let nodeRedis: NodeRedisClusterForTests;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = cluster.client();
    await whenReady(client);
    nodeRedis = await connectedNodeRedisCluster(cluster.nodes);
  });

  afterAll(async () => {
    closeNodeRedisClients();
    await cluster?.stop();
  });

  describeStoreConformance(
    'redis-cluster',
    {
      createStore: (now) => new RedisStore({ client, prefix: `elb-test:${randomUUID()}:`, now }),
    },
    vitest,
  );

  describeStoreConformance(
    'redis-cluster (node-redis)',
    {
      createStore: (now) => new RedisStore({ client: nodeRedis, prefix: `elb-test:${randomUUID()}:`, now }),
    },
    vitest,
  );

  describe('RedisStore key layout on Redis Cluster', () => {
    it('spreads the outbox shards over every master', async () => {
      const keyspace = new RedisKeyspace('elb:', 16);
      const owners = new Set<string>();
      for (let shard = 0; shard < keyspace.shards; shard += 1) {
        const slot = (await client.cluster('KEYSLOT', keyspace.outbox(shard).ready)) as number;
        const node = client.slots[slot]?.[0];
        if (node) owners.add(node);
      }
      expect(owners.size).toBe(3);
    });

    it('keeps every key of a customer in the slot of its outbox shard', async () => {
      const keyspace = new RedisKeyspace('elb:', 16);
      for (const id of ['cus_1', '{cus}', '__proto__', 'ünïcødé-客户-🚀']) {
        const keys = keyspace.customer(id);
        const slots = new Set<number>();
        for (const key of [keys.balance, keys.usage('2026-11'), keys.subscriptions, keys.outbox.ready]) {
          slots.add((await client.cluster('KEYSLOT', key)) as number);
        }
        expect(slots.size).toBe(1);
      }
    });
  });

  describe.each([
    ['ioredis', () => client],
    ['node-redis', () => nodeRedis],
  ] as const)('RedisStore on Redis Cluster (%s): a master stalled mid-call', (_library, clientOf) => {
    it('reserves abandoned at their deadline are released when the master resumes: the undo follows the write to its node', async () => {
      const store = new RedisStore({
        client: clientOf(),
        prefix: `elb-test:${randomUUID()}:`,
        commandTimeoutMs: 300,
      });
      const million = 1_000_000n;
      await store.syncBalance('cus_1', 10n * million, Date.now());
      expect(await store.reserve('cus_1', 'warm-up', million, 600_000)).toMatchObject({ ok: true });
      await store.release('cus_1', 'warm-up');
      const keys = (store as unknown as { keys: RedisKeyspace }).keys.customer('cus_1');
      const slot = (await client.cluster('KEYSLOT', keys.balance)) as number;
      const port = Number(client.slots[slot]![0]!.split(':').at(-1));
      cluster.pause(port);
      try {
        const outcomes = await Promise.allSettled(
          [1, 2, 3].map((i) => store.reserve('cus_1', `r${i}`, million, 600_000)),
        );
        for (const outcome of outcomes) {
          expect(outcome.status).toBe('rejected');
          expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(StoreError);
        }
      } finally {
        cluster.resume(port);
      }
      await vitest.expect
        .poll(async () => (await store.getBalance('cus_1'))?.reserved, { timeout: 3_000 })
        .toBe(0n);
      expect(await store.reserve('cus_1', 'next', 10n * million, 600_000)).toMatchObject({ ok: true });
    });
  });
}
