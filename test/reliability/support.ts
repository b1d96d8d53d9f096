import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import type { BillingAlert } from '../../src/alerts/index.js';
import { formatCredits, parseUsd, unitsPerCredit } from '../../src/money.js';
import { RedisStore } from '../../src/store/redis.js';
import { startDodo } from '../support/billing-app.js';
import { deleteKeysWithPrefix, whenReady } from '../support/redis.js';
import type { AppProcessConfig, AppProcessMessage } from './app-process.js';

export const CENTS = unitsPerCredit(100);
/**
 * At most 452 input tokens (the bound of 400 characters, keys and structure) and `max_tokens`
 * 50, answered with usage [452, 50]: the reservation equals the settled cost, $0.00163, so a
 * balance of N × COST admits exactly N.
 */
export const REQUEST = {
  model: 'gpt-4o',
  messages: [{ role: 'user', content: 'x'.repeat(400) }],
  max_tokens: 50,
};
export const USAGE: [number, number] = [452, 50];
export const COST = parseUsd('0.00163', 'test');

/** A customer in the emulator, with an open API account, holding exactly `requests` × COST. */
export function customerWorth(dodo: Awaited<ReturnType<typeof startDodo>>, requests: number): string {
  const customer = dodo.customer({ email: `worth-${requests}@example.com` }).customer_id;
  dodo.emulator.setBalance(customer, dodo.entitlementId, formatCredits(BigInt(requests) * COST, CENTS));
  return customer;
}

export interface ChatOptions {
  /** Keep the request in flight this long in the handler. */
  delayMs?: number;
  signal?: AbortSignal;
  /** The request's id (the app reads it from `x-test-request-id`). */
  requestId?: string;
  /** The API key the request is billed to, for its budget (the app reads `x-api-key`). */
  apiKey?: string;
}

/** POSTs REQUEST as `customer`, billed USAGE. */
export function chat(url: string, customer: string, options: ChatOptions = {}): Promise<globalThis.Response> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-customer': customer,
    'x-test-usage': USAGE.join(','),
  };
  if (options.delayMs) headers['x-test-delay-ms'] = String(options.delayMs);
  if (options.requestId) headers['x-test-request-id'] = options.requestId;
  if (options.apiKey) headers['x-api-key'] = options.apiKey;
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify(REQUEST),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

/** A billing app running in its own process (see app-process.ts). */
export interface AppProcess {
  url: string;
  child: ChildProcess;
  /** The alerts the app fired (when started with `alerts`), in the order they arrived. */
  alerts: BillingAlert[];
  /** Asks the app to flush its outbox to Dodo; rejects with its reason when it cannot. */
  flush(): Promise<void>;
  /** Kills the process with SIGKILL, as a crash or the OOM killer would, and waits for its exit. */
  kill(): Promise<void>;
}

const APP_SCRIPT = fileURLToPath(new URL('./app-process.ts', import.meta.url));
const REGISTER_LUA = fileURLToPath(new URL('../../tools/register-lua.mjs', import.meta.url));
const STARTUP_TIMEOUT_MS = 20_000;

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Forks app-process.ts (tsx, `.lua` as text) and resolves once it listens. */
export async function startAppProcess(config: AppProcessConfig): Promise<AppProcess> {
  const child = fork(APP_SCRIPT, [JSON.stringify(config)], {
    execArgv: ['--import', 'tsx', '--import', REGISTER_LUA],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  const alerts: BillingAlert[] = [];
  child.on('message', (message: AppProcessMessage) => {
    if (message.type === 'alert') alerts.push(message.alert);
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`app process did not start within ${STARTUP_TIMEOUT_MS} ms`));
    }, STARTUP_TIMEOUT_MS);
    child.on('message', (message: AppProcessMessage) => {
      if (message.type !== 'ready') return;
      clearTimeout(timer);
      resolve(message.port);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`app process exited before listening (${code ?? signal})`));
    });
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    child,
    alerts,
    flush: async () => {
      const response = await fetch(`${url}/__flush`, { method: 'POST' });
      if (!response.ok) throw new Error(`flush failed: ${JSON.stringify(await response.json())}`);
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited(child);
    },
  };
}

/** Stops app processes at the end of a test (a killed one is already gone). */
export async function stopAppProcesses(apps: readonly AppProcess[]): Promise<void> {
  await Promise.all(apps.map((app) => app.kill()));
}

/** Event ids of a list of ingested events, checked distinct by the caller. */
function idsOf(events: readonly { event_id: string }[]): string[] {
  return events.map((event) => event.event_id);
}

/** Exactly `count` events reached Dodo, none of them twice. */
export function expectEachOnce(events: readonly { event_id: string }[], count: number): void {
  expect(events).toHaveLength(count);
  expect(new Set(idsOf(events)).size).toBe(count);
}

/** What a test adds to an app process's configuration (the Redis and Dodo parts are the suite's). */
export type AppProcessOptions = Omit<
  AppProcessConfig,
  'redisUrl' | 'prefix' | 'dodoBaseURL' | 'dodoApiKey' | 'entitlementId'
>;

/**
 * What every suite of app processes on one Redis sets up, for the `describe` that calls it: the
 * Dodo emulator and an admin client for the suite; per test, fresh key prefixes, the processes
 * it starts (stopped after it, with the emulator's faults and webhook URL cleared), and a store
 * on a prefix for the test's own reads; the prefixes' keys deleted at the end.
 */
export function appProcessSuite(redisUrl: string) {
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let admin: Redis;
  let apps: AppProcess[] = [];
  const prefixes: string[] = [];

  beforeAll(async () => {
    dodo = await startDodo();
    admin = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    await whenReady(admin);
  });
  afterEach(async () => {
    dodo.emulator.clearFaults();
    dodo.emulator.setWebhookUrl(undefined);
    await stopAppProcesses(apps);
    apps = [];
  });
  afterAll(async () => {
    for (const prefix of prefixes) await deleteKeysWithPrefix(admin, prefix);
    await admin.quit();
    await dodo.emulator.close();
  });

  const suite = {
    get dodo() {
      return dodo;
    },
    get admin() {
      return admin;
    },
    freshPrefix(): string {
      const prefix = `elb-reliability:${randomUUID()}:`;
      prefixes.push(prefix);
      return prefix;
    },
    /** An app process on `prefix`, stopped after the test. */
    async app(prefix: string, options: AppProcessOptions = {}): Promise<AppProcess> {
      const started = await startAppProcess({
        redisUrl,
        prefix,
        dodoBaseURL: dodo.emulator.baseURL,
        dodoApiKey: dodo.emulator.apiKey,
        entitlementId: dodo.entitlementId,
        ...options,
      });
      apps.push(started);
      return started;
    },
    /** The test's own view of the store the apps share. */
    storeOn(prefix: string): RedisStore {
      return new RedisStore({ client: admin, prefix, commandTimeoutMs: 5_000 });
    },
    /** Two app processes on one fresh prefix, racing on it, and the test's store on it. */
    async twoApps(options: AppProcessOptions = {}) {
      const prefix = suite.freshPrefix();
      const [first, second] = await Promise.all([suite.app(prefix, options), suite.app(prefix, options)]);
      return { prefix, first: first!, second: second!, store: suite.storeOn(prefix) };
    },
  };
  return suite;
}
