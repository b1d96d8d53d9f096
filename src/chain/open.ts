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
  const customerId = await settings.customerId(req);
  if (typeof customerId !== 'string' || customerId === '') {
    if (!requireCustomer) return 'pass';
    sendOpenAIError(res, 401, noCustomerError());
    return undefined;
  }
  let billing: RequestBilling;
  try {
    const requestId = settings.requestId ? settings.requestId(req) : randomUUID();
    const idProblem = requestIdProblem(requestId);
    if (idProblem) throw new BadRequest(idProblem, null, 'invalid_request_id');
    const model = settings.model(req);
    if (model !== undefined) {
      const modelProblem =
        typeof model === 'string' ? modelNameProblem(model) : 'The model must be a string.';
      if (modelProblem) throw new BadRequest(modelProblem, 'model', 'invalid_model');
    }
    billing = new RequestBilling(customerId, requestId, settings, async (unsettled) => {
      if (!unsettled.reservation) return;
      await store.release(unsettled.customerId, unsettled.reservation.id).catch((error: unknown) =>
        logger.warn('releasing a request’s hold failed: it expires on its own', {
          customerId,
          requestId,
          error,
        }),
      );
    });
    billing.model = model;
    billing.estimate = new RequestEstimate(model, req.body, settings);
  } catch (error) {
    const bad = asBadRequest(error);
    if (!bad) throw error;
    sendOpenAIError(res, 400, openAIError(bad.message, 'invalid_request_error', bad.code, bad.param));
    return undefined;
  }
  attach(billing, res, logger);
  return billing;
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
 * Checks that middlewares created apart (not by one `createBilling`) bill this request the
 * same way: the same customer, request id, model, estimate and price. A difference is a
 * misconfiguration, never a silent winner: a `ConfigError` naming the setting.
 */
export async function checkSameSettings(
  billing: RequestBilling,
  settings: RequestSettings,
  req: Request,
): Promise<void> {
  const first = billing.settings;
  const differs = (name: string) =>
    new ConfigError(
      'ERR_ELB_CONFLICTING_SETTINGS',
      `Two billing middlewares created apart read this request differently (\`${name}\`). Per-request settings must be the same for every middleware: create them with one createBilling(shared), or pass the same \`${name}\` to each.`,
    );
  if ((await settings.customerId(req)) !== billing.customerId) throw differs('customerId');
  if (settings.requestId && settings.requestId(req) !== billing.requestId) throw differs('requestId');
  if (settings.model !== first.model && settings.model(req) !== billing.estimate?.model)
    throw differs('model');
  if (settings.maxJsonBytes !== first.maxJsonBytes) throw differs('maxJsonBytes');
  const model = billing.estimate?.model;
  const ours = priceOfModel(settings.pricing, model);
  const theirs = priceOfModel(first.pricing, model);
  if (ours && theirs && JSON.stringify(priceKey(ours)) !== JSON.stringify(priceKey(theirs)))
    throw differs('pricing');
  for (const name of ESTIMATE_SETTINGS) {
    if (settings[name] !== first[name]) throw differs(name);
  }
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
