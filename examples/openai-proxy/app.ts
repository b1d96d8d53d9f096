import { fileURLToPath } from 'node:url';
import express, { type ErrorRequestHandler, type Express } from 'express';
import { collectDefaultMetrics, Registry } from 'prom-client';
import {
  type Billing,
  createBilling,
  GUIDE_TIERS,
  type PrometheusMetrics,
  prometheusMetrics,
  type Tier,
  trackOpenAI,
  unitsPerCredit,
} from '../../src/index.js';
import { ActivityLog, activityRoute, billingActivity } from './activity.js';
import { AlertLog } from './alert-log.js';
import { apiKeyAuth, apiKeyIdOf, customerIdOf } from './api-keys.js';
import { CREDITS_PER_DOLLAR, METERS, PRICING } from './billing-config.js';
import { accountRoute, balanceRoute, topUpRoute } from './billing-routes.js';
import { chatCompletions, listModels } from './chat.js';
import { createKeyRoute, listKeysRoute } from './key-routes.js';
import { autoRechargeRoute, setAutoRechargeRoute } from './recharge-routes.js';
import { SUMMARY_MODEL, summarizeRoute } from './summarize.js';
import type { Wiring } from './wiring.js';

const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));

/** Body parsing errors and anything unexpected, answered with OpenAI-shaped JSON. */
const jsonErrors: ErrorRequestHandler = (error, _req, res, next) => {
  if (res.headersSent) return next(error);
  const status =
    typeof error?.status === 'number' && error.status >= 400 && error.status < 500 ? error.status : 500;
  if (status === 500) console.error('unhandled error:', error);
  res.status(status).json({
    error: {
      message:
        status === 500 ? 'The proxy had an error while processing your request.' : String(error.message),
      type: status === 500 ? 'server_error' : 'invalid_request_error',
      param: null,
      code: null,
    },
  });
};

/**
 * The proxy: the same routes and middlewares in both modes, built from the wiring.
 *
 * `POST /v1/chat/completions`: api-key auth → `billing.chain()` (tiers, soft caps, credits,
 * metering) → the upstream call. `POST /webhooks/dodo` is mounted before any body parser,
 * because its signature is checked over the raw bytes.
 */
export function buildApp(
  wiring: Wiring,
  options: { tiers?: readonly Tier[] } = {},
): { app: Express; billing: Billing; activity: ActivityLog; metrics: PrometheusMetrics } {
  const tiers = options.tiers ?? GUIDE_TIERS;
  // Prometheus metrics of the billing (llm_billing_*) and of the process, on a registry of this
  // app's own, served at GET /metrics.
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const metrics = prometheusMetrics({ registry });
  const alertLog = new AlertLog();
  const billing = createBilling({
    store: wiring.store,
    dodo: wiring.dodo,
    creditEntitlementId: wiring.creditEntitlementId,
    customerId: customerIdOf,
    budgetKey: apiKeyIdOf, // each API key's own budget, when it has one
    // Below $1, below a tenth of the last top-up, and at 50, 80 and 100 % of a key's budget:
    // shown on the status page.
    alerts: { balanceBelow: ['1.00', { fractionOfLastTopUp: '0.1' }], on: alertLog.record },
    pricing: PRICING,
    creditsPerDollar: CREDITS_PER_DOLLAR,
    meters: METERS,
    webhookKey: wiring.webhookKey,
    metrics,
    // Customers who opt in are recharged on the card their API account keeps (the status page's
    // "Auto-recharge"); what happens is logged here, where an app would email the customer.
    autoRecharge: {
      usagePlanProductId: wiring.usagePlanProductId,
      on: {
        failed: (report) => console.warn(`auto-recharge of ${report.customerId} failed: ${report.reason}`),
        requiresAction: (report) =>
          console.warn(`auto-recharge of ${report.customerId} waits on the customer (${report.paymentId})`),
        monthlyLimit: (report) =>
          console.warn(
            `auto-recharge of ${report.customerId} stopped at its monthly limit ${report.monthlyLimit}`,
          ),
      },
    },
  });
  const auth = apiKeyAuth(wiring.apiKeys);
  // Each customer's recent requests, for the status page (spend per day comes from billing.spend).
  const activity = new ActivityLog({ pricing: PRICING });
  const json = express.json({ limit: '4mb' });
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', 'loopback');

  app.use('/webhooks/dodo', billing.dodoWebhooks());

  // One chain per route: tiers, soft caps, credits and metering, one store round trip to admit
  // and one to settle.
  app.post(
    '/v1/chat/completions',
    json,
    auth,
    billing.chain({
      tierRateLimit: { tiers },
      softCapRouter: Object.keys(wiring.plans).length > 0 && { plans: wiring.plans },
    }),
    activity.track(),
    chatCompletions(wiring.openai),
  );
  // An endpoint of the app's own shape: a tracked client (a copy, so the proxy's calls stay
  // billed from its responses) records each upstream call's usage on the request.
  const tracked = trackOpenAI(wiring.openai.withOptions({}), {
    store: wiring.store,
    pricing: PRICING,
    meters: METERS,
    creditsPerDollar: CREDITS_PER_DOLLAR,
  });
  app.post(
    '/v1/summarize',
    json,
    auth,
    billing.chain({ tierRateLimit: { tiers }, requireCredits: { model: () => SUMMARY_MODEL } }),
    activity.track(),
    summarizeRoute(tracked),
  );
  app.get('/v1/models', auth, listModels(wiring.openai, new Set(Object.keys(PRICING))));
  app.use('/v1', (req, res) => {
    res.status(404).json({
      error: {
        message: `Invalid URL (${req.method} ${req.originalUrl})`,
        type: 'invalid_request_error',
        param: null,
        code: null,
      },
    });
  });

  const sources = {
    store: wiring.store,
    dodo: wiring.dodo,
    creditEntitlementId: wiring.creditEntitlementId,
    perCredit: unitsPerCredit(CREDITS_PER_DOLLAR),
    tiers,
    plans: wiring.plans,
  };
  app.get('/billing/balance', auth, balanceRoute(sources));
  app.get('/billing/activity', auth, activityRoute(billingActivity(billing, activity)));
  app.post('/billing/account', auth, accountRoute(wiring));
  app.post('/billing/top-up', json, auth, topUpRoute(wiring));
  app.get('/billing/keys', auth, listKeysRoute(wiring.apiKeys, billing));
  app.get('/billing/alerts', auth, alertLog.route());
  app.post('/billing/keys', json, auth, createKeyRoute(wiring.apiKeys, billing));
  app.get('/billing/auto-recharge', auth, autoRechargeRoute(billing));
  app.put('/billing/auto-recharge', json, auth, setAutoRechargeRoute(billing));
  app.delete('/billing/auto-recharge', auth, setAutoRechargeRoute(billing));

  // Which parts are real and which stand in: { dodo: 'emulated', upstream: 'mock', store: 'memory' }.
  const parts = Object.fromEntries(Object.entries(wiring.parts).map(([name, part]) => [name, part.kind]));
  // For the operator's Prometheus: put it behind your network's access rules in production.
  app.get('/metrics', metrics.handler());
  app.get('/healthz', async (_req, res) => {
    try {
      res.json({ status: 'ok', parts, outbox: await wiring.store.outboxStats() });
    } catch {
      res.status(503).json({ status: 'unavailable', parts });
    }
  });
  app.use(express.static(PUBLIC_DIR, { index: 'index.html' }));
  app.use(jsonErrors);
  return { app, billing, activity, metrics };
}
