import type DodoPayments from 'dodopayments';
import { httpStatusOf, withDeadline } from '../dodo-call.js';
import { type Money, parseCredits } from '../money.js';
import type { BalanceView, BillingStore } from '../store/types.js';

export interface BalanceFetcherOptions {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  perCredit: Money;
  /** Deadline of one Dodo call; the SDK's own timeout and retries never reach a request. */
  timeoutMs: number;
}

/** Dodo did not answer in time or answered an error: the balance is unknown. */
export class DodoUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DodoUnavailableError';
  }
}

/**
 * Refreshes balance views from Dodo, one call per customer at a time (single flight): every
 * request for that customer waiting on a refresh shares the same call.
 */
export class BalanceFetcher {
  private readonly inFlight = new Map<string, Promise<BalanceView>>();

  constructor(private readonly options: BalanceFetcherOptions) {}

  refresh(customerId: string): Promise<BalanceView> {
    let flight = this.inFlight.get(customerId);
    if (!flight) {
      flight = this.fetchAndSync(customerId).finally(() => this.inFlight.delete(customerId));
      this.inFlight.set(customerId, flight);
    }
    return flight;
  }

  private async fetchAndSync(customerId: string): Promise<BalanceView> {
    const { store } = this.options;
    // The observation is stamped when the call starts: Dodo's answer reflects at least
    // everything that happened before, so it is never mistaken for newer than it is.
    const observedAt = store.now();
    const balance = await this.fetch(customerId);
    return (await store.syncBalance(customerId, balance, observedAt)).view;
  }

  private async fetch(customerId: string): Promise<Money> {
    const { dodo, creditEntitlementId, perCredit, timeoutMs } = this.options;
    try {
      const answer = await withDeadline(
        timeoutMs,
        () => new DodoUnavailableError(`Dodo did not answer the balance request within ${timeoutMs} ms.`),
        (options) =>
          dodo.creditEntitlements.balances.retrieve(
            customerId,
            { credit_entitlement_id: creditEntitlementId },
            options,
          ),
      );
      // With overage enabled Dodo keeps the balance at 0 and counts what is owed as overage.
      return parseCredits(answer.balance, perCredit) - parseCredits(answer.overage ?? '0', perCredit);
    } catch (error) {
      // Dodo answers 404 for a customer who has never had credits: that is a zero balance.
      if (httpStatusOf(error) === 404) return 0n;
      if (error instanceof DodoUnavailableError) throw error;
      throw new DodoUnavailableError(`Dodo's balance request failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}
