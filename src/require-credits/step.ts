import type { Response } from 'express';
import type { RequestBilling } from '../billing-context.js';
import { ConfigError } from '../errors.js';
import type { RequestEstimate } from '../estimate/index.js';
import { openAIError, sendOpenAIError } from '../http/openai-error.js';
import { displayUsd, type Money } from '../money.js';
import type { BudgetOutcome, CreditHold, CreditOutcome } from '../store/types.js';
import { BalanceFetcher } from './balance-fetcher.js';
import type { ResolvedRequireCreditsOptions } from './options.js';

/** A credit outcome that admits the request, or why it does not. */
export type CreditDecision = { admitted: true; outcome: CreditOutcome | undefined } | { admitted: false };

/**
 * The credit reservation as a step of the billing chain: it says what the admission holds,
 * then reads what the store answered, going to Dodo only when the local view is missing or too
 * old to refuse on — never on the hot path of an admitted request.
 */
export class CreditStep {
  readonly fetcher: BalanceFetcher;

  constructor(readonly config: ResolvedRequireCreditsOptions) {
    this.fetcher = new BalanceFetcher({
      store: config.store,
      dodo: config.dodo,
      creditEntitlementId: config.creditEntitlementId,
      perCredit: config.perCredit,
      timeoutMs: config.dodoTimeoutMs,
      logger: config.logger,
      metrics: config.metrics,
    });
  }

  /** The credits the request holds: as much as its maximum cost the balance covers, never less than its minimum. */
  hold(estimate: RequestEstimate): CreditHold {
    return { min: estimate.minCost(), max: estimate.maxCost(), overdraft: this.config.overdraft };
  }

  /**
   * Reads the store's answer, refreshing the balance from Dodo when there is no view, when the
   * view was marked stale (a refund), or when a view past its TTL would refuse (a top-up may
   * have happened since); a view past its TTL that admits is refreshed in the background.
   * `readmit` runs the admission again, replacing what the request holds.
   */
  async resolve(
    billing: RequestBilling,
    first: CreditOutcome | undefined,
    readmit: () => Promise<CreditOutcome | undefined>,
  ): Promise<CreditOutcome | undefined> {
    const { store, balanceTtlMs, logger } = this.config;
    const { customerId } = billing;
    if (!first) return first;
    if (!first.ok && first.reason === 'no_balance') {
      await this.fetcher.refresh(customerId);
      return readmit();
    }
    const syncedAt = first.syncedAt;
    if (syncedAt + balanceTtlMs > store.now()) return first;
    if (syncedAt === 0) {
      // Marked stale (a refund clawed credits back): Dodo is asked before anything is spent; the
      // admission then runs again, replacing what this one held.
      await this.fetcher.refresh(customerId);
      return readmit();
    }
    if (first.ok) {
      this.fetcher
        .refresh(customerId)
        .catch((error) => logger.warn('background balance refresh failed', { customerId, error }));
      return first;
    }
    try {
      await this.fetcher.refresh(customerId);
    } catch (error) {
      // Dodo is down, but the local view already answers: refuse on it rather than fail.
      logger.warn('balance refresh before a refusal failed; refusing on the local view', {
        customerId,
        error,
      });
      return first;
    }
    return readmit();
  }

  /** Answers a refusal for lack of credits: 402 (or 429) with OpenAI's `insufficient_quota`. */
  refuse(res: Response, available: Money, estimate: RequestEstimate): void {
    const status = this.config.insufficientStatus;
    const needed = estimate.minCost();
    const message =
      available > 0n
        ? `You exceeded your current quota: your available credit (${displayUsd(available)}) does not cover this request's estimated cost (${displayUsd(needed)}). Top up your credits${estimate.output.limit === undefined ? '' : ' or lower max_tokens'}.`
        : `You exceeded your current quota: your credit balance is ${displayUsd(available)}. Top up your credits to continue.`;
    // With 429 the `openai` SDK would retry a request that cannot succeed until a top-up.
    const headers: Record<string, string> = status === 429 ? { 'x-should-retry': 'false' } : {};
    sendOpenAIError(res, status, openAIError(message, 'insufficient_quota', 'insufficient_quota'), headers);
  }

  /**
   * Answers a request whose API key has spent its budget: OpenAI's `insufficient_quota`, with a
   * code that says it is the key's budget, not the account's credit.
   */
  refuseBudget(res: Response, key: string, budget: BudgetOutcome): void {
    const status = this.config.insufficientStatus;
    const message = `The budget of API key ${key} for this period is spent (${displayUsd(budget.used)} of ${displayUsd(budget.hard ?? 0n)}). Raise its budget or use another key.`;
    const headers: Record<string, string> = status === 429 ? { 'x-should-retry': 'false' } : {};
    sendOpenAIError(res, status, openAIError(message, 'insufficient_quota', 'budget_exceeded'), headers);
  }

  /** Answers (or admits, with `failOpen`) when the store or Dodo could not be reached. */
  unavailable(billing: RequestBilling, res: Response, error: unknown): boolean {
    const { logger, failOpen, retryAfterSeconds } = this.config;
    if (failOpen) {
      logger.warn('billing unavailable: admitting the request unreserved (failOpen)', {
        customerId: billing.customerId,
        error,
      });
      return true;
    }
    // A misconfiguration (a wrong creditEntitlementId) was named once, with its fix, when found.
    if (!(error instanceof ConfigError)) {
      logger.error('billing unavailable: refusing the request with 503', {
        customerId: billing.customerId,
        error,
      });
    }
    sendOpenAIError(
      res,
      503,
      openAIError(
        'Billing is temporarily unavailable, so the request cannot be admitted. Please retry shortly.',
        'server_error',
        'billing_unavailable',
      ),
      { 'retry-after': String(retryAfterSeconds) },
    );
    return false;
  }
}
