import type { RequestHandler } from 'express';
import { standaloneContext } from '../chain/context.js';
import { createChain } from '../chain/index.js';
import { resolveSoftCapRouterOptions, type SoftCapRouterOptions } from './options.js';
import { SoftCapStep } from './step.js';

export type { SoftCapPlan, SoftCapRouterOptions, UsageCap } from './options.js';

/**
 * ChatGPT-style soft caps for subscribers: usage in the subscription's current period is
 * counted; past the plan's soft cap the request's model is rewritten to the smaller one (and
 * the response says so in a header) instead of being refused; past an optional hard cap, 429 —
 * enforced atomically with the admission. Customers without an active subscription to a listed
 * plan pass through untouched. A chain of one.
 */
export function softCapRouter(options: Readonly<SoftCapRouterOptions>): RequestHandler {
  const context = standaloneContext(options, 'softCapRouter');
  return createChain(
    context,
    { softCapRouter: new SoftCapStep(resolveSoftCapRouterOptions(options)) },
    'softCapRouter',
  );
}
