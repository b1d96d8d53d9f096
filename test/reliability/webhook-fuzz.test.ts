import { Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import fc from 'fast-check';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dodoWebhooks } from '../../src/dodo-webhooks/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { BillingStore } from '../../src/store/types.js';

/*
 * Seeded fuzzing of the webhook router: random bodies, headers, signatures and timestamps. A
 * delivery is answered 2xx only when it is correctly signed with the key at a fresh timestamp;
 * nothing else ever reaches the store or an `on` handler, and the router never crashes.
 *
 * Unsigned cases go to one router and signed ones to another, each on its own store, so "no
 * side effect" is checked exactly: the unsigned router's store must never be called at all.
 */

const SECRET = `whsec_${Buffer.from('reliability-fuzz-secret-0123456789').toString('base64')}`;
const WRONG_SECRET = `whsec_${Buffer.from('some-other-secret-of-another-app!!').toString('base64')}`;
const MAX_BODY_BYTES = 4096;
const SEED = 20_261_126;
const BATCH = 50;
const BATCHES = 220; // 11,000 cases

const TYPES = [
  'payment.succeeded',
  'refund.succeeded',
  'dispute.lost',
  'credit.added',
  'credit.deducted',
  'credit.manual_adjustment',
  'credit.balance_low',
  'subscription.active',
  'subscription.renewed',
  'subscription.cancelled',
  '__proto__',
  'toString',
];

/** Answers the router may give, by status: the documented ones. */
const DOCUMENTED: Record<number, readonly string[]> = {
  400: ['missing_webhook_headers', 'malformed_webhook_body', 'unreadable_webhook_body'],
  401: ['invalid_webhook_signature', 'webhook_timestamp_out_of_tolerance'],
  409: ['webhook_in_progress'],
  413: ['webhook_body_too_large'],
  503: ['billing_unavailable'],
};

type Kind = 'signed' | 'stale' | 'wrongKey' | 'tampered' | 'random';

interface Case {
  kind: Kind;
  body: Buffer;
  id: string;
  /** Seconds from now of `webhook-timestamp` (signed kinds), or a raw header value. */
  timestamp: number | string;
  /** How a correct signature is broken (`tampered`), or random signature text (`random`). */
  mutation: 'body' | 'id' | 'timestamp' | 'signature';
  signature: string;
  /** Headers left out (`random`). */
  missing: readonly string[];
}

const headerText = fc.stringMatching(/^[\x21-\x7e]{1,60}$/);
const money = fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(null));
const eventData = fc.record(
  {
    customer: fc.oneof(fc.record({ customer_id: fc.oneof(fc.string(), fc.integer()) }), fc.anything()),
    customer_id: fc.oneof(fc.string({ maxLength: 30 }), fc.anything()),
    payment_id: fc.oneof(fc.string({ maxLength: 30 }), fc.integer()),
    refund_id: fc.string({ maxLength: 30 }),
    subscription_id: fc.string({ maxLength: 30 }),
    credit_entitlement_id: fc.string({ maxLength: 30 }),
    total_amount: money,
    amount: money,
    balance_after: money,
    overage_after: money,
    currency: fc.oneof(fc.constantFrom('USD', 'JPY', 'KWD'), fc.string()),
    created_at: fc.oneof(
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.string(),
    ),
    status: fc.string(),
    quantity: fc.oneof(fc.integer(), fc.string()),
  },
  { requiredKeys: [] },
);
const eventBody = fc
  .record({
    business_id: fc.string(),
    type: fc.oneof(fc.constantFrom(...TYPES), fc.string()),
    timestamp: fc.oneof(
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.string(),
    ),
    data: fc.oneof(eventData, fc.anything()),
  })
  .map((event) => JSON.stringify(event));
const body = fc
  .oneof(
    { weight: 5, arbitrary: eventBody },
    { weight: 2, arbitrary: fc.json() },
    { weight: 2, arbitrary: fc.string({ unit: 'binary' }) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: MAX_BODY_BYTES + 1, max: 3 * MAX_BODY_BYTES }).map((n) => 'x'.repeat(n)),
    },
  )
  .map((text) => Buffer.from(text, 'utf8'));
const binaryBody = fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes));

const caseArbitrary: fc.Arbitrary<Case> = fc.record({
  kind: fc.constantFrom<Kind>('signed', 'signed', 'stale', 'wrongKey', 'tampered', 'random', 'random'),
  body: fc.oneof({ weight: 9, arbitrary: body }, { weight: 1, arbitrary: binaryBody }),
  id: fc.oneof(
    fc.uuid().map((uuid) => `msg_${uuid}`),
    fc.constantFrom('msg_dup_1', 'msg_dup_2'),
    headerText,
  ),
  timestamp: fc.oneof(
    fc.integer({ min: -240, max: 240 }),
    fc.integer({ min: 330, max: 10_000_000 }).map((s) => -s),
    fc.integer({ min: 330, max: 10_000_000 }),
    headerText,
  ),
  mutation: fc.constantFrom('body', 'id', 'timestamp', 'signature'),
  signature: fc.oneof(
    headerText,
    fc.base64String({ minLength: 44, maxLength: 44 }).map((sig) => `v1,${sig}`),
    fc
      .array(fc.base64String({ minLength: 44, maxLength: 44 }), { minLength: 2, maxLength: 4 })
      .map((sigs) => sigs.map((sig) => `v1,${sig}`).join(' ')),
  ),
  missing: fc.subarray(['webhook-id', 'webhook-timestamp', 'webhook-signature']),
});

/** Counts every call the router makes on a store (reading the clock aside). */
function spiedStore(): { store: BillingStore; calls: string[] } {
  const calls: string[] = [];
  const target = new MemoryStore();
  const store = new Proxy(target, {
    get(object, property) {
      const value = Reflect.get(object, property, object);
      if (typeof value !== 'function' || property === 'now') return value;
      return (...args: unknown[]) => {
        calls.push(String(property));
        return (value as (...a: unknown[]) => unknown).apply(object, args);
      };
    },
  });
  return { store, calls };
}

function secondsFromNow(offset: number): Date {
  return new Date((Math.floor(Date.now() / 1000) + offset) * 1000);
}

/** The delivery a case makes: the route it goes to, its headers and body. */
function delivery(c: Case): { path: string; headers: Record<string, string>; body: Buffer } {
  const signedAt = typeof c.timestamp === 'number' ? secondsFromNow(c.timestamp) : secondsFromNow(0);
  const freshAt = secondsFromNow(typeof c.timestamp === 'number' ? c.timestamp % 241 : 0);
  const sign = (secret: string, at: Date, payload: Buffer) => new Webhook(secret).sign(c.id, at, payload);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'webhook-id': c.id,
    'webhook-timestamp': String(Math.floor(signedAt.getTime() / 1000)),
  };
  if (c.kind === 'signed') {
    // Correctly signed with the key, within the 5-minute tolerance.
    return {
      path: '/signed',
      headers: {
        ...headers,
        'webhook-timestamp': String(Math.floor(freshAt.getTime() / 1000)),
        'webhook-signature': sign(SECRET, freshAt, c.body),
      },
      body: c.body,
    };
  }
  if (c.kind === 'stale') {
    // Correctly signed, at a time outside the 5-minute tolerance.
    const fresh = typeof c.timestamp === 'number' && Math.abs(c.timestamp) <= 240;
    const staleAt = typeof c.timestamp === 'number' && !fresh ? signedAt : secondsFromNow(-3600);
    return {
      path: '/unsigned',
      headers: {
        ...headers,
        'webhook-timestamp': String(Math.floor(staleAt.getTime() / 1000)),
        'webhook-signature': sign(SECRET, staleAt, c.body),
      },
      body: c.body,
    };
  }
  if (c.kind === 'wrongKey') {
    return {
      path: '/unsigned',
      headers: { ...headers, 'webhook-signature': sign(WRONG_SECRET, signedAt, c.body) },
      body: c.body,
    };
  }
  if (c.kind === 'tampered') {
    const at = secondsFromNow(0);
    const signature = sign(SECRET, at, c.body);
    const tampered = {
      ...headers,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': signature,
    };
    if (c.mutation === 'body')
      return { path: '/unsigned', headers: tampered, body: Buffer.concat([c.body, Buffer.from(' ')]) };
    if (c.mutation === 'id')
      return { path: '/unsigned', headers: { ...tampered, 'webhook-id': `${c.id}x` }, body: c.body };
    if (c.mutation === 'timestamp') {
      return {
        path: '/unsigned',
        headers: { ...tampered, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000) - 1) },
        body: c.body,
      };
    }
    const flipped = signature.endsWith('A') ? `${signature.slice(0, -1)}B` : `${signature.slice(0, -1)}A`;
    return { path: '/unsigned', headers: { ...tampered, 'webhook-signature': flipped }, body: c.body };
  }
  const random: Record<string, string> = {
    ...headers,
    'webhook-timestamp': String(c.timestamp),
    'webhook-signature': c.signature,
  };
  for (const name of c.missing) delete random[name];
  return { path: '/unsigned', headers: random, body: c.body };
}

interface Answer {
  status: number;
  body: string;
}

describe('dodoWebhooks under seeded fuzzing', () => {
  const unsigned = spiedStore();
  const signed = spiedStore();
  const unsignedHandlerCalls: string[] = [];
  const handlerOn = (calls: string[]) =>
    Object.fromEntries(
      TYPES.filter((type) => !type.startsWith('_') && type !== 'toString').map((type) => [
        type,
        () => void calls.push(type),
      ]),
    );
  let server: ReturnType<express.Express['listen']>;
  let port: number;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });

  beforeAll(async () => {
    const app = express();
    const options = {
      webhookKey: SECRET,
      maxBodyBytes: MAX_BODY_BYTES,
      logger: { warn: () => {}, error: () => {} },
    };
    app.use(
      '/unsigned',
      dodoWebhooks({ ...options, store: unsigned.store, on: handlerOn(unsignedHandlerCalls) }),
    );
    app.use('/signed', dodoWebhooks({ ...options, store: signed.store, on: handlerOn([]) }));
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    agent.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function send(path: string, headers: Record<string, string>, payload: Buffer): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const outgoing = request(
        {
          host: '127.0.0.1',
          port,
          path,
          method: 'POST',
          agent,
          headers: { ...headers, 'content-length': payload.length },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
          );
          response.on('error', reject);
        },
      );
      outgoing.on('error', reject);
      outgoing.end(payload);
    });
  }

  it(`answers ${BATCH * BATCHES} random deliveries: 2xx only when correctly signed and fresh, no side effect otherwise`, {
    timeout: 50_000,
  }, async () => {
    const seen: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(fc.array(caseArbitrary, { minLength: BATCH, maxLength: BATCH }), async (cases) => {
        const answers = await Promise.all(
          cases.map(async (c) => {
            const { path, headers, body } = delivery(c);
            return { path, answer: await send(path, headers, body) };
          }),
        );
        for (const { path, answer } of answers) {
          const parsed = JSON.parse(answer.body) as { received?: boolean; error?: { code?: string } };
          const code = parsed.error?.code ?? 'received';
          seen[`${path} ${answer.status} ${code}`] = (seen[`${path} ${answer.status} ${code}`] ?? 0) + 1;
          if (answer.status >= 200 && answer.status < 300) {
            expect(path).toBe('/signed');
            expect(parsed.received).toBe(true);
          } else {
            expect(DOCUMENTED[answer.status]).toContain(code);
          }
          if (path === '/unsigned') expect([400, 401, 413]).toContain(answer.status);
        }
        expect(unsigned.calls).toEqual([]);
        expect(unsignedHandlerCalls).toEqual([]);
      }),
      { seed: SEED, numRuns: BATCHES, endOnFailure: true },
    );
    // The run covered both sides: signed deliveries applied, and every kind of refusal.
    const total = (filter: (key: string) => boolean) =>
      Object.entries(seen)
        .filter(([key]) => filter(key))
        .reduce((sum, [, count]) => sum + count, 0);
    expect(total(() => true)).toBe(BATCH * BATCHES);
    expect(total((key) => key.startsWith('/signed 200'))).toBeGreaterThan(500);
    expect(signed.calls.length).toBeGreaterThan(500);
    for (const code of [
      'missing_webhook_headers',
      'invalid_webhook_signature',
      'webhook_timestamp_out_of_tolerance',
      'webhook_body_too_large',
    ]) {
      expect(total((key) => key.startsWith('/unsigned') && key.endsWith(code))).toBeGreaterThan(50);
    }
  });
});
