import type { AddressInfo } from 'node:net';
import type DodoPayments from 'dodopayments';
import express, { type Request, type RequestHandler, type Response } from 'express';
import type { AutoRechargeOptions } from '../../src/auto-recharge/options.js';
import { type Billing, createBilling } from '../../src/create-billing.js';
import type { MeterUsageMiddleware } from '../../src/meter-usage/index.js';
import type { MeterUsageOptions } from '../../src/meter-usage/options.js';
import type { BillingObserver } from '../../src/metrics/observer.js';
import type { RequireCreditsOptions } from '../../src/require-credits/options.js';
import type { BillingStore } from '../../src/store/types.js';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';

/** GPT-4o only: its per-token prices convert to whole meter units per credit (exact in Dodo). */
export const PRICING = {
  'gpt-4o': { input: '2.50', output: '10.00' },
  'gpt-4o-mini': { input: '0.15', output: '0.60' },
};

/** A test logger that keeps what it was told, so tests can assert on it. */
export function recordingLogger() {
  const lines: { level: string; message: string; details?: unknown }[] = [];
  return {
    lines,
    warn: (message: string, details?: Record<string, unknown>) =>
      lines.push({ level: 'warn', message, details }),
    error: (message: string, details?: Record<string, unknown>) =>
      lines.push({ level: 'error', message, details }),
  };
}

/**
 * A Dodo emulator with a fiat credit entitlement (precision 10, as `setup` creates it) and the
 * GPT-4o meters, linked to it on a $0 usage-based plan: Dodo's meters deduct credits only from
 * customers subscribed to that plan, so `customer()` creates one and opens its API account.
 */
export async function startDodo(options: Parameters<typeof createDodoEmulator>[0] = {}) {
  const emulator = await createDodoEmulator({ meterDelayMs: 0, webhookRetry: [20, 50], ...options });
  const entitlement = emulator.createCreditEntitlement({ name: 'USD credits', precision: 10 });
  // Credits are cents: $2.50 per 1M input tokens = 4,000 tokens per cent; $10 per 1M output = 1,000.
  const input = emulator.createMeter({ eventName: 'llm.input_tokens' });
  const output = emulator.createMeter({ eventName: 'llm.output_tokens' });
  const plan = emulator.createUsagePlan({
    creditEntitlementId: entitlement.id,
    meters: [
      { meterId: input.id, meterUnitsPerCredit: '4000' },
      { meterId: output.id, meterUnitsPerCredit: '1000' },
    ],
  });
  /** Subscribes an existing customer to the usage plan (what the sign-up's checkout does). */
  const openAccount = (customerId: string) => emulator.subscribe(customerId, plan.product_id);
  /** A new customer with an open API account. */
  const customer = (input: { email?: string; name?: string } = {}) => {
    const created = emulator.createCustomer({ email: input.email ?? 'ada@example.com', name: input.name });
    openAccount(created.customer_id);
    return created;
  };
  return { emulator, entitlementId: entitlement.id, usagePlanId: plan.product_id, openAccount, customer };
}

export interface BillingAppOptions {
  store: BillingStore;
  emulator: DodoEmulator;
  entitlementId: string;
  /** The route's handler; defaults to an OpenAI-shaped JSON answer with the usage the test asks for. */
  handler?: RequestHandler;
  dodo?: DodoPayments;
  requireCredits?: Partial<RequireCreditsOptions>;
  meterUsage?: Partial<MeterUsageOptions>;
  /** Mounted before the money path (e.g. `dodoWebhooks`). */
  before?: (app: express.Express, billing: Billing) => void;
  /** Middlewares on the route before `requireCredits` (e.g. `tierRateLimit`). */
  admission?: (billing: Billing) => RequestHandler[];
  /** `createBilling({ autoRecharge })`. */
  autoRecharge?: AutoRechargeOptions;
  /** `createBilling({ metrics })`. */
  metrics?: BillingObserver;
}

export interface BillingApp {
  url: string;
  billing: Billing;
  meter: MeterUsageMiddleware;
  logger: ReturnType<typeof recordingLogger>;
  close(): Promise<void>;
  /** Stops listening without flushing: what a crash leaves behind. */
  crash(): Promise<void>;
}

/**
 * Answers like Chat Completions, with `usage` taken from the request's `x-test-usage` header
 * (`"<prompt>,<completion>"`), so each test decides exactly what is billed.
 */
export const usageFromHeader: RequestHandler = (req: Request, res: Response) => {
  const [prompt = 0, completion = 0] = String(req.get('x-test-usage') ?? '0,0')
    .split(',')
    .map(Number);
  res.json({
    id: 'chatcmpl-test',
    object: 'chat.completion',
    model: req.body?.model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  });
};

/** An Express app with `requireCredits` + `meterUsage` on `POST /v1/chat/completions`, customer from `x-customer`. */
export async function startBillingApp(options: BillingAppOptions): Promise<BillingApp> {
  const logger = recordingLogger();
  const dodo = options.dodo ?? options.emulator.client({ maxRetries: 0 });
  const billing = createBilling({
    store: options.store,
    dodo,
    creditEntitlementId: options.entitlementId,
    customerId: (req) => req.get('x-customer') || undefined,
    pricing: PRICING,
    creditsPerDollar: 100,
    logger,
    ...(options.autoRecharge ? { autoRecharge: options.autoRecharge } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
  });
  const app = express();
  options.before?.(app, billing);
  app.use(express.json());
  const meter = billing.meterUsage({ flushIntervalMs: 20, maxBackoffMs: 100, ...options.meterUsage });
  app.post(
    '/v1/chat/completions',
    ...(options.admission?.(billing) ?? []),
    billing.requireCredits({ dodoTimeoutMs: 500, ...options.requireCredits }),
    meter,
    options.handler ?? usageFromHeader,
  );
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const stopListening = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return {
    url,
    billing,
    meter,
    logger,
    close: async () => {
      await stopListening();
      await meter.close();
    },
    crash: async () => {
      await stopListening();
      // The flusher's timer dies with the "process": no flush, no ack of what it claimed.
      meter.stop();
    },
  };
}

/** POSTs a chat completion as `customer`, billed `usage` = [prompt, completion] tokens. */
export function chat(
  app: { url: string },
  customer: string | undefined,
  body: Record<string, unknown>,
  usage?: [number, number],
): Promise<globalThis.Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (customer !== undefined) headers['x-customer'] = customer;
  if (usage) headers['x-test-usage'] = usage.join(',');
  return fetch(`${app.url}/v1/chat/completions`, { method: 'POST', headers, body: JSON.stringify(body) });
}
