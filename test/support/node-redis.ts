import { createClient, createCluster, type RedisClientOptions } from 'redis';

/*
 * node-redis (`redis` 5 or 6) clients for tests, next to the ioredis ones of ./redis.ts: the same
 * Redis servers and Cluster, reached through the other library RedisStore accepts.
 */

export type NodeRedisClientForTests = ReturnType<typeof createClient>;
/** Client options, either protocol (node-redis 6 types `RESP` as its default, 3). */
export type NodeRedisOptions = Omit<RedisClientOptions, 'RESP'> & { RESP?: 2 | 3 };
function newCluster(nodes: readonly { host: string; port: number }[]) {
  return createCluster({ rootNodes: nodes.map(({ host, port }) => ({ url: `redis://${host}:${port}` })) });
}
export type NodeRedisClusterForTests = ReturnType<typeof newCluster>;

/** Every client made here, closed by `closeNodeRedisClients` (an afterAll/afterEach of the file). */
const open = new Set<{ destroy(): void }>();

/**
 * A node-redis client on `url`, its errors swallowed (a test that stops Redis makes some), not
 * connected: the caller connects it (`await client.connect()`), as an app must.
 */
export function nodeRedisClient(url: string, options: NodeRedisOptions = {}): NodeRedisClientForTests {
  const client = createClient({ url, ...options } as RedisClientOptions) as NodeRedisClientForTests;
  client.on('error', () => {});
  open.add(client);
  return client;
}

/** A connected node-redis client on `url`. */
export async function connectedNodeRedisClient(
  url: string,
  options: NodeRedisOptions = {},
): Promise<NodeRedisClientForTests> {
  const client = nodeRedisClient(url, options);
  await client.connect();
  return client;
}

/** A connected node-redis cluster client on the nodes of a test cluster. */
export async function connectedNodeRedisCluster(
  nodes: readonly { host: string; port: number }[],
): Promise<NodeRedisClusterForTests> {
  const cluster = newCluster(nodes);
  cluster.on('error', () => {});
  open.add(cluster);
  await cluster.connect();
  return cluster;
}

/** Destroys every node-redis client made by this file (open or not). */
export function closeNodeRedisClients(): void {
  for (const client of open) {
    try {
      client.destroy();
    } catch {
      // Already closed.
    }
  }
  open.clear();
}
