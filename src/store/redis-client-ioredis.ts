import type { Socket } from 'node:net';
// Node's own, not the global a test's fake timers replace: the writes of a corked socket must
// leave whatever the app's tests do with the clock.
import { setImmediate as uncorkAfterThisTurn } from 'node:timers';
import type { Cluster, Redis } from 'ioredis';
import type { RedisConnection } from './redis-client.js';
import {
  SCRIPT_NAMES,
  type ScriptArgument,
  type ScriptCommand,
  type ScriptName,
  scriptKeyCount,
  scriptSource,
} from './redis-scripts.js';

/** ioredis command name of a script; namespaced, since the client may be shared. */
function commandName(name: ScriptName): string {
  return `elb_${name}`;
}

/**
 * RedisStore on an ioredis client (`new Redis(url)` or `new Cluster(nodes)`, ioredis 5 or 6).
 *
 * Scripts are registered with `defineCommand`, which sends EVALSHA and falls back to EVAL only
 * on a NOSCRIPT reply. ioredis parks commands sent while disconnected in its offline queue and
 * resends the ones it had no answer to after a reconnect: `afterReconnect` waits for both.
 */
export class IoredisConnection implements RedisConnection {
  readonly library = 'ioredis';
  readonly rateLimiterClient: { storeClient: unknown };
  private readonly scripts = {} as Record<ScriptName, ScriptCommand>;
  /** The socket corked until the end of this turn of the event loop, if any. */
  private corked: Socket | undefined;

  constructor(private readonly client: Redis | Cluster) {
    this.rateLimiterClient = { storeClient: client };
    const methods = client as unknown as Record<string, ScriptCommand>;
    for (const name of SCRIPT_NAMES) {
      const keys = scriptKeyCount(name);
      const command = commandName(name);
      client.defineCommand(command, {
        lua: scriptSource(name),
        ...(keys === undefined ? {} : { numberOfKeys: keys }),
      });
      this.scripts[name] = (...args) => methods[command]!(...args);
    }
    // A `lazyConnect` client connects on its first command, which RedisCalls never sends while
    // the client is not ready: start connecting now instead (failures surface as its error events).
    if (client.status === 'wait') client.connect().catch(() => {});
  }

  script(name: ScriptName, args: readonly ScriptArgument[]): Promise<unknown> {
    return this.scripts[name](...args);
  }

  async hgetall(key: string): Promise<[string, string][]> {
    return Object.entries(await this.client.hgetall(key));
  }

  hmget(key: string, fields: readonly string[]): Promise<(string | null)[]> {
    return this.client.hmget(key, ...fields);
  }

  hvals(key: string): Promise<string[]> {
    return this.client.hvals(key);
  }

  async setPx(key: string, value: string, ttlMs: number): Promise<void> {
    await this.client.set(key, value, 'PX', ttlMs);
  }

  /**
   * ioredis writes each command to its socket at once (one system call each) unless the app
   * turned on `enableAutoPipelining`. Here the socket is corked until `setImmediate`, the end of
   * this turn of the event loop: what every request handled in this turn sends leaves in one
   * write, in order, without waiting for I/O (pending immediates keep the loop from blocking).
   * A Cluster has a socket per node, reached through its own clients: left as it is.
   */
  coalesceWritesThisTurn(): void {
    if (this.corked) return;
    const stream = (this.client as { stream?: Socket }).stream;
    if (!stream || typeof stream.cork !== 'function' || this.client.status !== 'ready') return;
    this.corked = stream;
    stream.cork();
    uncorkAfterThisTurn(this.uncork);
  }

  private readonly uncork = (): void => {
    const stream = this.corked;
    this.corked = undefined;
    stream?.uncork();
  };

  isReady(): boolean {
    return this.client.status === 'ready';
  }

  isStarting(): boolean {
    const { status } = this.client;
    return status === 'wait' || status === 'connecting' || status === 'connect';
  }

  describeState(): string {
    return `status "${this.client.status}"`;
  }

  connectHint(): string {
    return '';
  }

  onceReady(listener: () => void): () => void {
    this.client.once('ready', listener);
    return () => this.client.off('ready', listener);
  }

  onceFailure(listener: (error?: unknown) => void): () => void {
    this.client.once('error', listener);
    this.client.once('end', listener);
    return () => {
      this.client.off('error', listener);
      this.client.off('end', listener);
    };
  }

  afterReconnect(listener: () => void): () => void {
    let timer: NodeJS.Immediate | undefined;
    // `ready` is emitted before ioredis resends the commands of the lost connection and its
    // offline queue: call back after them.
    const onReady = () => {
      timer = setImmediate(listener);
    };
    this.client.once('ready', onReady);
    return () => {
      this.client.off('ready', onReady);
      if (timer) clearImmediate(timer);
    };
  }

  isReplyError(error: unknown): boolean {
    return error instanceof Error && error.name === 'ReplyError';
  }
}
