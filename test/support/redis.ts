import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';

/*
 * Real Redis for tests, never a mock: Lua is only tested against the real thing.
 * Order of preference: REDIS_URL, a Redis already on 127.0.0.1:6379, a `redis-server` started
 * here on a free port (stopped when the test process exits). Each test isolates its keys with a
 * unique prefix, so runs never collide on a shared Redis.
 */

const run = promisify(execFile);
const LOCAL_DEFAULT_URL = 'redis://127.0.0.1:6379';
const STARTUP_TIMEOUT_MS = 10_000;

/** A `redis-server` child process started by a test. */
export interface RedisServer {
  url: string;
  port: number;
  /**
   * Stalls the server (SIGSTOP), as a long GC pause, a swapped-out or CPU-starved host would:
   * connections stay open, the kernel still accepts what clients write, nothing is answered.
   */
  pause(): void;
  /** Resumes a paused server (SIGCONT): it then runs what it was sent, in order. */
  resume(): void;
  /** Stops the server gracefully and waits for it to exit. */
  stop(): Promise<void>;
  /** Kills the server abruptly (SIGKILL), as a crash would, and waits for it to exit. */
  kill(): Promise<void>;
}

/** A three-master Redis Cluster started by a test. */
export interface RedisClusterForTests {
  nodes: { host: string; port: number }[];
  /** A new ioredis `Cluster` client on the nodes (disconnected by `stop()`). */
  client(): Cluster;
  /** Stalls the node on `port` (SIGSTOP), as {@link RedisServer.pause} does. */
  pause(port: number): void;
  /** Resumes a paused node (SIGCONT). */
  resume(port: number): void;
  /** Kills every node, disconnects the clients and removes the temporary directory. */
  stop(): Promise<void>;
}

/** Whether `redis-server` (and `redis-cli`) can be run from PATH. */
export function hasRedisBinaries(): boolean {
  const paths = (process.env.PATH ?? '').split(delimiter);
  return ['redis-server', 'redis-cli'].every((binary) => paths.some((dir) => existsSync(join(dir, binary))));
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** One PING with short timeouts and no retries; true when Redis answered. */
async function answersPing(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 500,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

async function waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Timed out after ${STARTUP_TIMEOUT_MS} ms waiting for ${what}.`);
}

/** Children still running, killed when the test process exits however it exits. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function spawnRedisServer(args: string[], cwd?: string): ChildProcess {
  const child = spawn('redis-server', args, { cwd, stdio: 'ignore' });
  children.add(child);
  child.once('exit', () => children.delete(child));
  // A spawn failure is reported by `stillRunning`, not as an unhandled error event.
  child.on('error', () => {});
  return child;
}

/** Throws when a server died before answering (port taken, bad flag), instead of waiting on. */
function stillRunning(child: ChildProcess, what: string): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
    throw new Error(`${what} exited before it answered (exit code ${child.exitCode ?? child.signalCode}).`);
  }
}

/** Options of {@link startRedisServer}. */
export interface RedisServerOptions {
  /** Port to listen on, e.g. a killed server's, to restart it where its clients reconnect. Default: a free port. */
  port?: number;
  /**
   * Directory of an append-only file fsynced on every write, so a server killed with SIGKILL and
   * restarted on the same directory comes back with every acknowledged write. Default: no
   * persistence.
   */
  appendOnlyDir?: string;
}

/**
 * Starts a throwaway `redis-server` (on a free port, without persistence unless asked), for
 * tests that stop or kill their own Redis.
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const port = options.port ?? (await freePort());
  const persistence =
    options.appendOnlyDir === undefined
      ? ['--appendonly', 'no']
      : ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', options.appendOnlyDir];
  const child = spawnRedisServer(['--port', String(port), '--save', '', ...persistence]);
  const url = `redis://127.0.0.1:${port}`;
  const what = `redis-server on port ${port}`;
  await waitUntil(what, async () => {
    stillRunning(child, what);
    return answersPing(url);
  });
  const stopWith = async (signal: NodeJS.Signals) => {
    // A stopped process does not act on SIGTERM until it is continued.
    child.kill('SIGCONT');
    child.kill(signal);
    await exited(child);
  };
  return {
    url,
    port,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    stop: () => stopWith('SIGTERM'),
    kill: () => stopWith('SIGKILL'),
  };
}

let sharedUrl: Promise<string | undefined> | undefined;

/**
 * The Redis every Redis-backed test uses: `REDIS_URL` when set, else 127.0.0.1:6379 when it
 * answers, else a `redis-server` started for this process (when the binary exists), else
 * `undefined`. Resolved once per test process.
 */
export function redisUrlForTests(): Promise<string | undefined> {
  sharedUrl ??= (async () => {
    if (process.env.REDIS_URL) return process.env.REDIS_URL;
    if (await answersPing(LOCAL_DEFAULT_URL)) return LOCAL_DEFAULT_URL;
    if (!hasRedisBinaries()) return undefined;
    return (await startRedisServer()).url;
  })();
  return sharedUrl;
}

function noRedis(suiteName: string, what: string): void {
  const message = `${suiteName}: ${what}. Set REDIS_URL, run Redis on 127.0.0.1:6379, or install redis-server.`;
  if (process.env.CI === 'true') throw new Error(`${message} (required when CI=true)`);
  console.warn(`\n⚠️  SKIPPING ${message}\n`);
}

/**
 * The Redis URL for a suite, or `undefined` when no Redis is available: then it throws when
 * `CI=true` (a CI run must not silently skip Redis) and otherwise warns loudly, so the caller
 * can `describe.skip`.
 *
 * @example
 * const url = await requireRedis('RedisStore');
 * (url ? describe : describe.skip)('RedisStore', () => { … });
 */
export async function requireRedis(suiteName: string): Promise<string | undefined> {
  const url = await redisUrlForTests();
  if (!url) noRedis(suiteName, 'no Redis available');
  return url;
}

/** Like `requireRedis`, for suites that start their own servers or cluster: true when they can. */
export function requireRedisBinaries(suiteName: string): boolean {
  const available = hasRedisBinaries();
  if (!available) noRedis(suiteName, '`redis-server` and `redis-cli` are not on PATH');
  return available;
}

async function clusterStateOk(port: number): Promise<boolean> {
  try {
    const { stdout } = await run('redis-cli', ['-p', String(port), 'cluster', 'info']);
    return stdout.includes('cluster_state:ok');
  } catch {
    return false;
  }
}

/**
 * Starts a Redis Cluster of three masters (no replicas) on free ports, in a temporary directory,
 * and waits until every node reports `cluster_state:ok`.
 */
export async function startRedisCluster(): Promise<RedisClusterForTests> {
  const directory = await mkdtemp(join(tmpdir(), 'elb-redis-cluster-'));
  const distinctPorts = new Set<number>();
  while (distinctPorts.size < 3) distinctPorts.add(await freePort());
  const ports = [...distinctPorts];
  const servers = ports.map((port) =>
    spawnRedisServer(
      [
        '--port',
        String(port),
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(directory, `nodes-${port}.conf`),
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
      ],
      directory,
    ),
  );
  const clients: Cluster[] = [];
  const stop = async () => {
    for (const client of clients) client.disconnect();
    for (const server of servers) server.kill('SIGCONT');
    for (const server of servers) server.kill('SIGKILL');
    await Promise.all(servers.map(exited));
    await rm(directory, { recursive: true, force: true });
  };
  try {
    await Promise.all(
      ports.map((port, index) => {
        const what = `cluster node on port ${port}`;
        return waitUntil(what, async () => {
          stillRunning(servers[index]!, what);
          return answersPing(`redis://127.0.0.1:${port}`);
        });
      }),
    );
    await run('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    await Promise.all(
      ports.map((port) => waitUntil(`cluster_state:ok on ${port}`, () => clusterStateOk(port))),
    );
  } catch (error) {
    await stop();
    throw error;
  }
  const nodes = ports.map((port) => ({ host: '127.0.0.1', port }));
  return {
    nodes,
    client() {
      const client = new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 1 } });
      client.on('error', () => {});
      clients.push(client);
      return client;
    },
    pause: (port) => servers[ports.indexOf(port)]?.kill('SIGSTOP'),
    resume: (port) => servers[ports.indexOf(port)]?.kill('SIGCONT'),
    stop,
  };
}

/** Deletes every key starting with `prefix` (SCAN, never KEYS), so shared Redis stays clean. */
export async function deleteKeysWithPrefix(client: Redis, prefix: string): Promise<void> {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (keys.length > 0) await client.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

/** Resolves once an ioredis client is connected and ready for commands. */
export async function whenReady(client: Redis | Cluster): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('end', () => reject(new Error('Redis connection ended before it was ready.')));
  });
}

/** A TCP proxy in front of a server, slow to let connections through. */
export interface SlowProxy {
  url: string;
  port: number;
  /** Closes the listener and every connection through it. */
  close(): Promise<void>;
}

/**
 * A proxy that holds each new connection `acceptDelayMs` before it connects it to the target:
 * the client's TCP connection opens at once, but nothing it writes is answered until then, as
 * with a Redis slow to accept (deploy, failover, TLS handshake, a full accept queue).
 */
export async function startSlowProxy(target: { port: number }, acceptDelayMs: number): Promise<SlowProxy> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = createServer({ pauseOnConnect: true }, (client) => {
    track(client);
    const timer = setTimeout(() => {
      const upstream = createConnection({ host: '127.0.0.1', port: target.port });
      track(upstream);
      upstream.on('close', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.once('connect', () => {
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    }, acceptDelayMs);
    client.on('close', () => clearTimeout(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
