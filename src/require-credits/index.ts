import type { RequestHandler } from 'express';
import { standaloneContext } from '../chain/context.js';
import { createChain } from '../chain/index.js';
import { type RequireCreditsOptions, resolveRequireCreditsOptions } from './options.js';
import { CreditStep } from './step.js';

export { charactersOverFour, type TokenEstimator, utf8ByteTokens } from '../estimate/index.js';
export type { RequireCreditsOptions } from './options.js';

/**
 * Before the handler: finds the customer, holds the request's largest possible cost against
 * their credit balance atomically, and admits the request or refuses it (401, 400, 402, 409,
 * 503). The hold is released — or settled by `meterUsage` — when the response ends, however it
 * ends, and expires on its own if the process dies. A chain of one: `billing.chain()` runs it
 * with the other steps in one store round trip.
 */
export function requireCredits(options: Readonly<RequireCreditsOptions>): RequestHandler {
  const context = standaloneContext(options, 'requireCredits');
  return createChain(
    context,
    { requireCredits: new CreditStep(resolveRequireCreditsOptions(options)) },
    'requireCredits',
  );
}
