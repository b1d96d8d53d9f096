import { AsyncLocalStorage } from 'node:async_hooks';
import type { Response } from 'express';
import type { RequestEstimate } from './estimate/index.js';
import type { Money } from './money.js';
import { modelNameProblem, type RequestSettings } from './request-settings.js';
import type { CustomerProfile, SubscriptionState } from './store/types.js';

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

/** How a request's billing ends: `meterUsage` settles its usage; otherwise its holds are released. */
export interface Settler {
  /** Settles what the request used; never rejects (a store failure is kept for a retry). */
  settle(billing: RequestBilling, response: Response): Promise<void>;
  /**
   * How long to wait, after the client left, for the handler's own answer (whose usage is the
   * truth) before billing an estimate.
   */
  abandonedResponseTimeoutMs: number;
}

/** What the request holds under its id in the store, once admitted. */
export interface Reservation {
  id: string;
  /** Credits held. */
  amount: Money;
}

/**
 * The billing state of one request, shared by every billing step through `res.locals.billing`.
 * It is opened once, with the per-request settings of the middleware that opens it (every
 * middleware of one `createBilling` has the same), and ends exactly once: settled before the
 * response's last byte, or when the response closes however it closes.
 */
export class RequestBilling {
  /** Model the request is priced at, after any soft-cap rewrite. */
  model: string | undefined;
  /** What the request can cost at most, estimated once from its body. */
  estimate: RequestEstimate | undefined;
  /** What the admission holds in the store under the request id (credits and/or a cap hold). */
  reservation: Reservation | undefined;
  /** Output tokens per choice the reservation pays for (written into the request when no limit was set). */
  outputPerChoice: number | undefined;
  /** The customer's profile, once an admission has read it. */
  profile: CustomerProfile | undefined;
  /** The subscription that covers the request, if any. */
  subscription: SubscriptionState | undefined;
  /** The API key the request is billed to, and the usage period its budget counts it in. */
  budget:
    | {
        key: string;
        /** Set at admission, when the key has a budget. */
        period: string | undefined;
        hard?: Money | undefined;
        soft?: Money | undefined;
      }
    | undefined;
  /** Billing period key for the usage counters (a subscription period, else the UTC month). */
  usagePeriod: string | undefined;
  /** False when the request is covered by a subscription and must not spend credits. */
  chargeCredits = true;
  /** Set by `meterUsage`: settles the request's usage when the response ends. */
  settler: Settler | undefined;
  /** What the request was billed for, once settled (read by limiters and caps after the end). */
  settledUsage: readonly UsageRecord[] | undefined;
  /** What the settlement cost and left, once settled (for the response's billing headers). */
  settledCost: { cost: Money; balance: Money | undefined; estimated: boolean } | undefined;
  /** The billing steps that already ran for this request: each runs once, whoever mounts it. */
  readonly stepsDone = new Set<string>();
  private readonly records: UsageRecord[] = [];
  private ended = false;
  private finished = false;
  private ending: Promise<void> | undefined;
  private readonly endListeners: ((billing: RequestBilling) => void)[] = [];
  private readonly endingListeners: ((billing: RequestBilling) => void)[] = [];
  private readonly settlingListeners: ((billing: RequestBilling) => void)[] = [];

  /** The request's id: the app's (`requestId(req)`), else a random UUID until a middleware that has one runs. */
  get requestId(): string {
    return this.id;
  }
  private id: string;
  /** The id came from the app's `requestId`. */
  private idFromApp: boolean;
  /** Something was held or settled under the id: it cannot change any more. */
  private idUsed = false;

  constructor(
    readonly customerId: string,
    requestId: { id: string; fromApp: boolean },
    /** The per-request settings of the middleware that opened the billing. */
    readonly settings: RequestSettings,
    /** What ends a request that no `meterUsage` settles: its holds are released. */
    private readonly onUnsettled: (billing: RequestBilling) => Promise<void>,
  ) {
    this.id = requestId.id;
    this.idFromApp = requestId.fromApp;
  }

  /** The id as the store will see it from now on (an admission holds under it, a settlement bills under it). */
  useRequestId(): string {
    this.idUsed = true;
    return this.id;
  }

  /**
   * The app's request id, read by a middleware that runs after one that had none: it replaces
   * the provisional random id while nothing used it. Returns false when it cannot (another app
   * id, or the random one already holds or billed something).
   */
  adoptRequestId(id: string): boolean {
    if (id === this.id) return true;
    if (this.idFromApp || this.idUsed) return false;
    this.id = id;
    this.idFromApp = true;
    return true;
  }

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
    const problem = modelNameProblem(usage.model);
    if (problem) throw new TypeError(`billing.record: ${problem}`);
    this.records.push({ ...usage });
  }

  /** Usage recorded with `record()` so far. */
  recorded(): readonly UsageRecord[] {
    return this.records;
  }

  /** Runs `listener` once the request's billing has ended (settled or released). */
  onEnd(listener: (billing: RequestBilling) => void): void {
    if (this.finished) listener(this);
    else this.endListeners.push(listener);
  }

  /**
   * Runs `listener` synchronously as soon as the request's settlement (or the release of its
   * holds) has been sent to the store, with `settledUsage` known when `meterUsage` settled it.
   * Store writes a listener makes then travel with the settlement, in the same round trip. A
   * listener that throws does not stop the others.
   */
  onSettling(listener: (billing: RequestBilling) => void): void {
    if (this.ended) return;
    this.settlingListeners.push(listener);
  }

  /**
   * Runs `listener` synchronously when the request's billing starts to end, before its usage
   * is settled, so work still in flight (a tracked LLM stream) can `record()` what it has. A
   * listener that throws does not stop the settlement.
   */
  onEnding(listener: (billing: RequestBilling) => void): void {
    if (this.ended) return;
    this.endingListeners.push(listener);
  }

  /** True once the billing has started to end. */
  get isEnded(): boolean {
    return this.ended;
  }

  /**
   * Ends the request's billing once: settles through `meterUsage`, or releases what the
   * request holds. Every later call returns the same promise.
   */
  end(response: Response): Promise<void> {
    this.ending ??= this.runEnd(response);
    return this.ending;
  }

  private async runEnd(response: Response): Promise<void> {
    this.ended = true;
    for (const listener of this.endingListeners.splice(0)) {
      try {
        listener(this);
      } catch {
        // The usage recorded so far is still settled.
      }
    }
    try {
      // Called, not awaited yet: the store write is sent by the time it returns.
      const settling = this.settler ? this.settler.settle(this, response) : this.onUnsettled(this);
      for (const listener of this.settlingListeners.splice(0)) {
        try {
          listener(this);
        } catch {
          // A listener's failure is its own; the settlement goes on.
        }
      }
      await settling;
    } finally {
      this.finished = true;
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

/** The request's billing, if a billing middleware has opened it. */
export function billingOf(res: Response): RequestBilling | undefined {
  const billing = res.locals.billing;
  return billing instanceof RequestBilling ? billing : undefined;
}
