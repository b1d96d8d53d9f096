import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express } from 'express';
import { Redis } from 'ioredis';
import { Webhook } from 'standardwebhooks';
import { type DodoWebhooksOptions, dodoWebhooks } from '../../src/dodo-webhooks/index.js';
import { type Money, parseUsd } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { BillingStore } from '../../src/store/types.js';
import { createDodoEmulator, type DodoEmulator, type DodoEmulatorOptions } from '../../src/testing/index.js';
import { deleteKeysWithPrefix, whenReady } from '../support/redis.js';

export const WEBHOOK_PATH = '/webhooks/dodo';
/** Short retries: a failed delivery comes back within a few hundred ms. */
export const FAST_RETRY = [60, 120, 240];

export const usd = (text: string): Money => parseUsd(text, 'test');

/** A running HTTP server on an ephemeral loopback port. */
export interface Running {
  url: string;
  close(): Promise<void>;
}

export async function listen(app: Express): Promise<Running> {
  const server: Server = await new Promise((resolve) => {
    const started = app.listen(0, '127.0.0.1', () => resolve(started));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An Express app with `dodoWebhooks` at `WEBHOOK_PATH`; `before` mounts what comes first. */
export async function startWebhookApp(
  options: DodoWebhooksOptions,
  before?: (app: Express) => void,
): Promise<Running & { webhookUrl: string }> {
  const app = express();
  before?.(app);
  app.use(WEBHOOK_PATH, dodoWebhooks(options));
  const running = await listen(app);
  return { ...running, webhookUrl: `${running.url}${WEBHOOK_PATH}` };
}

export interface SignedPost {
  secret: string;
  body: string;
  id?: string;
  timestamp?: Date;
  /** Extra or replaced headers; `undefined` removes one. */
  headers?: Record<string, string | undefined>;
}

/** The headers Standard Webhooks signing gives a body, as Dodo sends them. */
export function signedHeaders({ secret, body, id, timestamp, headers }: SignedPost): Record<string, string> {
  const webhookId = id ?? `msg_${randomUUID()}`;
  const at = timestamp ?? new Date();
  const all: Record<string, string | undefined> = {
    'content-type': 'application/json',
    'webhook-id': webhookId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(webhookId, at, body),
    ...headers,
  };
  return Object.fromEntries(
    Object.entries(all).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
}

export interface Answer {
  status: number;
  body: { error?: { code: string; message: string }; received?: boolean; duplicate?: boolean } | undefined;
}

export async function post(url: string, body: string, headers: Record<string, string>): Promise<Answer> {
  const response = await fetch(url, { method: 'POST', headers, body });
  const text = await response.text();
  let parsed: Answer['body'];
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed };
}

/** The headers of a captured delivery that a replay sends again (not its length or host). */
export function replayHeaders(received: { headers: IncomingHttpHeaders }): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const name of ['content-type', 'webhook-id', 'webhook-timestamp', 'webhook-signature']) {
    const value = received.headers[name];
    if (typeof value === 'string') kept[name] = value;
  }
  return kept;
}

/** Signs `body` with the real `standardwebhooks` package and POSTs it. */
export function postSigned(url: string, signed: SignedPost): Promise<Answer> {
  return post(url, signed.body, signedHeaders(signed));
}

/** A webhook body as Dodo sends it. */
export function eventBody(type: string, data: Record<string, unknown>, timestamp = new Date()): string {
  return JSON.stringify({ business_id: 'bus_test', type, timestamp: timestamp.toISOString(), data });
}

/**
 * A meter of `eventName` (sum of `tokens`) billing `rate` meter units per credit of the
 * entitlement, on a $0 usage plan the customer is subscribed to (a mandate only: no payment, one
 * `subscription.active` webhook) — how Dodo's meters deduct credits.
 */
export function meterFor(
  emulator: DodoEmulator,
  input: { entitlementId: string; customerId: string; eventName: string; rate: string },
) {
  const meter = emulator.createMeter({ eventName: input.eventName });
  const plan = emulator.createUsagePlan({
    creditEntitlementId: input.entitlementId,
    meters: [{ meterId: meter.id, meterUnitsPerCredit: input.rate }],
  });
  const subscription = emulator.subscribe(input.customerId, plan.product_id, { onDemand: 'mandate' });
  return { meter, plan, subscription };
}

export function startEmulator(options: DodoEmulatorOptions = {}): Promise<DodoEmulator> {
  return createDodoEmulator({ webhookRetry: FAST_RETRY, meterDelayMs: 0, ...options });
}

/** A store under test and, for Redis, a second store on the same keys (another process). */
export interface StoreKind {
  name: string;
  open(now?: () => number): Promise<{ store: BillingStore; peer?: () => Promise<BillingStore> }>;
}

/** MemoryStore always; RedisStore (random prefix, own clients) when Redis is available. */
export function storeKinds(redisUrl: string | undefined): { kinds: StoreKind[]; cleanup(): Promise<void> } {
  const clients: Redis[] = [];
  const prefixes: string[] = [];
  const redisStore = async (prefix: string, now?: () => number) => {
    const client = new Redis(redisUrl as string, { maxRetriesPerRequest: 1 });
    clients.push(client);
    await whenReady(client);
    return new RedisStore({ client, prefix, now });
  };
  const kinds: StoreKind[] = [
    { name: 'MemoryStore', open: async (now) => ({ store: new MemoryStore({ now }) }) },
  ];
  if (redisUrl) {
    kinds.push({
      name: 'RedisStore',
      open: async (now) => {
        const prefix = `elb-test:dodo-webhooks:${randomUUID()}:`;
        prefixes.push(prefix);
        return { store: await redisStore(prefix, now), peer: () => redisStore(prefix, now) };
      },
    });
  }
  return {
    kinds,
    async cleanup() {
      const [first] = clients;
      if (first) for (const prefix of prefixes) await deleteKeysWithPrefix(first, prefix);
      await Promise.all(clients.map((client) => client.quit()));
    },
  };
}

/** A promise and its resolver, to hold a handler until a test lets it go. */
export function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

export const quietLogger = { info() {}, warn() {}, error() {}, debug() {} };
