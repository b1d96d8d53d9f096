import type DodoPayments from 'dodopayments';
import { spendableBalance } from '../dodo-balance.js';
import { httpStatusOf, withDeadline } from '../dodo-call.js';
import { ConfigError } from '../errors.js';
import { consoleLogger, type Logger } from '../logger.js';
import type { BillingObserver } from '../metrics/observer.js';
import type { Money } from '../money.js';
import type { BalanceView, BillingStore } from '../store/types.js';

export interface BalanceFetcherOptions {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  perCredit: Money;
  /** Deadline of one Dodo call; the SDK's own timeout and retries never reach a request. */
  timeoutMs: number;
  /** Where a wrong `creditEntitlementId` is named, once. @default consoleLogger */
  logger?: Logger;
  /** Told each call's duration and outcome. */
  metrics?: Pick<BillingObserver, 'dodoCall'> | undefined;
}

/** Dodo did not answer in time or answered an error: the balance is unknown. */
export class DodoUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DodoUnavailableError';
  }
}

/** Whether the configured entitlement exists on Dodo: unknown until a balance answers 404. */
type EntitlementCheck = 'unknown' | 'exists' | ConfigError;

/**
 * Refreshes balance views from Dodo, one call per customer at a time (single flight): every
 * request for that customer waiting on a refresh shares the same call.
 *
 * Dodo answers 404 both for "this customer has no balance yet" (never granted credits: a zero
 * balance) and for "no such credit entitlement" (a wrong `creditEntitlementId`: every customer
 * would read as $0 and be refused with 402). The first 404 is told apart by reading the
 * entitlement itself, once: a missing entitlement is a `ConfigError`, logged once with the fix,
 * and every refresh fails with it (503, not 402).
 */
export class BalanceFetcher {
  private readonly inFlight = new Map<string, Promise<BalanceView>>();
  private entitlement: EntitlementCheck = 'unknown';
  private checking: Promise<void> | undefined;

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
    if (this.entitlement instanceof ConfigError) throw this.entitlement;
    // The observation is stamped when the call starts: Dodo's answer reflects at least
    // everything that happened before, so it is never mistaken for newer than it is.
    const observedAt = store.now();
    const balance = await this.fetch(customerId);
    return (await store.syncBalance(customerId, balance, observedAt)).view;
  }

  private async fetch(customerId: string): Promise<Money> {
    const { dodo, creditEntitlementId, perCredit } = this.options;
    try {
      const answer = await this.call(
        'the balance request',
        'creditEntitlements.balances.retrieve',
        (options) =>
          dodo.creditEntitlements.balances.retrieve(
            customerId,
            { credit_entitlement_id: creditEntitlementId },
            options,
          ),
      );
      return spendableBalance(answer, perCredit);
    } catch (error) {
      if (httpStatusOf(error) !== 404) throw this.unavailable(error, 'balance request');
      await this.checkEntitlement();
      if (this.entitlement instanceof ConfigError) throw this.entitlement;
      // The entitlement exists: the customer has never had credits. That is a zero balance.
      return 0n;
    }
  }

  /** Reads the entitlement once (single flight) to tell "no balance yet" from "no such entitlement". */
  private checkEntitlement(): Promise<void> {
    if (this.entitlement !== 'unknown') return Promise.resolve();
    this.checking ??= this.readEntitlement().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async readEntitlement(): Promise<void> {
    const { dodo, creditEntitlementId, logger = consoleLogger } = this.options;
    try {
      await this.call('the credit entitlement request', 'creditEntitlements.retrieve', (options) =>
        dodo.creditEntitlements.retrieve(creditEntitlementId, options),
      );
      this.entitlement = 'exists';
    } catch (error) {
      if (httpStatusOf(error) !== 404) throw this.unavailable(error, 'credit entitlement request');
      const misconfigured = new ConfigError(
        'ERR_ELB_UNKNOWN_CREDIT_ENTITLEMENT',
        `creditEntitlementId ${JSON.stringify(creditEntitlementId)} is not a credit entitlement of this Dodo account (Dodo answers 404): every balance would read as $0. Set it to the id \`express-llm-billing setup\` prints (Products → Credits in Dodo's dashboard), with an API key of the same account and mode (test or live). Requests are answered 503 until it is fixed.`,
      );
      this.entitlement = misconfigured;
      logger.error(misconfigured.message, { code: misconfigured.code });
    }
  }

  private call<T>(
    what: string,
    operation: string,
    call: (options: { timeout: number; maxRetries: 0; signal: AbortSignal }) => Promise<T>,
  ): Promise<T> {
    const { timeoutMs } = this.options;
    return withDeadline(
      timeoutMs,
      () => new DodoUnavailableError(`Dodo did not answer ${what} within ${timeoutMs} ms.`),
      call,
      { operation, observer: this.options.metrics },
    );
  }

  private unavailable(error: unknown, what: string): Error {
    if (error instanceof DodoUnavailableError) return error;
    return new DodoUnavailableError(`Dodo's ${what} failed: ${(error as Error).message}`, { cause: error });
  }
}
