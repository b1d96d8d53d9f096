import DodoPayments from 'dodopayments';
import express from 'express';
import { createBilling, GUIDE_TIERS, MemoryStore, weightedMeters } from 'express-llm-billing';
import { authenticate, completions } from './your-app.js'; // your API-key check and your proxy

export const billing = createBilling({
  store: new MemoryStore(), // new RedisStore({ client }) when several processes share customers
  dodo: new DodoPayments(), // reads DODO_PAYMENTS_API_KEY, DODO_PAYMENTS_WEBHOOK_KEY (and _BASE_URL)
  creditEntitlementId: process.env.DODO_CREDIT_ENTITLEMENT_ID!, // printed by `setup`
  customerId: (req) => req.res?.locals.customerId, // from your authentication, never the body
  pricing: {
    'gpt-4o': { input: '2.50', output: '10.00' }, // USD per 1M tokens
    'gpt-4o-mini': { input: '0.15', output: '0.60' },
  },
  creditsPerDollar: 100, // credits are cents
  meters: weightedMeters(), // Dodo deducts each model at its own price, as `setup` configures
});

export const app = express();
app.use('/webhooks/dodo', billing.dodoWebhooks()); // before express.json(): it verifies raw bytes
app.post(
  '/v1/chat/completions',
  express.json(),
  authenticate, // sets res.locals.customerId
  billing.chain({ tierRateLimit: { tiers: GUIDE_TIERS } }), // tiers, credits, metering
  completions, // forwards req.body upstream, answers its JSON or SSE: billed without your help
);
process.on('SIGTERM', () => billing.close()); // delivers queued usage events to Dodo
