import { moneyFromMinorUnits } from '../../money.js';
import { customerIdOf, type Effect, type EffectContext, minorUnitDigits } from './context.js';

async function clawBack(
  customerId: string,
  refundId: string,
  minorUnits: number | string,
  currency: unknown,
  context: EffectContext,
) {
  const { store } = context;
  await store.recordRefund(customerId, refundId, moneyFromMinorUnits(minorUnits, minorUnitDigits(currency)));
  // The refunded credits leave Dodo's balance: the next request rereads it before spending.
  await store.markBalanceStale(customerId);
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
