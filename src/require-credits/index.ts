import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { LRUCache } from 'lru-cache';
import { billingOf, billingOrRefusal, continueWithin, type RequestBilling } from '../billing-context.js';
import { type ReservationPlanner, rememberReservationPlanner } from '../early-reservation.js';
import { ConfigError } from '../errors.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { costOfTokens, displayUsd, type ModelPrice, type Money } from '../money.js';
import { priceOf } from '../options.js';
import type { ReserveResult } from '../store/types.js';
import { BalanceFetcher } from './balance-fetcher.js';
import { requestedMaxOutputTokens } from './estimate.js';
import {
  type RequireCreditsOptions,
  type ResolvedRequireCreditsOptions,
  resolveRequireCreditsOptions,
} from './options.js';

export { charactersOverFour, type TokenEstimator } from './estimate.js';
export type { RequireCreditsOptions } from './options.js';

/**
 * Before the handler: finds the customer, reserves the request's estimated cost against their
 * credit balance atomically, and admits the request or refuses it (401, 400, 402, 503). The
 * reservation is released — or settled by `meterUsage` — when the response ends, however it
 * ends, and expires on its own if the process dies.
 */
export function requireCredits(options: Readonly<RequireCreditsOptions>): RequestHandler {
  const config = resolveRequireCreditsOptions(options);
  const fetcher = new BalanceFetcher({
    store: config.store,
    dodo: config.dodo,
    creditEntitlementId: config.creditEntitlementId,
    perCredit: config.perCredit,
    timeoutMs: config.dodoTimeoutMs,
    logger: config.logger,
  });

  // Customers whose last request a subscription covered: no reservation is sent ahead for them.
  const covered = new LRUCache<string, true>({ max: 100_000 });
  const planner: ReservationPlanner = (req, billing) => {
    if (covered.has(billing.customerId)) return undefined;
    const model = billing.model ?? config.model(req);
    const price = priceOf(config.pricing, model);
    if (!price || model === undefined) return undefined;
    const amount = estimatedCost(config, req, billing, price);
    return { store: config.store, model, amount, ttlMs: config.reservationTtlMs };
  };

  return async function requireCreditsMiddleware(req: Request, res: Response, next: NextFunction) {
    const billing = billingOf(res) ?? (await billingOrRefusal(req, res, next, config));
    if (!billing) return;
    rememberReservationPlanner(req, planner);

    // A subscription covers this request (softCapRouter decided so): no credits are held.
    if (!billing.chargeCredits) {
      covered.set(billing.customerId, true);
      return continueWithin(billing, next);
    }
    covered.delete(billing.customerId);

    const model = billing.model ?? config.model(req);
    const price = priceOf(config.pricing, model);
    if (!price) {
      return sendOpenAIError(
        res,
        400,
        openAIError(
          model === undefined
            ? 'The request does not name a model, so its cost cannot be estimated. Send `model` in the JSON body.'
            : `The model \`${model}\` has no price configured, so it cannot be billed.`,
          'invalid_request_error',
          'model_not_priced',
          'model',
        ),
      );
    }
    billing.model = model;
    const estimate = estimatedCost(config, req, billing, price);
    // Sent ahead by an earlier middleware for this very model and amount: adopted as is.
    const early = billing.earlyReservation;
    const sentAhead =
      early &&
      early.plan.store === config.store &&
      early.plan.model === model &&
      early.plan.amount === estimate
        ? early.result
        : undefined;

    let result: ReserveResult;
    try {
      result = await reserveWithFreshBalance(config, fetcher, billing, estimate, sentAhead);
    } catch (error) {
      if (config.failOpen) {
        config.logger.warn('billing unavailable: admitting the request unreserved (failOpen)', {
          customerId: billing.customerId,
          error,
        });
        return continueWithin(billing, next);
      }
      // A misconfiguration (a wrong creditEntitlementId) was named once, with its fix, when found.
      if (!(error instanceof ConfigError)) {
        config.logger.error('billing unavailable: refusing the request with 503', {
          customerId: billing.customerId,
          error,
        });
      }
      return sendOpenAIError(
        res,
        503,
        openAIError(
          'Billing is temporarily unavailable, so the request cannot be admitted. Please retry shortly.',
          'server_error',
          'billing_unavailable',
        ),
        { 'retry-after': String(config.retryAfterSeconds) },
      );
    }

    if (!result.ok) {
      const available = result.reason === 'insufficient' ? result.available : 0n;
      return refuse(res, config, available, estimate);
    }
    billing.reservation = { id: billing.requestId, amount: estimate };
    if (billing.isEnded) {
      // The client left while the reservation was being made: nothing will settle it.
      config.store.release(billing.customerId, billing.requestId).catch(() => {});
      return;
    }
    return continueWithin(billing, next);
  };
}

/**
 * Reserves against the local view, going to Dodo only when there is no view, when the view was
 * marked stale (a refund), or when a view past its TTL would refuse (a top-up may have happened
 * since). A view past its TTL that admits is refreshed in the background: the hot path never
 * waits on Dodo when it does not have to.
 */
async function reserveWithFreshBalance(
  config: ResolvedRequireCreditsOptions,
  fetcher: BalanceFetcher,
  billing: RequestBilling,
  amount: Money,
  sentAhead: Promise<ReserveResult> | undefined,
): Promise<ReserveResult> {
  const { store, balanceTtlMs, reservationTtlMs, logger } = config;
  const { customerId, requestId } = billing;
  const reserve = () => store.reserve(customerId, requestId, amount, reservationTtlMs);
  const first = await (sentAhead ?? reserve());
  if (!first.ok && first.reason === 'no_balance') {
    await fetcher.refresh(customerId);
    return reserve();
  }
  const syncedAt = 'syncedAt' in first ? first.syncedAt : 0;
  if (syncedAt + balanceTtlMs > store.now()) return first;
  if (syncedAt === 0) {
    // Marked stale (a refund clawed credits back): Dodo is asked before anything is spent.
    if (first.ok) await store.release(customerId, requestId);
    await fetcher.refresh(customerId);
    return reserve();
  }
  if (first.ok) {
    fetcher
      .refresh(customerId)
      .catch((error) => logger.warn('background balance refresh failed', { customerId, error }));
    return first;
  }
  try {
    await fetcher.refresh(customerId);
  } catch (error) {
    // Dodo is down, but the local view already answers: refuse on it rather than fail.
    logger.warn('balance refresh before a refusal failed; refusing on the local view', { customerId, error });
    return first;
  }
  return reserve();
}

/** The request's estimated cost: its prompt's tokens, and the output it may generate. */
function estimatedCost(
  config: ResolvedRequireCreditsOptions,
  req: Request,
  billing: RequestBilling,
  price: ModelPrice,
): Money {
  const inputTokens = config.estimateTokens(billing.promptOf(req.body));
  const outputTokens = requestedMaxOutputTokens(req.body) ?? config.defaultMaxOutputTokens;
  billing.estimatedInputTokens = inputTokens;
  return costOfTokens(price, inputTokens, outputTokens).total;
}

function refuse(
  res: Response,
  config: ResolvedRequireCreditsOptions,
  available: Money,
  estimate: Money,
): void {
  const status = config.insufficientStatus;
  const message =
    available > 0n
      ? `You exceeded your current quota: your available credit (${displayUsd(available)}) does not cover this request's estimated cost (${displayUsd(estimate)}). Top up your credits or lower max_tokens.`
      : `You exceeded your current quota: your credit balance is ${displayUsd(available)}. Top up your credits to continue.`;
  // With 429 the `openai` SDK would retry a request that cannot succeed until a top-up.
  const headers: Record<string, string> = status === 429 ? { 'x-should-retry': 'false' } : {};
  sendOpenAIError(res, status, openAIError(message, 'insufficient_quota', 'insufficient_quota'), headers);
}
