import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import OpenAI from 'openai';
import { dodoWebhooks } from '../../src/dodo-webhooks/index.js';
import type { Logger } from '../../src/logger.js';
import type { BillingStore } from '../../src/store/types.js';
import type { DodoEmulator, MockLLM } from '../../src/testing/index.js';

/** A logger that keeps what it is told, so tests can assert what was logged. */
export function recordingLogger(): Logger & { lines: { level: string; message: string }[] } {
  const lines: { level: string; message: string }[] = [];
  return {
    lines,
    warn: (message) => lines.push({ level: 'warn', message }),
    error: (message) => lines.push({ level: 'error', message }),
  };
}

/** The caller's Dodo customer id is its API key (the app's own authentication). */
export function customerFromApiKey(req: express.Request): string | undefined {
  const header = req.headers.authorization;
  return header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
}

/** A handler that proxies the request to the mock LLM with the `openai` SDK. */
export function proxyTo(llm: MockLLM): RequestHandler {
  const upstream = new OpenAI({ apiKey: 'sk-upstream', baseURL: llm.baseURL, maxRetries: 0 });
  return async function proxy(req, res) {
    const completion = await upstream.chat.completions.create(req.body);
    res.json(completion);
  };
}

export interface RunningApp {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `<url>/v1`, the `openai` client's `baseURL`. */
  baseURL: string;
  /** When each request to the completions route arrived (ms, `performance.now()`). */
  arrivals: number[];
  /** An `openai` client whose API key is the customer id. */
  client(customerId: string, maxRetries?: number): OpenAI;
  close(): Promise<void>;
}

/**
 * A real Express app on an ephemeral port: Dodo's webhooks (verified, applied to `store`) at
 * `/webhooks/dodo`, and `POST /v1/chat/completions` through `chain`, then `handler`.
 */
export async function startApp(options: {
  store: BillingStore;
  dodo?: DodoEmulator;
  chain: RequestHandler[];
  handler: RequestHandler;
  logger?: Logger;
}): Promise<RunningApp> {
  const app = express();
  const arrivals: number[] = [];
  if (options.dodo) {
    app.use(
      '/webhooks/dodo',
      dodoWebhooks({
        store: options.store,
        dodo: options.dodo.client(),
        webhookKey: options.dodo.webhookKey,
        logger: options.logger,
      }),
    );
  }
  app.use(express.json());
  app.post(
    '/v1/chat/completions',
    (_req, _res, next) => {
      arrivals.push(performance.now());
      next();
    },
    ...options.chain,
    options.handler,
  );
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  options.dodo?.setWebhookUrl(`${url}/webhooks/dodo`);
  return {
    url,
    baseURL: `${url}/v1`,
    arrivals,
    client: (customerId, maxRetries = 0) =>
      new OpenAI({ apiKey: customerId, baseURL: `${url}/v1`, maxRetries }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Pays a one-time product of `cents` through a checkout; resolves once its webhooks were applied. */
export async function pay(dodo: DodoEmulator, customerId: string, productId: string): Promise<string> {
  const session = await dodo.client({ maxRetries: 0 }).checkoutSessions.create({
    product_cart: [{ product_id: productId, quantity: 1 }],
    customer: { customer_id: customerId },
  });
  // A one-time product's checkout always pays (only a mandate-only subscription does not).
  const payment = dodo.completeCheckout(session.session_id).payment!;
  await dodo.waitForWebhooks({
    type: 'payment.succeeded',
    where: (webhook) => webhook.payload.data.payment_id === payment.payment_id,
  });
  return payment.payment_id;
}

/** Refunds a payment in full; resolves once `refund.succeeded` was applied. */
export async function refund(dodo: DodoEmulator, paymentId: string): Promise<void> {
  const created = await dodo.client({ maxRetries: 0 }).refunds.create({ payment_id: paymentId });
  await dodo.waitForWebhooks({
    type: 'refund.succeeded',
    where: (webhook) => webhook.payload.data.refund_id === created.refund_id,
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
