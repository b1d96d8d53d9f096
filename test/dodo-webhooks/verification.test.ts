import { request as httpRequest } from 'node:http';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { keepRawBody } from '../../src/dodo-webhooks/index.js';
import type { Logger } from '../../src/logger.js';
import { MemoryStore } from '../../src/store/memory.js';
import { generateWebhookKey } from '../../src/testing/dodo-emulator/options.js';
import type { DodoEmulator } from '../../src/testing/index.js';
import { recordingLogger } from '../support/billing-app.js';
import { type Received, startReceiver } from '../testing/webhook-receiver.js';
import {
  eventBody,
  post,
  postSigned,
  quietLogger,
  type Running,
  replayHeaders,
  signedHeaders,
  startEmulator,
  startWebhookApp,
} from './support.js';

const KIB = 1024;

describe('dodoWebhooks: Standard Webhooks verification over the raw bytes', () => {
  let dodo: DodoEmulator | undefined;
  let app: (Running & { webhookUrl: string }) | undefined;
  let receiver: Awaited<ReturnType<typeof startReceiver>> | undefined;

  afterEach(async () => {
    await dodo?.close();
    await app?.close();
    await receiver?.close();
    dodo = app = receiver = undefined;
  });

  /** An app whose only side effects are a MemoryStore and a recording handler for every type. */
  async function start(
    options: { webhookKey?: string | string[]; maxBodyBytes?: number; logger?: Logger } = {},
    before?: Parameters<typeof startWebhookApp>[1],
  ) {
    const store = new MemoryStore();
    const calls: { type: string; event: unknown; webhookId: string }[] = [];
    const record = (type: string) => (event: unknown, webhookId: string) => {
      calls.push({ type, event, webhookId });
    };
    dodo ??= await startEmulator({ webhookRetry: [20] });
    app = await startWebhookApp(
      {
        store,
        webhookKey: options.webhookKey ?? dodo.webhookKey,
        maxBodyBytes: options.maxBodyBytes,
        logger: options.logger ?? quietLogger,
        on: {
          'credit.added': record('credit.added'),
          'payment.succeeded': record('payment.succeeded'),
          'custom.event': record('custom.event'),
        },
      },
      before,
    );
    dodo.setWebhookUrl(app.webhookUrl);
    const entitlementId = dodo.createCreditEntitlement().id;
    const customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    return { store, calls, entitlementId, customerId, dodo, app };
  }

  /** Captures the emulator's real signed deliveries instead of sending them to the app. */
  async function capture(emulator: DodoEmulator): Promise<Received[]> {
    receiver = await startReceiver();
    emulator.setWebhookUrl(receiver.url);
    return receiver.received;
  }

  const statuses = (emulator: DodoEmulator) =>
    emulator.webhookDeliveries().map((delivery) => delivery.status);

  it('accepts a delivery signed by the emulator and hands the verified, parsed event to the handler', async () => {
    const { calls, entitlementId, customerId, dodo, store } = await start();
    dodo.addCredits(customerId, entitlementId, '12.5');
    const [sent] = await dodo.waitForWebhooks({ type: 'credit.added' });
    expect(statuses(dodo)).toEqual([200]);
    expect(calls).toEqual([{ type: 'credit.added', event: sent?.payload, webhookId: sent?.webhookId }]);
    expect((await store.getBalance(customerId))?.balance).toBe(12_500_000_000_000n / 100n);
  });

  it('refuses a delivery signed with another secret: 401 on every attempt, nothing runs', async () => {
    dodo = await startEmulator({ webhookRetry: [20] });
    const { calls, entitlementId, customerId, store } = await start({ webhookKey: generateWebhookKey() });
    dodo.addCredits(customerId, entitlementId, '5');
    await dodo.settle();
    expect(statuses(dodo)).toEqual([401, 401]);
    expect(dodo.webhookEvents().at(-1)?.status).toBe('failed');
    expect(calls).toEqual([]);
    expect(await store.getBalance(customerId)).toBeUndefined();

    const answer = await postSigned(app!.webhookUrl, {
      secret: generateWebhookKey(),
      body: eventBody('custom.event', { x: 1 }),
    });
    expect(answer).toEqual({
      status: 401,
      body: {
        error: { code: 'invalid_webhook_signature', message: expect.stringMatching(/No matching signature/) },
      },
    });
    expect(calls).toEqual([]);
  });

  it("names a wrong secret once in the app's log, at warn, with the fix — not once per delivery", async () => {
    dodo = await startEmulator({ webhookRetry: [20, 20, 20] });
    const logger = recordingLogger();
    const { entitlementId, customerId } = await start({ webhookKey: generateWebhookKey(), logger });
    dodo.addCredits(customerId, entitlementId, '5');
    dodo.addCredits(customerId, entitlementId, '6');
    await dodo.settle();
    expect(statuses(dodo)).toEqual(Array(8).fill(401));
    expect(logger.lines).toEqual([
      {
        level: 'warn',
        message: expect.stringMatching(
          /refused a delivery with 401 \(invalid_webhook_signature\): .*signing secret \(whsec_…\) from Dodo's dashboard/,
        ),
        details: expect.objectContaining({ webhookId: expect.stringMatching(/^msg_/) }),
      },
    ]);
    // Once a delivery verifies, a secret that breaks again later (a rotation) is named again.
    const good = await postSigned(app!.webhookUrl, {
      secret: dodo.webhookKey,
      body: eventBody('custom.event', {}),
    });
    expect(good.status).toBe(401); // the app holds only the wrong secret
    await app!.close();
    const rotated = await start({ webhookKey: [generateWebhookKey(), dodo.webhookKey], logger });
    await postSigned(rotated.app.webhookUrl, {
      secret: generateWebhookKey(),
      body: eventBody('custom.event', {}),
    });
    await postSigned(rotated.app.webhookUrl, {
      secret: dodo.webhookKey,
      body: eventBody('custom.event', {}),
    });
    await postSigned(rotated.app.webhookUrl, {
      secret: generateWebhookKey(),
      body: eventBody('custom.event', {}),
    });
    await postSigned(rotated.app.webhookUrl, {
      secret: generateWebhookKey(),
      body: eventBody('custom.event', {}),
    });
    expect(logger.lines.filter((line) => /invalid_webhook_signature/.test(line.message))).toHaveLength(3);
    // Strangers' requests without signature headers are not a misconfiguration: not logged.
    await post(rotated.app.webhookUrl, eventBody('custom.event', {}), { 'content-type': 'application/json' });
    expect(logger.lines).toHaveLength(3);
  });

  it('refuses the body of a real delivery re-serialised after signing (spaces, key order)', async () => {
    const { calls, entitlementId, customerId, dodo, app, store } = await start();
    const received = await capture(dodo);
    dodo.addCredits(customerId, entitlementId, '7');
    await dodo.waitForWebhooks({ type: 'credit.added' });
    const [delivery] = received;
    const headers = replayHeaders(delivery as Received);
    const parsed = JSON.parse(delivery?.body as string) as Record<string, unknown>;
    const reordered = JSON.stringify(Object.fromEntries(Object.entries(parsed).reverse()));
    for (const body of [JSON.stringify(parsed, null, 2), reordered, `${delivery?.body} `]) {
      const answer = await post(app.webhookUrl, body, headers);
      expect(answer.status).toBe(401);
      expect(answer.body?.error?.code).toBe('invalid_webhook_signature');
    }
    expect(calls).toEqual([]);
    expect(await store.getBalance(customerId)).toBeUndefined();
    // The untouched bytes of the same delivery still verify: the id was never claimed.
    expect((await post(app.webhookUrl, delivery?.body as string, headers)).status).toBe(200);
    expect(calls).toHaveLength(1);
    expect((await store.getBalance(customerId))?.balance).toBe((7n * 10n ** 12n) / 100n);
  });

  it('refuses stale and future timestamps (5-minute tolerance), from the emulator and signed directly', async () => {
    // An emulator whose clock is 6 minutes behind signs every delivery with a stale timestamp.
    dodo = await startEmulator({ webhookRetry: [20], now: () => Date.now() - 6 * 60_000 });
    const { calls, entitlementId, customerId, store } = await start();
    dodo.addCredits(customerId, entitlementId, '5');
    await dodo.settle();
    expect(statuses(dodo)).toEqual([401, 401]);
    expect(calls).toEqual([]);
    expect(await store.getBalance(customerId)).toBeUndefined();

    const secret = dodo.webhookKey;
    const body = eventBody('custom.event', { x: 1 });
    for (const offsetMs of [-6 * 60_000, 6 * 60_000, -60 * 60_000]) {
      const answer = await postSigned(app!.webhookUrl, {
        secret,
        body,
        timestamp: new Date(Date.now() + offsetMs),
      });
      expect(answer.status).toBe(401);
      expect(answer.body?.error?.code).toBe('webhook_timestamp_out_of_tolerance');
      expect(answer.body?.error?.message).toMatch(offsetMs < 0 ? /too old/ : /too new/);
    }
    expect(calls).toEqual([]);
    for (const offsetMs of [-4 * 60_000, 4 * 60_000]) {
      const answer = await postSigned(app!.webhookUrl, {
        secret,
        body,
        timestamp: new Date(Date.now() + offsetMs),
      });
      expect(answer.status).toBe(200);
    }
    expect(calls).toHaveLength(2);
  });

  it('refuses a delivery missing any of the three headers with 400 naming it', async () => {
    const { calls, dodo, app } = await start();
    const body = eventBody('custom.event', { x: 1 });
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const answer = await postSigned(app.webhookUrl, {
        secret: dodo.webhookKey,
        body,
        headers: { [name]: undefined },
      });
      expect(answer.status).toBe(400);
      expect(answer.body?.error?.code).toBe('missing_webhook_headers');
      expect(answer.body?.error?.message).toContain(`\`${name}\``);
    }
    const unsigned = await post(app.webhookUrl, body, { 'content-type': 'application/json' });
    expect(unsigned.status).toBe(400);
    expect(calls).toEqual([]);
  });

  it('verifies with any secret of a rotation: the old one Dodo still signs with, and the new one', async () => {
    dodo = await startEmulator();
    const oldKey = dodo.webhookKey;
    const newKey = generateWebhookKey();
    const { calls, entitlementId, customerId } = await start({ webhookKey: [newKey, oldKey] });
    dodo.addCredits(customerId, entitlementId, '3');
    await dodo.waitForWebhooks({ type: 'credit.added' });
    expect(statuses(dodo)).toEqual([200]);
    const body = eventBody('custom.event', { x: 1 });
    expect((await postSigned(app!.webhookUrl, { secret: newKey, body })).status).toBe(200);
    expect((await postSigned(app!.webhookUrl, { secret: generateWebhookKey(), body })).status).toBe(401);
    expect(calls.map((call) => call.type)).toEqual(['credit.added', 'custom.event']);
  });

  it('takes the secret from the dodo client when webhookKey is not given', async () => {
    dodo = await startEmulator();
    const emulator = dodo;
    const calls: string[] = [];
    app = await startWebhookApp({
      store: new MemoryStore(),
      dodo: emulator.client(),
      logger: quietLogger,
      on: { 'credit.added': (event) => void calls.push(event.data.amount) },
    });
    emulator.setWebhookUrl(app.webhookUrl);
    const entitlementId = emulator.createCreditEntitlement().id;
    const customerId = emulator.createCustomer({ email: 'bo@example.com' }).customer_id;
    emulator.addCredits(customerId, entitlementId, '4');
    await emulator.waitForWebhooks({ type: 'credit.added' });
    expect(calls).toEqual(['4']);
  });

  it('answers 413 beyond 256 KiB by default (declared or chunked) and honours maxBodyBytes', async () => {
    const { calls, dodo, app } = await start();
    const secret = dodo.webhookKey;
    const padded = (bytes: number) => {
      const base = eventBody('custom.event', { pad: '' });
      return eventBody('custom.event', { pad: 'x'.repeat(bytes - base.length) });
    };
    const atLimit = padded(256 * KIB);
    expect(Buffer.byteLength(atLimit)).toBe(256 * KIB);
    expect((await postSigned(app.webhookUrl, { secret, body: atLimit })).status).toBe(200);
    const over = padded(256 * KIB + 1);
    const answer = await postSigned(app.webhookUrl, { secret, body: over });
    expect(answer).toEqual({
      status: 413,
      body: { error: { code: 'webhook_body_too_large', message: expect.stringContaining('262144 bytes') } },
    });

    // Without content-length (chunked), the limit is enforced while reading.
    const headers = signedHeaders({ secret, body: over });
    const status = await new Promise<number>((resolve, reject) => {
      const request = httpRequest(app.webhookUrl, { method: 'POST', headers }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('error', reject);
      for (let offset = 0; offset < over.length; offset += 16 * KIB)
        request.write(over.slice(offset, offset + 16 * KIB));
      request.end();
    });
    expect(status).toBe(413);
    expect(calls).toHaveLength(1);

    await app.close();
    const small = await startWebhookApp({ store: new MemoryStore(), webhookKey: secret, maxBodyBytes: 200 });
    try {
      expect((await postSigned(small.webhookUrl, { secret, body: padded(201) })).status).toBe(413);
      expect((await postSigned(small.webhookUrl, { secret, body: padded(200) })).status).toBe(200);
    } finally {
      await small.close();
    }
  });

  it('answers 500 with how to mount it when express.json() ran first — never a 401 blaming the signature', async () => {
    const { calls, entitlementId, customerId, dodo, store } = await start({}, (app) =>
      app.use(express.json()),
    );
    dodo.addCredits(customerId, entitlementId, '5');
    await dodo.settle();
    expect(statuses(dodo)).toEqual([500, 500]);
    const answer = await postSigned(app!.webhookUrl, {
      secret: dodo.webhookKey,
      body: eventBody('custom.event', { x: 1 }),
    });
    expect(answer.status).toBe(500);
    expect(answer.body?.error?.code).toBe('webhook_body_already_parsed');
    expect(answer.body?.error?.message).toMatch(/before `express\.json\(\)`/);
    expect(answer.body?.error?.message).toMatch(/keepRawBody/);
    expect(calls).toEqual([]);
    expect(await store.getBalance(customerId)).toBeUndefined();
  });

  it("names a body parser mounted first once in the app's log, at warn, with the fix", async () => {
    const logger = recordingLogger();
    const { entitlementId, customerId, dodo } = await start({ logger }, (app) => app.use(express.json()));
    for (let i = 0; i < 3; i += 1) dodo.addCredits(customerId, entitlementId, '5');
    await dodo.settle();
    expect(statuses(dodo)).toEqual(Array(6).fill(500));
    expect(logger.lines).toEqual([
      {
        level: 'warn',
        message: expect.stringMatching(
          /500 \(webhook_body_already_parsed\): .*before `express\.json\(\)`.*keepRawBody/,
        ),
        details: expect.any(Object),
      },
    ]);
  });

  it('verifies behind a global express.json({ verify: keepRawBody }) and behind express.raw()', async () => {
    const first = await start({}, (app) => app.use(express.json({ verify: keepRawBody })));
    first.dodo.addCredits(first.customerId, first.entitlementId, '5');
    await first.dodo.waitForWebhooks({ type: 'credit.added' });
    expect(statuses(first.dodo)).toEqual([200]);
    expect(first.calls.map((call) => call.type)).toEqual(['credit.added']);
    // The kept bytes are what is verified: a tampered body still fails.
    const tampered = await post(
      first.app.webhookUrl,
      eventBody('custom.event', { x: 2 }),
      signedHeaders({
        secret: first.dodo.webhookKey,
        body: eventBody('custom.event', { x: 1 }),
      }),
    );
    expect(tampered.status).toBe(401);
    await first.app.close();

    const raw = await start({}, (app) => app.use(express.raw({ type: '*/*' })));
    raw.dodo.addCredits(raw.customerId, raw.entitlementId, '5');
    await raw.dodo.waitForWebhooks({ type: 'credit.added', count: 2 });
    expect(raw.calls.map((call) => call.type)).toEqual(['credit.added']);
  });

  it('applies maxBodyBytes to a body another parser already read', async () => {
    const { dodo, app, calls } = await start({ maxBodyBytes: 200 }, (app) =>
      app.use(express.raw({ type: '*/*', limit: '1mb' })),
    );
    const body = eventBody('custom.event', { pad: 'x'.repeat(400) });
    const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, body });
    expect(answer.status).toBe(413);
    expect(calls).toEqual([]);
  });

  it('refuses a validly signed body that is not a Dodo event with 400, not as a bad signature', async () => {
    const { dodo, app, calls } = await start();
    for (const body of ['not json', '{"data":{}}', '[]']) {
      const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, body });
      expect(answer.status).toBe(400);
      expect(answer.body?.error?.code).toBe('malformed_webhook_body');
    }
    expect(calls).toEqual([]);
  });

  it('answers 2xx to verified types it has no effect or handler for, prototype names included', async () => {
    const { dodo, app } = await start();
    for (const type of ['payout.success', 'brand.new_type', '__proto__', 'constructor', 'toString']) {
      const answer = await postSigned(app.webhookUrl, { secret: dodo.webhookKey, body: eventBody(type, {}) });
      expect([type, answer.status]).toEqual([type, 200]);
    }
  });
});
