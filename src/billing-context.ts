import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { EarlyReservation } from './early-reservation.js';
import { noCustomerError, sendOpenAIError } from './http/openai-error.js';
import type { Logger } from './logger.js';
import type { Money } from './money.js';
import { promptText } from './require-credits/estimate.js';
import type { BillingStore, CustomerProfile } from './store/types.js';

/** Token usage of one LLM call, as an app reports it or as it is read from a response. */
export interface UsageRecord {
  /** The model the tokens are priced at. */
  model: string;
  inputTokens: number;
  outputTokens: number;
  /** Input tokens served from the provider's cache (kept in event metadata). */
  cachedInputTokens?: number;
  /** Reasoning tokens, included in `outputTokens` (kept in event metadata). */
  reasoningTokens?: number;
  /** True when the counts are estimated (a cut stream, a response without usage). */
  estimated?: boolean;
}

/** Decides what the request is billed when its response ends. */
export type Settler = (billing: RequestBilling, response: Response) => Promise<void>;

/**
 * The billing state of one request, shared by the middlewares through `res.locals.billing`:
 * whichever of them runs first creates it, the others add to it. It ends exactly once, when
 * the response closes however it closes (finished, aborted, errored).
 */
export class RequestBilling {
  /** Requested model after any soft-cap rewrite (what the request is priced at). */
  model: string | undefined;
  /** Input tokens estimated from the request, used when the response carries no usage. */
  estimatedInputTokens = 0;
  /** The credits held for this request by `requireCredits`. */
  reservation: { id: string; amount: Money } | undefined;
  /** A reservation sent ahead of `requireCredits` (see early-reservation.ts), until it adopts it. */
  earlyReservation: EarlyReservation | undefined;
  /** Billing period key for the usage counters (a subscription period, else the UTC month). */
  usagePeriod: string | undefined;
  /** False when the request is covered by a subscription and must not spend credits. */
  chargeCredits = true;
  /** Set by `meterUsage`: settles the request's usage when the response ends. */
  settler: Settler | undefined;
  /** What the request was billed for, once settled (read by limiters and caps after the end). */
  settledUsage: readonly UsageRecord[] | undefined;
  private readonly records: UsageRecord[] = [];
  private profileRead: Promise<CustomerProfile> | undefined;
  private prompt: string | undefined;
  private ended = false;
  private readonly endListeners: ((billing: RequestBilling) => void)[] = [];
  private readonly endingListeners: ((billing: RequestBilling) => void)[] = [];
  private readonly settlingListeners: ((billing: RequestBilling) => void)[] = [];

  constructor(
    readonly customerId: string,
    readonly requestId: string,
    private readonly onUnsettled: (billing: RequestBilling) => Promise<void>,
  ) {}

  /**
   * Reports usage explicitly, for responses that are not OpenAI-shaped. Several calls add up;
   * when any usage is recorded, it replaces what would be read from the response.
   * @example res.locals.billing.record({ model: 'gpt-4o', inputTokens: 1200, outputTokens: 300 })
   */
  record(usage: UsageRecord): void {
    for (const key of ['inputTokens', 'outputTokens', 'cachedInputTokens', 'reasoningTokens'] as const) {
      const value = usage[key];
      if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
        throw new TypeError(`billing.record: \`${key}\` must be a non-negative integer (got ${value}).`);
      }
    }
    if (typeof usage.model !== 'string' || usage.model === '') {
      throw new TypeError('billing.record: `model` must be the model name the tokens are priced at.');
    }
    this.records.push({ ...usage });
  }

  /**
   * The customer's spend and subscriptions, read from the store once per request however many
   * middlewares (tiers, soft caps) ask: one round trip instead of one each.
   */
  profile(store: BillingStore): Promise<CustomerProfile> {
    this.profileRead ??= store.getCustomerProfile(this.customerId);
    return this.profileRead;
  }

  /** The request's prompt text (what its input tokens are estimated from), collected once. */
  promptOf(body: unknown): string {
    this.prompt ??= promptText(body);
    return this.prompt;
  }

  /** Usage recorded with `record()` so far. */
  recorded(): readonly UsageRecord[] {
    return this.records;
  }

  /** Runs `listener` once the request's billing has ended (settled or released). */
  onEnd(listener: (billing: RequestBilling) => void): void {
    if (this.ended) listener(this);
    else this.endListeners.push(listener);
  }

  /**
   * Runs `listener` synchronously as soon as the request's settlement (or the release of its
   * reservation) has been sent to the store, with `settledUsage` known when `meterUsage`
   * settled it. Store writes a listener makes then travel with the settlement, in the same
   * round trip, instead of after it. A listener that throws does not stop the others.
   */
  onSettling(listener: (billing: RequestBilling) => void): void {
    if (this.ended) return;
    this.settlingListeners.push(listener);
  }

  /**
   * Runs `listener` synchronously when the response closes, before its usage is settled, so
   * work still in flight (a tracked LLM stream) can `record()` what it has. A listener that
   * throws does not stop the settlement.
   */
  onEnding(listener: (billing: RequestBilling) => void): void {
    if (this.ended) return;
    this.endingListeners.push(listener);
  }

  /**
   * A reservation sent ahead that `requireCredits` did not adopt (a 429 came first, a
   * subscription covered the request) is released with the settlement, in its round trip.
   */
  private releaseUnadoptedReservation(): void {
    const early = this.earlyReservation;
    if (!early || this.reservation) return;
    const { customerId, requestId } = this;
    early.result
      .then((result) => (result.ok ? early.plan.store.release(customerId, requestId) : false))
      .catch(() => {
        // Unreleased, it expires on its own after its TTL.
      });
  }

  /** True once the response has closed and the billing ended. */
  get isEnded(): boolean {
    return this.ended;
  }

  /** Ends the request's billing once: settles through `meterUsage`, or releases the reservation. */
  async end(response: Response): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    for (const listener of this.endingListeners.splice(0)) {
      try {
        listener(this);
      } catch {
        // The usage recorded so far is still settled.
      }
    }
    try {
      // Called, not awaited yet: an async settler has sent its store write by the time it returns.
      const settling = this.settler ? this.settler(this, response) : this.onUnsettled(this);
      this.releaseUnadoptedReservation();
      for (const listener of this.settlingListeners.splice(0)) {
        try {
          listener(this);
        } catch {
          // A listener's failure is its own; the settlement goes on.
        }
      }
      await settling;
    } finally {
      for (const listener of this.endListeners.splice(0)) listener(this);
    }
  }
}

/** The request whose handler is running now (for clients wrapped to bill the current request). */
export const currentBilling = new AsyncLocalStorage<RequestBilling>();

/**
 * Whether handlers run inside their request's billing context. Off until something reads it
 * (`trackOpenAI`, `enableRequestBillingContext`): entering an AsyncLocalStorage makes every
 * promise of the process a little slower, a cost an app that never reads it should not pay.
 */
let requestContextEnabled = false;

/**
 * Makes `currentRequestBilling()` find the request in flight from anywhere in its handler.
 * `trackOpenAI` calls it; call it once at startup if you use `currentRequestBilling()` without
 * a tracked client.
 */
export function enableRequestBillingContext(): void {
  requestContextEnabled = true;
}

/** Runs the rest of the request's chain within its billing context, when that is enabled. */
export function continueWithin(billing: RequestBilling, next: () => void): void {
  if (requestContextEnabled) currentBilling.run(billing, next);
  else next();
}

/**
 * The request's billing, if a billing middleware has run for it. Middlewares read it before
 * awaiting `openBilling`: on the hot path, every await is a turn of the microtask queue.
 */
export function billingOf(res: Response): RequestBilling | undefined {
  const billing = res.locals.billing;
  return billing instanceof RequestBilling ? billing : undefined;
}

/**
 * Attaches a new billing state to the response, ending it when the response closes. `close`
 * fires once on every response in Node ≥ 18, after `finish` or on an abort, so it is the one
 * place that sees every ending.
 */
export function attachBilling(
  res: Response,
  billing: RequestBilling,
  onError: (error: unknown) => void,
): void {
  res.locals.billing = billing;
  res.once('close', () => {
    billing.end(res).catch(onError);
  });
}

/** What opening a request's billing needs, from whichever middleware runs first. */
export interface OpenBillingOptions {
  store: BillingStore;
  customerId: (req: Request) => string | undefined | Promise<string | undefined>;
  requestId: ((req: Request) => string) | undefined;
  logger: Logger;
}

/**
 * The request's billing: the one an earlier billing middleware opened, or a new one for the
 * customer `customerId(req)` names. `undefined` when the app's authentication names nobody.
 */
export async function openBilling(
  req: Request,
  res: Response,
  options: OpenBillingOptions,
): Promise<RequestBilling | undefined> {
  const existing = billingOf(res);
  if (existing) return existing;
  const customerId = await options.customerId(req);
  if (typeof customerId !== 'string' || customerId === '') return undefined;
  const { store, logger } = options;
  const billing = new RequestBilling(
    customerId,
    options.requestId?.(req) ?? randomUUID(),
    async (unsettled) => {
      if (unsettled.reservation) await store.release(unsettled.customerId, unsettled.reservation.id);
    },
  );
  attachBilling(res, billing, (error) =>
    logger.error('ending the billing of a request failed', {
      customerId,
      requestId: billing.requestId,
      error,
    }),
  );
  return billing;
}

/**
 * The request's billing for a middleware that needs a customer, or `undefined` once it has
 * answered: 401 when the app's authentication names nobody, `next(error)` when it threw.
 */
export async function billingOrRefusal(
  req: Request,
  res: Response,
  next: NextFunction,
  options: OpenBillingOptions,
): Promise<RequestBilling | undefined> {
  let billing: RequestBilling | undefined;
  try {
    billing = await openBilling(req, res, options);
  } catch (error) {
    next(error);
    return undefined;
  }
  if (!billing) sendOpenAIError(res, 401, noCustomerError());
  return billing;
}
