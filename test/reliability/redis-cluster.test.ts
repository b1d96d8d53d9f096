import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type DodoPayments from 'dodopayments';
import express from 'express';
import type { Cluster } from 'ioredis';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { parseCredits, parseUsd } from '../../src/money.js';
import { RedisStore } from '../../src/store/redis.js';
import { PRICING, recordingLogger, startDodo, usageFromHeader } from '../support/billing-app.js';
import {
  type RedisClusterForTests,
  requireRedisBinaries,
  startRedisCluster,
  whenReady,
} from '../support/redis.js';
import { CENTS, COST, REQUEST, USAGE } from './support.js';

/*
 * The whole flow on a three-master Redis Cluster started here — reserve, settle, outbox
 * delivery, webhooks, tier limits — for customers whose ids contain braces. Any multi-key
 * script whose keys span slots would fail with CROSSSLOT and surface as a 503 or a logged error.
 *
 * Dodo's own customer ids are `cus_…`, so the emulator cannot hold a customer called `{cus}`.
 * The app sees brace ids anyway: its Dodo client maps them to the emulator's ids on the wire
 * (URLs and JSON in, JSON out), and the webhooks reach the app through a relay that maps the
 * ids back and signs the delivery again with the same secret, id and timestamp.
 */

const canRun = requireRedisBinaries('reliability: Redis Cluster');
const BRACE_IDS = ['{cus}', 'a}{b', 'x{y}z'];

/** Two-way aliases between the app's customer ids and the emulator's. */
class Aliases {
  private readonly pairs: [app: string, dodo: string][] = [];

  add(appId: string, dodoId: string): void {
    this.pairs.push([appId, dodoId]);
  }

  toDodo(text: string): string {
    let out = text;
    for (const [app, dodo] of this.pairs) {
      out = out.replaceAll(`"${app}"`, `"${dodo}"`).replaceAll(`/${encodeURIComponent(app)}`, `/${dodo}`);
    }
    return out;
  }

  toApp(text: string): string {
    let out = text;
    for (const [app, dodo] of this.pairs) out = out.replaceAll(`"${dodo}"`, `"${app}"`);
    return out;
  }

  /** A `fetch` for the Dodo SDK that speaks the emulator's ids on the wire. */
  fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = this.toDodo(input instanceof Request ? input.url : String(input));
    const body = typeof init?.body === 'string' ? this.toDodo(init.body) : init?.body;
    const answer = await fetch(url, { ...init, body });
    const headers = new Headers(answer.headers);
    headers.delete('content-length');
    headers.delete('content-encoding');
    return new Response(this.toApp(await answer.text()), { status: answer.status, headers });
  };
}

/** Relays the emulator's webhooks to `target`, ids mapped, signed again with `secret`. */
async function startWebhookRelay(aliases: Aliases, secret: string, target: () => string): Promise<Server> {
  const signer = new Webhook(secret);
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = aliases.toApp(Buffer.concat(chunks).toString('utf8'));
    const id = String(req.headers['webhook-id']);
    const timestamp = String(req.headers['webhook-timestamp']);
    const answer = await fetch(target(), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': timestamp,
        'webhook-signature': signer.sign(id, new Date(Number(timestamp) * 1000), body),
      },
      body,
    });
    res.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

describe.runIf(canRun)('the whole flow on a 3-master Redis Cluster, customer ids with braces', () => {
  let cluster: RedisClusterForTests;
  let client: Cluster;
  let dodo: Awaited<ReturnType<typeof startDodo>>;
  let relay: Server;
  let appServer: Server;
  let appUrl: string;
  let store: RedisStore;
  let billing: ReturnType<typeof createBilling>;
  const aliases = new Aliases();
  const logger = recordingLogger();

  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = cluster.client();
    await whenReady(client);
    dodo = await startDodo();
    store = new RedisStore({ client, prefix: `elb-reliability:${randomUUID()}:`, commandTimeoutMs: 5_000 });
    const dodoClient: DodoPayments = dodo.emulator.client({ maxRetries: 0, fetch: aliases.fetch });
    billing = createBilling({
      store,
      dodo: dodoClient,
      creditEntitlementId: dodo.entitlementId,
      customerId: (req) => req.get('x-customer') || undefined,
      pricing: PRICING,
      creditsPerDollar: 100,
      webhookKey: dodo.emulator.webhookKey,
      logger,
    });
    const app = express();
    app.use('/webhooks/dodo', billing.dodoWebhooks());
    app.use(express.json());
    app.post(
      '/v1/chat/completions',
      billing.tierRateLimit({
        tiers: [
          { name: 'tier-1', minSpend: '0', rpm: 3 },
          { name: 'tier-2', minSpend: '50', rpm: 10 },
        ],
      }),
      billing.requireCredits({ dodoTimeoutMs: 5_000 }),
      billing.meterUsage({ flushIntervalMs: 20, maxBackoffMs: 100 }),
      usageFromHeader,
    );
    appServer = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => appServer.once('listening', resolve));
    appUrl = `http://127.0.0.1:${(appServer.address() as AddressInfo).port}`;
    relay = await startWebhookRelay(aliases, dodo.emulator.webhookKey, () => `${appUrl}/webhooks/dodo`);
    dodo.emulator.setWebhookUrl(`http://127.0.0.1:${(relay.address() as AddressInfo).port}`);
  }, 60_000);

  afterAll(async () => {
    await billing?.close();
    appServer?.closeAllConnections();
    await new Promise((resolve) => appServer?.close(resolve));
    relay?.closeAllConnections();
    await new Promise((resolve) => relay?.close(resolve));
    await dodo?.emulator.close();
    await cluster?.stop();
  });

  function chat(customer: string): Promise<Response> {
    return fetch(`${appUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-customer': customer,
        'x-test-usage': USAGE.join(','),
      },
      body: JSON.stringify(REQUEST),
    });
  }

  it('pays, unlocks tier 2, spends, settles, delivers and converges for {cus}, a}{b and x{y}z', {
    timeout: 45_000,
  }, async () => {
    const pack = dodo.emulator.createCreditPack({
      name: '$60 of credits',
      price: 6000,
      creditEntitlementId: dodo.entitlementId,
      credits: '6000',
    }).product_id;
    const dodoIds = new Map<string, string>();
    for (const appId of BRACE_IDS) {
      const dodoId = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
      aliases.add(appId, dodoId);
      dodoIds.set(appId, dodoId);
    }

    await Promise.all(
      BRACE_IDS.map(async (appId) => {
        const dodoId = dodoIds.get(appId)!;
        // Tier 1 (3 RPM) before any payment, and no credits yet.
        const unpaid = await chat(appId);
        expect(unpaid.status).toBe(402);
        expect(unpaid.headers.get('x-ratelimit-limit-requests')).toBe('3');
        const session = await dodo.emulator.client({ maxRetries: 0 }).checkoutSessions.create({
          product_cart: [{ product_id: pack, quantity: 1 }],
          customer: { customer_id: dodoId },
        });
        dodo.emulator.completeCheckout(session.session_id);
        await dodo.emulator.waitForWebhooks({
          type: 'credit.added',
          where: (webhook) => JSON.stringify(webhook.payload).includes(dodoId),
          timeoutMs: 10_000,
        });
        expect((await store.getSpend(appId)).spend).toBe(parseUsd('60', 'test'));
      }),
    );

    for (const appId of BRACE_IDS) {
      const statuses: number[] = [];
      for (let i = 0; i < 11; i++) {
        const response = await chat(appId);
        statuses.push(response.status);
        if (i === 0) expect(response.headers.get('x-ratelimit-limit-requests')).toBe('10');
      }
      // 10 RPM in tier 2, one of which the refused request before the payment used.
      expect(statuses).toEqual([...Array(9).fill(200), 429, 429]);
    }

    await billing.flush(15_000);
    await dodo.emulator.settle();
    for (const appId of BRACE_IDS) {
      const dodoId = dodoIds.get(appId)!;
      const events = dodo.emulator.ingestedEvents({ customerId: dodoId });
      expect(events).toHaveLength(18);
      expect(new Set(events.map((event) => event.event_id)).size).toBe(18);
      // credit.deducted webhooks confirm Dodo's deductions: the view converges to Dodo's balance.
      const dodoBalance = parseCredits(dodo.emulator.balance(dodoId, dodo.entitlementId)!, CENTS);
      expect(dodoBalance).toBe(parseUsd('60', 'test') - 9n * COST);
      await expect
        .poll(async () => store.getBalance(appId), { timeout: 10_000 })
        .toMatchObject({ balance: dodoBalance, pending: 0n, reserved: 0n });
    }
    expect(await store.outboxStats()).toMatchObject({ waiting: 0, leased: 0, dead: 0 });
    expect(logger.lines.filter((line) => line.level === 'error')).toEqual([]);
    expect(
      JSON.stringify(logger.lines, (_, value) => (value instanceof Error ? value.message : value)),
    ).not.toMatch(/CROSSSLOT/);
  });
});
