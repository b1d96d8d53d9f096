import { customerIdOf, type Effect, readMinorUnits, timeOf } from './context.js';

/** `payment.succeeded`: lifetime spend grows by the amount paid, once per payment. */
export const recordSuccessfulPayment: Effect = async (event, { store, logger }) => {
  const { data } = event;
  const customerId = customerIdOf(data);
  const paymentId = data.payment_id;
  const amount = data.total_amount;
  if (!customerId || typeof paymentId !== 'string' || typeof amount !== 'number') {
    logger.warn('payment.succeeded without customer, payment id or amount: spend unchanged', { paymentId });
    return;
  }
  const paidAt = timeOf(data.created_at, timeOf(event.timestamp, store.now()));
  await store.recordPayment(
    customerId,
    paymentId,
    readMinorUnits(amount, 'total_amount', data.currency),
    paidAt,
  );
};
