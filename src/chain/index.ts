import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { AutoRecharger } from '../auto-recharge/index.js';
import { billingOf, continueWithin, type RequestBilling } from '../billing-context.js';
import { setBudgetHeaders } from '../budget-headers.js';
import type { RequestEstimate } from '../estimate/index.js';
import { openAIError, refusalOf, sendOpenAIError } from '../http/openai-error.js';
import type { Logger } from '../logger.js';
import type { MeterStep } from '../meter-usage/step.js';
import type { BillingObserver } from '../metrics/observer.js';
import type { RequestSettings } from '../request-settings.js';
import type { CreditStep } from '../require-credits/step.js';
import type { SoftCapStep } from '../soft-cap-router/step.js';
import { budgetPeriods } from '../store/budget-period.js';
import type {
  Admission,
  AdmissionResult,
  BillingStore,
  BudgetOutcome,
  CreditOutcome,
} from '../store/types.js';
import type { TierCounts, TierStep } from '../tier-rate-limit/step.js';
import { answeredBadRequest, checkSameSettings, openBilling } from './open.js';

/** The steps one chain runs for a request, in this order: tier, soft cap, credits, metering. */
export interface ChainSteps {
  tierRateLimit?: TierStep | undefined;
  softCapRouter?: SoftCapStep | undefined;
  requireCredits?: CreditStep | undefined;
  meterUsage?: MeterStep | undefined;
}

type StepName = keyof ChainSteps;
const STEP_NAMES: readonly StepName[] = ['tierRateLimit', 'softCapRouter', 'requireCredits', 'meterUsage'];

/** What every chain of one `createBilling` (or one standalone middleware) shares. */
export interface ChainContext {
  /** The per-request settings, read at each request (they are final once the app starts). */
  settings(): RequestSettings;
  store: BillingStore;
  logger: Logger;
  /** Told the available balance each admission leaves, when auto-recharge is on. */
  recharger?: AutoRecharger | undefined;
  /** Told admissions, refusals and holds; `undefined` when no `metrics` is set. */
  metrics?: Required<BillingObserver> | undefined;
}

/** Requests whose admission was reported, so that two chains on one request report it once. */
const reportedAdmissions = new WeakSet<RequestBilling>();

/** Reports the answer the chain gave instead of the handler (a refusal), if it gave one. */
function reportRefusal(metrics: Required<BillingObserver> | undefined, res: Response): void {
  if (!metrics) return;
  const reason = refusalOf(res);
  if (reason !== undefined) metrics.refused(reason, res.statusCode);
}

/** Reports an admitted request and what it holds, once per request. */
function reportAdmission(metrics: Required<BillingObserver>, billing: RequestBilling): void {
  if (reportedAdmissions.has(billing)) return;
  reportedAdmissions.add(billing);
  metrics.admitted(billing.model);
  const held = billing.reservation?.amount;
  if (held !== undefined && held > 0n) metrics.reserved(billing.model, held);
}

/** A re-admission found the request id taken by another request meanwhile. */
class DuplicateRequest extends Error {
  constructor(readonly duplicate: 'in_flight' | 'settled') {
    super(`request id ${duplicate}`);
  }
}

/** A re-admission found the key's budget spent meanwhile. */
class BudgetExceeded extends Error {
  constructor(readonly budget: BudgetOutcome) {
    super('budget exceeded');
  }
}

/** How long an admission's holds live without a settlement, when `requireCredits` says nothing. */
const DEFAULT_HOLD_TTL_MS = 600_000;

/**
 * One Express handler that runs, for a request, the tier limit, the soft cap, the credit
 * reservation and the metering it is given — with one store round trip to admit (the profile,
 * the rate counts, the cap and credit holds travel together) and one to settle, wherever it is
 * mounted. A step another chain already ran for the request is not run again.
 */
export function createChain(context: ChainContext, steps: ChainSteps, name: string): RequestHandler {
  const { tierRateLimit, requireCredits } = steps;
  const requireCustomer = tierRateLimit !== undefined || requireCredits !== undefined;
  const warnedConflict = { done: false };
  const chain = async (req: Request, res: Response, next: NextFunction) => {
    const settings = context.settings();
    let billing = billingOf(res);
    if (!billing) {
      const opened = await openBilling(
        { settings, store: context.store, logger: context.logger },
        req,
        res,
        requireCustomer,
      );
      if (opened === 'pass') return next();
      if (!opened) {
        reportRefusal(context.metrics, res);
        return;
      }
      billing = opened;
    } else if (billing.settings !== settings) {
      try {
        await checkSameSettings(billing, settings, req);
      } catch (error) {
        if (answeredBadRequest(error, res)) return;
        if (!warnedConflict.done) {
          warnedConflict.done = true;
          context.logger.error((error as Error).message, { middleware: name });
        }
        throw error;
      }
    }
    const todo: ChainSteps = {};
    for (const step of STEP_NAMES) {
      const value = steps[step];
      if (!value || billing.stepsDone.has(step)) continue;
      billing.stepsDone.add(step);
      (todo as Record<StepName, unknown>)[step] = value;
    }
    if (!(await admit(context, billing, todo, req, res))) {
      reportRefusal(context.metrics, res);
      return;
    }
    if (context.metrics && (todo.tierRateLimit || todo.softCapRouter || todo.requireCredits))
      reportAdmission(context.metrics, billing);
    if (billing.isEnded) {
      // The client left while the request was being admitted: nothing will settle it.
      if (billing.reservation)
        context.store.release(billing.customerId, billing.reservation.id).catch(() => {});
      return;
    }
    todo.meterUsage?.install(billing, req, res);
    writeOutputLimit(billing, req);
    continueWithin(billing, next);
  };
  // Named, so it shows in stack traces; every failure goes to Express, 4 and 5 alike.
  const handler = {
    [name]: (req: Request, res: Response, next: NextFunction) => {
      chain(req, res, next).catch(next);
    },
  }[name]!;
  return handler;
}

/**
 * The admission of one chain's steps: one store call (`admit`, or the profile alone) and the
 * rate counts, sent in the same tick; then each step decides, answering itself when it
 * refuses. Returns whether the request goes on.
 */
async function admit(
  context: ChainContext,
  billing: RequestBilling,
  steps: ChainSteps,
  req: Request,
  res: Response,
): Promise<boolean> {
  const { store } = context;
  const { tierRateLimit: tier, softCapRouter: softCap, requireCredits: credits } = steps;
  if (!tier && !softCap && !credits) return true;
  const estimate = billing.estimate!;
  if (credits && billing.chargeCredits && !estimate.price && !softCap) return refuseUnpriced(billing, res);

  const readProfile = (tier !== undefined || softCap !== undefined) && billing.profile === undefined;
  const admission = admissionOf(billing, estimate, steps, readProfile);
  const counting = tier?.count(billing, estimate);
  let storeError: unknown;
  const storeCall: Promise<AdmissionResult | undefined> | undefined = admission
    ? store.admit(admission)
    : readProfile
      ? store.getCustomerProfile(billing.customerId).then((profile) => ({ profile, credits: undefined }))
      : undefined;
  const [counts, result] = await Promise.all([
    counting,
    storeCall?.catch((error: unknown) => {
      storeError = error;
      return undefined;
    }),
  ]);

  if (result?.duplicate) {
    if (tier && counts) tier.giveBack(billing, counts);
    return refuseDuplicate(res, result.duplicate);
  }
  if (result?.profile) billing.profile = result.profile;
  if (result && admission) noteHolds(billing, admission, result);
  if (result?.budgetExceeded && credits) {
    if (tier && counts) tier.giveBack(billing, counts);
    credits.refuseBudget(res, billing.budget!.key, result.budget!);
    return false;
  }
  if (result?.budget && billing.budget) {
    billing.budget.period = result.budget.period;
    billing.budget.hard = result.budget.hard;
    billing.budget.soft = result.budget.soft;
    if (credits) setBudgetHeaders(res, result.budget, result.budget.used);
  }

  if (tier && counts) {
    const decision = await tier.decide(billing, estimate, counts, billing.profile, req, res);
    if (!decision.admitted) return release(context, billing);
    if (decision.outputPerChoiceCap !== undefined) limitOutput(billing, decision.outputPerChoiceCap);
  }
  if (softCap) {
    if (result) {
      if (!softCap.decide(billing, result, req, res)) return release(context, billing);
    } else if (storeError !== undefined && !credits) {
      context.logger.warn('soft caps unavailable: request passes unrouted', {
        customerId: billing.customerId,
        error: storeError,
      });
    }
  }
  if (!credits || !billing.chargeCredits) return true;
  if (!estimate.price) {
    release(context, billing);
    return refuseUnpriced(billing, res);
  }
  let outcome: CreditOutcome | undefined;
  try {
    if (storeError !== undefined) throw storeError;
    outcome = await credits.resolve(billing, result?.credits, async () => {
      // Again, replacing what this request holds — and, when it holds nothing yet, still
      // refusing an id another request took meanwhile.
      const replace = billing.reservation !== undefined;
      const again = await store.admit({ ...admission!, replace, readProfile: false });
      if (again.duplicate) throw new DuplicateRequest(again.duplicate);
      if (again.budgetExceeded) throw new BudgetExceeded(again.budget!);
      if (again.capped) return { ok: false, reason: 'insufficient', available: 0n, syncedAt: store.now() };
      noteHolds(billing, admission!, again);
      return again.credits;
    });
  } catch (error) {
    if (error instanceof DuplicateRequest) {
      if (tier && counts) tier.giveBack(billing, counts);
      return refuseDuplicate(res, error.duplicate);
    }
    if (error instanceof BudgetExceeded) {
      credits.refuseBudget(res, billing.budget!.key, error.budget);
      return false;
    }
    if (credits.unavailable(billing, res, error)) return true;
    release(context, billing);
    return false;
  }
  // A burst that takes the balance below the threshold recharges before it reaches zero.
  if (outcome && 'available' in outcome) context.recharger?.watch(billing.customerId, outcome.available);
  if (outcome && 'syncedAt' in outcome && outcome.syncedAt > 0)
    context.metrics?.balanceViewAge(store.now() - outcome.syncedAt);
  if (!outcome?.ok) {
    release(context, billing);
    credits.refuse(res, outcome?.reason === 'insufficient' ? outcome.available : 0n, estimate);
    return false;
  }
  if (estimate.writesLimit) limitOutput(billing, estimate.outputPerChoiceFor(outcome.reserved));
  return true;
}

/**
 * The request's whole set of holds after this chain: what an earlier chain holds (credits keep
 * their amount), plus this chain's credits and cap. `undefined` when nothing is to be held and
 * no subscription is to be found.
 */
function admissionOf(
  billing: RequestBilling,
  estimate: RequestEstimate,
  steps: ChainSteps,
  readProfile: boolean,
): Admission | undefined {
  const { softCapRouter: softCap, requireCredits: credits } = steps;
  const held = billing.reservation;
  const creditHold =
    credits && billing.chargeCredits && estimate.price
      ? credits.hold(estimate)
      : held && held.amount > 0n
        ? { min: held.amount, max: held.amount, overdraft: held.amount }
        : undefined;
  const plans = softCap?.plans(estimate);
  if (!creditHold && !plans) return undefined;
  const admission: Admission = {
    customerId: billing.customerId,
    requestId: billing.requestId,
    readProfile,
    ttlMs: credits?.config.reservationTtlMs ?? DEFAULT_HOLD_TTL_MS,
  };
  if (held) admission.replace = true;
  if (creditHold) admission.credits = creditHold;
  if (plans) admission.plans = plans;
  if (creditHold && billing.budget) {
    admission.budget = {
      key: billing.budget.key,
      amount: creditHold.max,
      periods: budgetPeriods(Date.now()),
    };
  }
  return admission;
}

/** Records what the admission holds under the request id, for the settlement to release. */
function noteHolds(billing: RequestBilling, admission: Admission, result: AdmissionResult): void {
  const credits = result.credits?.ok ? result.credits.reserved : 0n;
  const subscription = result.subscription;
  const capHeld =
    subscription !== undefined &&
    !result.capped &&
    admission.plans?.byProduct.get(subscription.productId)?.hardCap !== undefined;
  if (result.credits?.ok || capHeld) billing.reservation = { id: billing.useRequestId(), amount: credits };
  else if (admission.replace) billing.reservation = undefined;
  // The cap holds the request's largest output: a written limit keeps it to that.
  if (capHeld && billing.estimate?.writesLimit) limitOutput(billing, billing.estimate.maxOutputPerChoice);
}

/** The output limit written into the request: the smallest any step allows. */
function limitOutput(billing: RequestBilling, perChoice: number): void {
  billing.outputPerChoice = Math.min(billing.outputPerChoice ?? perChoice, perChoice);
}

/**
 * Writes the output limit the request holds into the request the handler forwards, when it set
 * none and a step bounded it (credits held, a cap held, a TPM window): the upstream then cannot
 * generate (and bill) more than what was held.
 */
function writeOutputLimit(billing: RequestBilling, req: Request): void {
  const estimate = billing.estimate;
  const perChoice = billing.outputPerChoice;
  if (perChoice === undefined || !estimate?.writesLimit || typeof req.body !== 'object' || req.body === null)
    return;
  const field = billing.settings.outputLimitField ?? estimate.output.limitField;
  (req.body as Record<string, unknown>)[field] = perChoice;
}

/** Gives back what the request holds, without waiting (a refused request). */
function release(context: ChainContext, billing: RequestBilling): false {
  const held = billing.reservation;
  if (held) {
    billing.reservation = undefined;
    context.store.release(billing.customerId, held.id).catch(() => {
      // Unreleased, it expires on its own after its TTL.
    });
  }
  return false;
}

function refuseUnpriced(billing: RequestBilling, res: Response): false {
  const model = billing.model;
  sendOpenAIError(
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
  return false;
}

function refuseDuplicate(res: Response, duplicate: 'in_flight' | 'settled'): false {
  sendOpenAIError(
    res,
    409,
    openAIError(
      duplicate === 'in_flight'
        ? 'A request with this id is already in progress. Wait for it to finish, or send this one under a new id.'
        : 'A request with this id was already served and billed. Send a new request under a new id.',
      'invalid_request_error',
      duplicate === 'in_flight' ? 'request_id_in_use' : 'request_id_reused',
    ),
    { 'x-should-retry': 'false' },
  );
  return false;
}

export type { TierCounts };
