import type { Request } from 'express';
import type { RequestBilling } from './billing-context.js';
import type { Money } from './money.js';
import type { BillingStore, ReserveResult } from './store/types.js';

/** What `requireCredits` would reserve for a request, as far as it can tell before it runs. */
export interface ReservationPlan {
  store: BillingStore;
  model: string;
  amount: Money;
  ttlMs: number;
}

/** `requireCredits`' estimate of a request, or `undefined` when it would not reserve ahead. */
export type ReservationPlanner = (req: Request, billing: RequestBilling) => ReservationPlan | undefined;

/** A reservation sent ahead by an earlier middleware, for `requireCredits` to adopt. */
export interface EarlyReservation {
  plan: ReservationPlan;
  /** Settles like `store.reserve`; never an unhandled rejection. */
  result: Promise<ReserveResult>;
}

/**
 * The planner of the `requireCredits` that ran on each Express route. A route (`req.route`, one
 * object per `app.post(path, …)`) runs the same middlewares in the same order on every request,
 * so once `requireCredits` has run on it, the middlewares before it know it will run again.
 */
const plannersByRoute = new WeakMap<object, ReservationPlanner>();

/** Called by `requireCredits` on every request it sees on a route. */
export function rememberReservationPlanner(req: Request, planner: ReservationPlanner): void {
  const route: unknown = req.route;
  if (typeof route === 'object' && route !== null && plannersByRoute.get(route) !== planner) {
    plannersByRoute.set(route, planner);
  }
}

/**
 * Sends the reservation `requireCredits` will make on this route now, together with the store
 * reads of the middleware calling it (`tierRateLimit`, `softCapRouter`): the request's admission
 * then takes one store round trip instead of two. `requireCredits` adopts it when it would
 * reserve the same amount for the same model, reserves again under the same id otherwise (a
 * soft-cap rewrite), and the request's end releases it when nobody adopted it (a 429, a
 * subscriber the plan covers). Middlewares mounted with `app.use`, outside a route, send
 * nothing ahead.
 */
export function sendReservationAhead(req: Request, billing: RequestBilling): void {
  if (billing.earlyReservation || billing.reservation || !billing.chargeCredits) return;
  const route: unknown = req.route;
  if (typeof route !== 'object' || route === null) return;
  const planner = plannersByRoute.get(route);
  if (!planner) return;
  let plan: ReservationPlan | undefined;
  try {
    plan = planner(req, billing);
  } catch {
    // An app's `model` or `estimateTokens` that throws: `requireCredits` meets it itself.
    return;
  }
  if (!plan) return;
  const result = plan.store.reserve(billing.customerId, billing.requestId, plan.amount, plan.ttlMs);
  // Awaited by `requireCredits`, which handles a failure; nobody may await it at all.
  result.catch(() => {});
  billing.earlyReservation = { plan, result };
}
