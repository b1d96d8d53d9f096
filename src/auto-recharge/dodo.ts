import type DodoPayments from 'dodopayments';
import { findApiAccount } from '../api-account.js';
import { type DeadlineOptions, withDeadline } from '../dodo-call.js';
import { formatCredits, formatUsd, type Money } from '../money.js';
import { DodoUnavailableError } from '../require-credits/balance-fetcher.js';
import { centsOf } from './options.js';

/** A payment as both the API and the webhooks describe it: what a recharge's outcome needs. */
export interface RechargePayment {
  payment_id: string;
  status?: string | null;
  customer: { customer_id: string };
  metadata?: Record<string, unknown> | null;
  error_message?: string | null;
  error_code?: string | null;
}

/** The metadata a recharge's charge carries, so its payment names its attempt wherever it is read. */
export const ATTEMPT_KEY = 'elb_recharge_attempt';
export const AMOUNT_KEY = 'elb_recharge_amount';

/** Every Dodo call a recharge makes, each under its own deadline, with no SDK retries. */
export class RechargeDodo {
  constructor(
    private readonly dodo: DodoPayments,
    private readonly creditEntitlementId: string,
    private readonly perCredit: Money,
    private readonly usagePlanProductId: string,
    private readonly timeoutMs: number,
  ) {}

  private call<T>(what: string, request: (options: DeadlineOptions) => Promise<T>): Promise<T> {
    return withDeadline(
      this.timeoutMs,
      () => new DodoUnavailableError(`Dodo did not answer ${what} within ${this.timeoutMs} ms.`),
      request,
    );
  }

  /**
   * The subscription whose mandate a recharge charges: the customer's API account, active and
   * on-demand (Dodo: "Charging a subscription that is not on-demand may fail",
   * https://docs.dodopayments.com/developer-resources/ondemand-subscriptions). Undefined when
   * they have none, with why.
   */
  async mandate(customerId: string): Promise<{ subscriptionId: string } | { missing: string }> {
    const account = await findApiAccount({
      dodo: this.dodo,
      usagePlanProductId: this.usagePlanProductId,
      customerId,
      timeoutMs: this.timeoutMs,
    });
    if (!account) return { missing: 'the customer has no API account (no saved payment method) to charge' };
    if (!account.on_demand) {
      return {
        missing: `API account ${account.subscription_id} holds no on-demand mandate (opened with saveCard: false)`,
      };
    }
    if (account.status !== 'active') {
      return { missing: `API account ${account.subscription_id} is ${account.status}, not active` };
    }
    return { subscriptionId: account.subscription_id };
  }

  /**
   * Charges the mandate. The endpoint takes no idempotency key (and the SDK sends none): the
   * attempt id travels in the payment's metadata instead, and this call is never retried —
   * an unanswered one is looked up by that id (`findAttempt`) before anything is charged again.
   */
  async charge(subscriptionId: string, attemptId: string, amount: Money): Promise<string> {
    const answer = await this.call('the on-demand charge', (options) =>
      this.dodo.subscriptions.charge(
        subscriptionId,
        {
          product_price: centsOf(amount),
          product_currency: 'USD',
          product_description: 'API credits (auto-recharge)',
          metadata: { [ATTEMPT_KEY]: attemptId, [AMOUNT_KEY]: formatUsd(amount) },
        },
        options,
      ),
    );
    return answer.payment_id;
  }

  retrieve(paymentId: string): Promise<RechargePayment> {
    return this.call('the payment', (options) => this.dodo.payments.retrieve(paymentId, options));
  }

  /** The payment a charge of this attempt made, if Dodo has one (newest payments first). */
  async findAttempt(customerId: string, attemptId: string): Promise<RechargePayment | undefined> {
    const page = await this.call('the payments list', (options) =>
      this.dodo.payments.list({ customer_id: customerId, page_size: 100 }, options),
    );
    return page.items.find((payment) => payment.metadata?.[ATTEMPT_KEY] === attemptId);
  }

  /**
   * Grants a paid recharge's credits through the ledger, once per attempt (the ledger takes an
   * idempotency key; Dodo answers 409 to its reuse). Returns the entry, or undefined when the
   * credits were already granted.
   */
  grant(customerId: string, attemptId: string, amount: Money, paymentId: string) {
    return this.call('the ledger entry', (options) =>
      this.dodo.creditEntitlements.balances.createLedgerEntry(
        customerId,
        {
          credit_entitlement_id: this.creditEntitlementId,
          entry_type: 'credit',
          amount: formatCredits(amount, this.perCredit),
          idempotency_key: `elb-recharge:${attemptId}`,
          reason: 'Auto-recharge',
          metadata: { [ATTEMPT_KEY]: attemptId, payment_id: paymentId },
        },
        options,
      ),
    );
  }
}
