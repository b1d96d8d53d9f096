import DodoPayments from 'dodopayments';
import type { SoftCapPlan } from '../../src/index.js';
import { ApiKeys } from './api-keys.js';
import { PLAN_CAPS, type PlanName } from './billing-config.js';
import type { RealDodoConfig } from './config.js';
import type { DodoPart } from './wiring.js';

/**
 * Real Dodo Payments (products, meters and the usage plan set up with `npx express-llm-billing
 * setup`, the webhook endpoint in its dashboard), from the validated environment.
 */
export function wireRealDodo(config: RealDodoConfig): DodoPart {
  const plans: Record<string, SoftCapPlan & { name: PlanName }> = {};
  if (config.plusProductId) plans[config.plusProductId] = { name: 'plus', ...PLAN_CAPS.plus };
  if (config.teamProductId) plans[config.teamProductId] = { name: 'team', ...PLAN_CAPS.team };
  return {
    kind: 'real',
    description: `Dodo Payments, ${config.environment} (DODO_PAYMENTS_API_KEY, …)`,
    dodo: new DodoPayments({
      bearerToken: config.apiKey,
      environment: config.environment,
      webhookKey: config.webhookKey,
    }),
    creditEntitlementId: config.creditEntitlementId,
    usagePlanProductId: config.usagePlanProductId,
    webhookKey: config.webhookKey,
    apiKeys: new ApiKeys(config.apiKeys),
    packs: new Map(Object.entries(config.packs)),
    plans,
    listening: () => {},
    close: async () => {},
  };
}
