import { randomUUID } from 'node:crypto';
import type { Request, Response } from 'express';
import { billingOf, RequestBilling } from '../billing-context.js';
import { ConfigError } from '../errors.js';
import { BodyShapeError, priceOfModel, RequestEstimate, RequestFieldError } from '../estimate/index.js';
import { noCustomerError, openAIError, sendOpenAIError } from '../http/openai-error.js';
import type { Logger } from '../logger.js';
import { modelNameProblem, type RequestSettings, requestIdProblem } from '../request-settings.js';
import type { BillingStore } from '../store/types.js';

/** What opening a request's billing needs. */
export interface OpenContext {
  settings: RequestSettings;
  store: BillingStore;
  logger: Logger;
}

/** A request the package refuses to bill as sent: answered 400 before anything is held. */
class BadRequest extends Error {
  constructor(
    message: string,
    readonly param: string | null,
    readonly code: string,
  ) {
    super(message);
  }
}

/**
 * The request's billing, opened with `context`'s settings: the customer (401 when the app's
 * authentication names none and `requireCustomer`), the request id and the model (400 when
 * they cannot be billed), and the estimate of what the request can cost, from its whole body
 * (400 for a body that cannot be walked or fields no upstream accepts). Returns `undefined`
 * once it has answered, or when nobody is to be billed and nothing requires it.
 */
export async function openBilling(
  context: OpenContext,
  req: Request,
  res: Response,
  requireCustomer: boolean,
): Promise<RequestBilling | undefined | 'pass'> {
  const { settings, store, logger } = context;
  if (req.body === undefined && req.is('json')) warnBodyNotParsed(logger);
  const customerId = await settings.customerId(req);
  if (typeof customerId !== 'string' || customerId === '') {
    if (!requireCustomer) return 'pass';
    sendOpenAIError(res, 401, noCustomerError());
    return undefined;
  }
  let billing: RequestBilling;
  try {
    const requestId = settings.requestId ? readRequestId(settings.requestId, req) : randomUUID();
    const model = settings.model(req);
    if (model !== undefined) {
      const modelProblem =
        typeof model === 'string' ? modelNameProblem(model) : 'The model must be a string.';
      if (modelProblem) throw new BadRequest(modelProblem, 'model', 'invalid_model');
    }
    billing = new RequestBilling(
      customerId,
      { id: requestId, fromApp: settings.requestId !== undefined },
      settings,
      async (unsettled) => {
        if (!unsettled.reservation) return;
        await store.release(unsettled.customerId, unsettled.reservation.id).catch((error: unknown) =>
          logger.warn('releasing a request’s hold failed: it expires on its own', {
            customerId,
            requestId,
            error,
          }),
        );
      },
    );
    billing.model = model;
    billing.estimate = new RequestEstimate(model, req.body, settings);
    const budgetKey = settings.budgetKey?.(req);
    if (budgetKey !== undefined) {
      const keyProblem = requestIdProblem(budgetKey);
      if (keyProblem)
        throw new BadRequest(keyProblem.replace('request id', 'budget key'), null, 'invalid_budget_key');
      billing.budget = { key: budgetKey, period: undefined };
    }
  } catch (error) {
    if (!answeredBadRequest(error, res)) throw error;
    return undefined;
  }
  attach(billing, res, logger);
  return billing;
}

const warnedBodyNotParsed = new WeakSet<Logger>();

/**
 * A JSON request whose body nobody parsed: the model and the estimate cannot be read, so every
 * request would be refused as naming no model. Said once per logger, with the fix.
 */
function warnBodyNotParsed(logger: Logger): void {
  if (warnedBodyNotParsed.has(logger)) return;
  warnedBodyNotParsed.add(logger);
  logger.warn(
    'a JSON request reached the billing middlewares with no parsed body: mount express.json() before them (app.use(express.json()), or on the route before billing.chain())',
  );
}

/** The app's id for the request, checked: it becomes part of event ids and metadata. */
function readRequestId(reader: (req: Request) => string, req: Request): string {
  const id = reader(req);
  const problem = requestIdProblem(id);
  if (problem) throw new BadRequest(problem, null, 'invalid_request_id');
  return id;
}

/** Answers 400 for a request the package cannot bill as sent; false for any other error. */
export function answeredBadRequest(error: unknown, res: Response): boolean {
  const bad = asBadRequest(error);
  if (!bad) return false;
  sendOpenAIError(res, 400, openAIError(bad.message, 'invalid_request_error', bad.code, bad.param));
  return true;
}

function asBadRequest(error: unknown): BadRequest | undefined {
  if (error instanceof BadRequest) return error;
  if (error instanceof RequestFieldError) return new BadRequest(error.message, error.param, 'invalid_value');
  if (error instanceof BodyShapeError) return new BadRequest(error.message, null, 'invalid_body');
  return undefined;
}

/**
 * Puts the billing on the response and ends it when the response closes: at once when it
 * closed normally or nothing settles it; after a client that left, once the handler ends its
 * response (its real usage is then read) or after `abandonedResponseTimeoutMs` (an estimate).
 */
function attach(billing: RequestBilling, res: Response, logger: Logger): void {
  res.locals.billing = billing;
  const end = () =>
    billing.end(res).catch((error: unknown) =>
      logger.error('ending the billing of a request failed', {
        customerId: billing.customerId,
        requestId: billing.requestId,
        error,
      }),
    );
  res.once('close', () => {
    if (billing.isEnded) return;
    const settler = billing.settler;
    if (!settler || res.writableFinished) {
      end();
      return;
    }
    // The client left first. The handler usually goes on to its answer, whose end runs the
    // settlement through the response's tail; this bounds the wait for one that never comes.
    setTimeout(end, settler.abandonedResponseTimeoutMs).unref();
  });
}

/**
 * Checks that middlewares created apart (or given their own per-request options) bill this
 * request the same way. A setting the later middleware was not given is its default and defers
 * to the request's; one it was given must agree with the request's — or, for the request id and
 * the model, replace a default the request was opened with while nothing is held under it. A
 * difference is a misconfiguration, never a silent winner: a `ConfigError` naming the setting.
 */
export async function checkSameSettings(
  billing: RequestBilling,
  settings: RequestSettings,
  req: Request,
): Promise<void> {
  const first = billing.settings;
  const given = settings.explicit;
  const differs = (name: string) =>
    new ConfigError(
      'ERR_ELB_CONFLICTING_SETTINGS',
      `Two billing middlewares read this request differently (\`${name}\`). Per-request settings must be the same for every middleware of a request: pass them once to createBilling(shared), or the same \`${name}\` to each.`,
    );
  if (given.has('customerId') && (await settings.customerId(req)) !== billing.customerId)
    throw differs('customerId');
  // A middleware with the app's request id after one without: the id is the app's, unless the
  // random one already held or billed something.
  if (
    settings.requestId &&
    given.has('requestId') &&
    !billing.adoptRequestId(readRequestId(settings.requestId, req))
  )
    throw differs('requestId');
  if (given.has('model')) {
    const model = settings.model(req);
    if (model !== billing.model && !adoptModel(billing, model, req)) throw differs('model');
  }
  if (given.has('maxJsonBytes') && settings.maxJsonBytes !== first.maxJsonBytes)
    throw differs('maxJsonBytes');
  if (given.has('pricing') || given.has('defaultPrice')) {
    const ours = priceOfModel(settings.pricing, billing.model);
    const theirs = priceOfModel(first.pricing, billing.model);
    if (ours && theirs && priceKey(ours).join() !== priceKey(theirs).join()) throw differs('pricing');
  }
  for (const name of ESTIMATE_SETTINGS) {
    if (given.has(name) && settings[name] !== first[name]) throw differs(name);
  }
}

/**
 * The model a middleware given its own `model` reads, replacing the one the request was opened
 * with when that one was a default (the body's) and nothing is held yet: the estimate is made
 * again for it. False when it cannot.
 */
function adoptModel(billing: RequestBilling, model: string | undefined, req: Request): boolean {
  if (billing.settings.explicit.has('model') || billing.reservation !== undefined || model === undefined)
    return false;
  const problem = modelNameProblem(model);
  if (problem) throw new BadRequest(problem, 'model', 'invalid_model');
  billing.model = model;
  billing.estimate = new RequestEstimate(model, req.body, billing.settings);
  return true;
}

/** Settings that shape the estimate: compared by value (functions by identity). */
const ESTIMATE_SETTINGS = [
  'estimateTokens',
  'imageTokens',
  'defaultMaxOutputTokens',
  'outputLimit',
  'outputLimitField',
  'minOutputTokens',
] as const;

function priceKey(price: NonNullable<ReturnType<typeof priceOfModel>>): string[] {
  return [
    price.input.toString(),
    price.output.toString(),
    String(price.maxOutputTokens),
    String(price.reasoning),
  ];
}

export { billingOf };
