import { customerIdOf, type Effect, timeOf, usdSettlementOf } from './context.js';

/**
 * `payment.succeeded`: lifetime spend grows by what the payment settled in US dollars, tax
 * excluded (`settlement_amount − settlement_tax`), once per payment. `total_amount` is in the
 * customer's currency under adaptive pricing, so it is never counted as dollars.
 */
export const recordSuccessfulPayment: Effect<'payment.succeeded'> = async (event, context) => {
  const { store, logger } = context;
  const { data } = event;
  const customerId = customerIdOf(data);
  const paymentId = data.payment_id;
  if (!customerId || typeof paymentId !== 'string' || paymentId === '') {
    logger.warn('payment.succeeded without customer or payment id: spend unchanged', { paymentId });
    return;
  }
  const settlement = usdSettlementOf(data, context);
  // Nothing paid (a $0 plan's first period): no spend, and no "first payment" for tiers either.
  if (!settlement || settlement.net <= 0n) return;
  const paidAt = timeOf(data.created_at, timeOf(event.timestamp, store.now()));
  await store.recordPayment(customerId, paymentId, settlement.net, paidAt);
};
