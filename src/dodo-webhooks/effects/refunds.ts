import { BalanceFetcher } from '../../require-credits/balance-fetcher.js';
import { customerIdOf, type Effect, type EffectContext, readMinorUnits } from './context.js';

async function clawBack(
  customerId: string,
  refundId: string,
  minorUnits: number | string,
  currency: unknown,
  context: EffectContext,
) {
  const { store } = context;
  await store.recordRefund(customerId, refundId, readMinorUnits(minorUnits, 'amount', currency));
  // The refunded credits leave Dodo's balance, maybe before their `credit.*` entry reaches us.
  // A stale view still admits what it covers, so the view is corrected from Dodo at once when
  // a client is at hand; marked stale, it is reread on the next refusal or refresh.
  await store.markBalanceStale(customerId);
  await rereadBalance(customerId, context);
}

const REREAD_TIMEOUT_MS = 5_000;

/**
 * Applies Dodo's current balance, read the way `requireCredits` reads it (observed when the
 * call started, 404 as zero, under its own deadline).
 */
async function rereadBalance(customerId: string, context: EffectContext): Promise<void> {
  const { store, dodo, creditEntitlementId, perCredit, logger } = context;
  if (!dodo || creditEntitlementId === undefined) return;
  const fetcher = new BalanceFetcher({
    store,
    dodo,
    creditEntitlementId,
    perCredit,
    timeoutMs: REREAD_TIMEOUT_MS,
  });
  try {
    await fetcher.refresh(customerId);
  } catch (error) {
    logger.warn('balance reread after a refund failed: the view stays stale', { customerId, error });
  }
}

/** `refund.succeeded`: lifetime spend shrinks, and the balance is reread at once. */
export const recordRefund: Effect = async (event, context) => {
  const { data } = event;
  const customerId = customerIdOf(data);
  const refundId = data.refund_id;
  const amount = data.amount;
  if (
    !customerId ||
    typeof refundId !== 'string' ||
    (typeof amount !== 'number' && typeof amount !== 'string')
  ) {
    context.logger.warn('refund.succeeded without customer, refund id or amount: spend unchanged', {
      refundId,
    });
    return;
  }
  await clawBack(customerId, refundId, amount, data.currency, context);
};

/**
 * `dispute.lost`: the disputed amount leaves lifetime spend. Disputes name the payment, not the
 * customer, so the payment is looked up with the `dodo` client.
 */
export const recordLostDispute: Effect = async (event, context) => {
  const { data } = event;
  const disputeId = data.dispute_id;
  const paymentId = data.payment_id;
  const amount = data.amount;
  if (
    typeof disputeId !== 'string' ||
    typeof paymentId !== 'string' ||
    (typeof amount !== 'string' && typeof amount !== 'number')
  ) {
    context.logger.warn('dispute.lost without dispute id, payment id or amount: spend unchanged', {
      disputeId,
    });
    return;
  }
  let customerId = customerIdOf(data);
  if (!customerId && context.dodo) {
    const payment = await context.dodo.payments.retrieve(paymentId);
    customerId = payment.customer.customer_id;
  }
  if (!customerId) {
    context.logger.warn('dispute.lost: pass `dodo` to dodoWebhooks so the customer can be found', {
      disputeId,
    });
    return;
  }
  await clawBack(customerId, `dispute:${disputeId}`, amount, data.currency, context);
};
