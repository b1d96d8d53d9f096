import DodoPayments from 'dodopayments';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { RedisStore, type SoftCapPlan } from '../../src/index.js';
import { ApiKeys } from './api-keys.js';
import { PLAN_CAPS, type PlanName } from './billing-config.js';
import { ExampleConfigError, type RealConfig } from './config.js';
import type { Wiring } from './wiring.js';

/**
 * Real Dodo Payments (products, meters and the webhook endpoint are set up in its dashboard),
 * a real OpenAI-compatible upstream and Redis, from the validated environment.
 */
export async function wireReal(config: RealConfig): Promise<Wiring> {
  const redis = new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const quiet = () => {}; // the failed connect() below reports the startup error itself
  redis.on('error', quiet);
  try {
    await redis.connect();
    redis.off('error', quiet);
    redis.on('error', (error: Error) => console.error(`Redis: ${error.message}`));
  } catch (error) {
    redis.disconnect();
    throw new ExampleConfigError('REDIS_URL', `Redis does not answer: ${(error as Error).message}`);
  }
  const plans: Record<string, SoftCapPlan & { name: PlanName }> = {};
  if (config.dodo.plusProductId) plans[config.dodo.plusProductId] = { name: 'plus', ...PLAN_CAPS.plus };
  if (config.dodo.teamProductId) plans[config.dodo.teamProductId] = { name: 'team', ...PLAN_CAPS.team };
  return {
    mode: 'real',
    store: new RedisStore({ client: redis }),
    dodo: new DodoPayments({
      bearerToken: config.dodo.apiKey,
      environment: config.dodo.environment,
      webhookKey: config.dodo.webhookKey,
    }),
    creditEntitlementId: config.dodo.creditEntitlementId,
    webhookKey: config.dodo.webhookKey,
    openai: new OpenAI({ apiKey: config.openai.apiKey, baseURL: config.openai.baseURL }),
    apiKeys: new ApiKeys(config.apiKeys),
    packs: new Map(Object.entries(config.dodo.packs)),
    plans,
    publicUrl: config.publicUrl,
    listening: () => {},
    close: async () => {
      redis.disconnect();
    },
  };
}
