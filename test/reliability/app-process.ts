import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import DodoPayments from 'dodopayments';
import express, { type Request, type Response } from 'express';
import { Redis } from 'ioredis';
import type { BalanceThreshold, BillingAlert } from '../../src/alerts/index.js';
import { createBilling } from '../../src/create-billing.js';
import type { ReconcileOptions } from '../../src/reconcile/options.js';
import { RedisStore } from '../../src/store/redis.js';

/**
 * A billing app in its own process (`billing.chain()`: tiers, credits, metering, on a RedisStore, and a
 * handler answering OpenAI-shaped JSON), forked by the reliability tests so that two instances
 * really race on one Redis and one can really be SIGKILLed. Its port goes to the parent over IPC.
 */
export interface AppProcessConfig {
  redisUrl: string;
  prefix: string;
  dodoBaseURL: string;
  dodoApiKey: string;
  entitlementId: string;
  reservationTtlMs?: number;
  leaseMs?: number;
  flushIntervalMs?: number;
  maxBackoffMs?: number;
  commandTimeoutMs?: number;
  /** Auto-recharge on, and Dodo's webhooks mounted at `/webhooks/dodo` (signed with `webhookKey`). */
  autoRecharge?: { usagePlanProductId: string; webhookKey: string };
  /** The reconciliation job's options (off when absent). */
  reconcile?: ReconcileOptions;
  /**
   * Low-balance alerts on, each sent to the parent (`{ type: 'alert' }`), and Dodo's webhooks
   * mounted at `/webhooks/dodo` (signed with `webhookKey`) so top-ups land.
   */
  alerts?: { balanceBelow: BalanceThreshold[]; webhookKey: string };
}

/** Messages from the app process to its parent. */
export type AppProcessMessage = { type: 'ready'; port: number } | { type: 'alert'; alert: BillingAlert };

const config = JSON.parse(process.argv[2] ?? '{}') as AppProcessConfig;

const client = new Redis(config.redisUrl, { maxRetriesPerRequest: 1 });
client.on('error', () => {});
const store = new RedisStore({
  client,
  prefix: config.prefix,
  commandTimeoutMs: config.commandTimeoutMs ?? 5_000,
});
const billing = createBilling({
  store,
  dodo: new DodoPayments({ bearerToken: config.dodoApiKey, baseURL: config.dodoBaseURL, maxRetries: 0 }),
  creditEntitlementId: config.entitlementId,
  customerId: (req) => req.get('x-customer') || undefined,
  requestId: (req) => req.get('x-test-request-id') ?? randomUUID(),
  budgetKey: (req) => req.get('x-api-key') || undefined,
  pricing: { 'gpt-4o': { input: '2.50', output: '10.00' } },
  creditsPerDollar: 100,
  logger: { warn: () => {}, error: () => {} },
  ...(config.autoRecharge
    ? {
        autoRecharge: { usagePlanProductId: config.autoRecharge.usagePlanProductId },
        webhookKey: config.autoRecharge.webhookKey,
      }
    : {}),
  ...(config.reconcile ? { reconcile: config.reconcile } : {}),
  ...(config.alerts
    ? {
        webhookKey: config.alerts.webhookKey,
        alerts: {
          balanceBelow: config.alerts.balanceBelow,
          on: (alert: BillingAlert) => {
            const message: AppProcessMessage = { type: 'alert', alert };
            process.send?.(message);
          },
        },
      }
    : {}),
});

/** Usage from `x-test-usage: <prompt>,<completion>`; `x-test-delay-ms` holds the request in flight. */
async function completion(req: Request, res: Response): Promise<void> {
  const delayMs = Number(req.get('x-test-delay-ms') ?? 0);
  if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
  const [prompt = 0, completion = 0] = String(req.get('x-test-usage') ?? '0,0')
    .split(',')
    .map(Number);
  res.json({
    id: 'chatcmpl-reliability',
    object: 'chat.completion',
    model: req.body?.model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  });
}

const app = express();
if (config.autoRecharge || config.alerts) app.use('/webhooks/dodo', billing.dodoWebhooks());
app.use(express.json());
app.post(
  '/v1/chat/completions',
  billing.chain({
    // Generous limits: here for the whole admission path, never the reason for a refusal.
    tierRateLimit: { tiers: [{ name: 'all', minSpend: '0', rpm: 1_000_000, tpm: 1_000_000_000 }] },
    requireCredits: {
      dodoTimeoutMs: 5_000,
      ...(config.reservationTtlMs ? { reservationTtlMs: config.reservationTtlMs } : {}),
    },
    meterUsage: {
      flushIntervalMs: config.flushIntervalMs ?? 50,
      maxBackoffMs: config.maxBackoffMs ?? 200,
      ...(config.leaseMs ? { leaseMs: config.leaseMs } : {}),
    },
  }),
  completion,
);
app.post('/__flush', async (_req, res) => {
  try {
    await billing.flush(15_000);
    res.json({ flushed: true });
  } catch (error) {
    res.status(500).json({ flushed: false, error: (error as Error).message });
  }
});

const server = app.listen(0, '127.0.0.1', () => {
  const message: AppProcessMessage = { type: 'ready', port: (server.address() as AddressInfo).port };
  process.send?.(message);
});
// Never outlive the test process that forked it.
process.on('disconnect', () => process.exit(0));
