import type { RedisConnection } from './redis-client.js';
import {
  SCRIPT_NAMES,
  type ScriptArgument,
  type ScriptName,
  scriptKeyCount,
  scriptSha,
  scriptSource,
} from './redis-scripts.js';

/*
 * node-redis (the `redis` package, 5 and 6) is an optional peer: nothing here imports it. The types
 * below are the few members RedisStore uses, which `createClient()` and `createCluster()`
 * clients have, so an app without `redis` installed never needs its types.
 */

// biome-ignore lint/suspicious/noExplicitAny: the listener types of EventEmitter itself.
type Listener = (...args: any[]) => void;

interface EventSource {
  once(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
}

/** Per-command options RedisStore passes: the default reply types, whatever the app configured. */
interface CommandOptions {
  typeMapping?: object;
}

/** A node-redis client, `createClient({ url })`, connected with `await client.connect()`. */
export interface NodeRedisClient extends EventSource {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  sendCommand(args: readonly string[], options?: CommandOptions): Promise<unknown>;
}

/** A node-redis cluster client, `createCluster({ rootNodes })`, connected with `await cluster.connect()`. */
export interface NodeRedisCluster extends EventSource {
  readonly isOpen: boolean;
  readonly masters: readonly unknown[];
  sendCommand(
    firstKey: string | undefined,
    isReadonly: boolean | undefined,
    args: string[],
    options?: CommandOptions,
  ): Promise<unknown>;
}

type Members = Record<string, unknown>;

/** A node-redis client kind RedisStore refuses (pools and Sentinel spread commands over connections). */
export function unsupportedNodeRedisClient(client: object): 'client pool' | 'Sentinel client' | undefined {
  const { sendCommand, getMasterNode, totalClients } = client as Members;
  if (typeof sendCommand !== 'function') return undefined;
  if (typeof getMasterNode === 'function') return 'Sentinel client';
  if (typeof totalClients === 'number') return 'client pool';
  return undefined;
}

export function isNodeRedisClient(client: object): boolean {
  const { sendCommand, isReady, isOpen } = client as Members;
  return typeof sendCommand === 'function' && typeof isReady === 'boolean' && typeof isOpen === 'boolean';
}

export function isNodeRedisCluster(client: object): boolean {
  const { sendCommand, isOpen, masters } = client as Members;
  return typeof sendCommand === 'function' && typeof isOpen === 'boolean' && Array.isArray(masters);
}

/**
 * Replies in node-redis's default types (strings, numbers, arrays), even when the app maps
 * them otherwise (Buffers, Maps) for its own commands.
 */
const COMMAND_OPTIONS: CommandOptions = { typeMapping: {} };

/** How often a failed undo is sent again on a cluster, which has no event for a node's reconnect. */
const CLUSTER_RETRY_MS = 250;

/** Whether `error` is one of node-redis's `ErrorReply` classes (Redis answered with an error). */
function isErrorReply(error: unknown): boolean {
  for (let proto = error; proto !== null && typeof proto === 'object'; proto = Object.getPrototypeOf(proto)) {
    if ((proto as { constructor?: { name?: string } }).constructor?.name === 'ErrorReply') return true;
  }
  return false;
}

/**
 * RedisStore on a node-redis (5 or 6) client or cluster client.
 *
 * Commands are sent raw (`sendCommand`), so the store needs none of node-redis's command
 * helpers or modules; a cluster routes each by its first key, which carries the customer's or
 * the outbox shard's hash tag. Unlike ioredis, node-redis does not resend a command that was
 * written to a connection that then dropped: it rejects it (whether it ran is then unknown,
 * which the undo of an abandoned call covers), and sends what was still waiting to be written
 * once it reconnects (its offline queue, unless `disableOfflineQueue`).
 */
export class NodeRedisConnection implements RedisConnection {
  readonly library = 'node-redis';
  readonly rateLimiterClient: { storeClient: unknown; useRedisPackage: true };
  private readonly shas = new Map<ScriptName, string>();
  private readonly sources = new Map<ScriptName, string>();

  constructor(
    private readonly client: NodeRedisClient | NodeRedisCluster,
    private readonly cluster: boolean,
  ) {
    this.rateLimiterClient = { storeClient: client, useRedisPackage: true };
    for (const name of SCRIPT_NAMES) {
      this.shas.set(name, scriptSha(name));
      this.sources.set(name, scriptSource(name));
    }
  }

  private send(firstKey: string | undefined, args: string[]): Promise<unknown> {
    return this.cluster
      ? (this.client as NodeRedisCluster).sendCommand(firstKey, false, args, COMMAND_OPTIONS)
      : (this.client as NodeRedisClient).sendCommand(args, COMMAND_OPTIONS);
  }

  async script(name: ScriptName, args: readonly ScriptArgument[]): Promise<unknown> {
    const fixed = scriptKeyCount(name);
    const [count, rest] = fixed === undefined ? [String(args[0]), args.slice(1)] : [String(fixed), args];
    const strings = rest.map(String);
    // Every script has keys; the first one (with its hash tag) picks the cluster node.
    const firstKey = strings[0];
    try {
      return await this.send(firstKey, ['EVALSHA', this.shas.get(name)!, count, ...strings]);
    } catch (error) {
      // Only a NOSCRIPT reply (after a restart or `SCRIPT FLUSH`) is retried: anything else
      // may have run.
      if (!(isErrorReply(error) && String((error as Error).message).startsWith('NOSCRIPT'))) throw error;
      return this.send(firstKey, ['EVAL', this.sources.get(name)!, count, ...strings]);
    }
  }

  async hgetall(key: string): Promise<[string, string][]> {
    const reply = await this.send(key, ['HGETALL', key]);
    if (Array.isArray(reply)) {
      const pairs: [string, string][] = [];
      for (let index = 0; index + 1 < reply.length; index += 2) {
        pairs.push([String(reply[index]), String(reply[index + 1])]);
      }
      return pairs;
    }
    // RESP3 answers a map.
    if (reply instanceof Map) return [...reply].map(([field, value]) => [String(field), String(value)]);
    return Object.entries((reply ?? {}) as Record<string, unknown>).map(([field, value]) => [
      field,
      String(value),
    ]);
  }

  async hmget(key: string, fields: readonly string[]): Promise<(string | null)[]> {
    return (await this.send(key, ['HMGET', key, ...fields])) as (string | null)[];
  }

  async hvals(key: string): Promise<string[]> {
    return (await this.send(key, ['HVALS', key])) as string[];
  }

  async setPx(key: string, value: string, ttlMs: number): Promise<void> {
    await this.send(key, ['SET', key, value, 'PX', String(ttlMs)]);
  }

  isReady(): boolean {
    if (this.cluster) {
      const cluster = this.client as NodeRedisCluster;
      return cluster.isOpen && cluster.masters.length > 0;
    }
    return (this.client as NodeRedisClient).isReady;
  }

  isStarting(): boolean {
    // Never ready yet (RedisCalls asks only then): connecting, or not yet connected by the app.
    return !this.isReady();
  }

  describeState(): string {
    if (!this.client.isOpen) return 'the client is closed';
    return this.cluster ? 'the cluster is discovering its nodes' : 'the client is reconnecting';
  }

  connectHint(): string {
    return this.client.isOpen
      ? ''
      : ` (the node-redis client was never connected: call \`await client.connect()\` before using the store)`;
  }

  /** A cluster is ready once `connect()` has discovered its nodes (`connect` event). */
  private get readyEvent(): string {
    return this.cluster ? 'connect' : 'ready';
  }

  onceReady(listener: () => void): () => void {
    const event = this.readyEvent;
    this.client.once(event, listener);
    return () => this.client.off(event, listener);
  }

  onceFailure(listener: (error?: unknown) => void): () => void {
    const events = this.cluster ? ['error', 'disconnect'] : ['error', 'end'];
    for (const event of events) this.client.once(event, listener);
    return () => {
      for (const event of events) this.client.off(event, listener);
    };
  }

  afterReconnect(listener: () => void): () => void {
    if (this.cluster) {
      // A cluster reports no reconnect of its nodes: try again shortly (each try that fails
      // for want of a connection schedules the next, until the undo's effect lapses).
      const timer = setTimeout(listener, CLUSTER_RETRY_MS);
      timer.unref();
      return () => clearTimeout(timer);
    }
    // node-redis writes its offline queue on `ready`, before anything sent from here.
    this.client.once('ready', listener);
    return () => this.client.off('ready', listener);
  }

  /** node-redis already writes the commands it queued together (it corks its socket itself). */
  coalesceWritesThisTurn(): void {}

  isReplyError(error: unknown): boolean {
    return isErrorReply(error);
  }
}
