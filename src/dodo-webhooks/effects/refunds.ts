import type DodoPayments from 'dodopayments';
import type { Money } from '../../money.js';
import { BalanceFetcher } from '../../require-credits/balance-fetcher.js';
import {
  callDodo,
  customerIdOf,
  type Effect,
  type EffectContext,
  readDisputeAmount,
  readMinorUnits,
  type Settlement,
  UnreadableEventError,
  usdSettlementOf,
  usdShare,
} from './context.js';

/**
 * Takes `usd` out of lifetime spend once per `changeId`, and makes the balance view reread Dodo:
 * refunded credits leave Dodo's balance, maybe before (or without) a `credit.*` entry reaching us.
 */
async function clawBack(customerId: string, changeId: string, usd: Money, context: EffectContext) {
  const { store } = context;
  await store.recordRefund(customerId, changeId, usd);
  // A stale view still admits what it covers, so the view is corrected from Dodo at once when a
  // client is at hand; marked stale, it is reread on the next refusal or refresh.
  await store.markBalanceStale(customerId);
  await rereadBalance(customerId, context);
}

/**
 * Applies Dodo's current balance, read the way `requireCredits` reads it (observed when the
 * call started, under the effects' deadline). A failure leaves the view stale, not wrong.
 */
async function rereadBalance(customerId: string, context: EffectContext): Promise<void> {
  const { store, dodo, creditEntitlementId, perCredit, logger, dodoTimeoutMs } = context;
  if (!dodo || creditEntitlementId === undefined) return;
  const fetcher = new BalanceFetcher({
    store,
    dodo,
    creditEntitlementId,
    perCredit,
    timeoutMs: dodoTimeoutMs,
    logger,
  });
  try {
    await fetcher.refresh(customerId);
  } catch (error) {
    logger.warn('balance reread after a refund failed: the view stays stale', { customerId, error });
  }
}

/** The payment a refund or a dispute belongs to, read from Dodo under the deadline. */
function paymentOf(paymentId: string, context: EffectContext): Promise<DodoPayments.Payment> {
  const dodo = context.dodo as DodoPayments;
  return callDodo(context, `payments.retrieve(${paymentId})`, 'payments.retrieve', (options) =>
    dodo.payments.retrieve(paymentId, options),
  );
}

/**
 * `refund.succeeded`: lifetime spend shrinks by the refund's share of the payment's USD
 * settlement, and the balance is reread at once. A refund is paid back in the customer's
 * currency, while "the global USD amount remains fixed"
 * (https://docs.dodopayments.com/features/adaptive-currency): a full refund (`is_partial:
 * false`, or no `amount`) takes the payment's whole net settlement out; a partial one its share,
 * `amount × net / total_amount`. The payment is read from Dodo for its settlement; without a
 * `dodo` client only a refund in US dollars can be counted, as it is.
 */
export const recordRefund: Effect<'refund.succeeded'> = async (event, context) => {
  const { data } = event;
  const customerId = customerIdOf(data);
  const refundId = data.refund_id;
  const paymentId = data.payment_id;
  if (!customerId || typeof refundId !== 'string' || typeof paymentId !== 'string') {
    context.logger.warn('refund.succeeded without customer, refund or payment id: spend unchanged', {
      refundId,
    });
    return;
  }
  const amount = data.amount as unknown;
  const whole = data.is_partial === false || amount === null || amount === undefined;
  let usd: Money;
  if (context.dodo) {
    const settlement = usdSettlementOf(await paymentOf(paymentId, context), context);
    if (!settlement)
      return context.store.markBalanceStale(customerId).then(() => rereadBalance(customerId, context));
    usd = whole
      ? settlement.net
      : usdShare(readMinorUnits(amount, 'amount', settlement.currency), settlement);
  } else {
    const currency = typeof data.currency === 'string' ? data.currency : 'USD';
    if (currency.toUpperCase() !== 'USD' || whole) {
      context.warnOnce(
        'refund-without-dodo',
        'dodoWebhooks: a refund in another currency than USD, or without an amount, needs the payment from Dodo to be counted in US dollars: pass the `dodo` client to dodoWebhooks. Spend is left unchanged for it.',
        { refundId },
      );
      return context.store.markBalanceStale(customerId);
    }
    usd = readMinorUnits(amount, 'amount', 'USD');
  }
  await clawBack(customerId, refundId, usd, context);
};

/**
 * `dispute.lost` and `dispute.accepted`: "the funds are returned to the cardholder" in both
 * (https://docs.dodopayments.com/developer-resources/webhooks/intents/dispute), so the disputed
 * share of the payment's USD settlement leaves lifetime spend — once per dispute, whichever
 * arrives. A dispute names the payment, not the customer: the payment is read from Dodo.
 */
export const recordLostDispute: Effect<'dispute.lost' | 'dispute.accepted'> = async (event, context) => {
  const { data } = event;
  const disputeId = data.dispute_id;
  const paymentId = data.payment_id;
  if (typeof disputeId !== 'string' || typeof paymentId !== 'string') {
    context.logger.warn(`${event.type} without dispute or payment id: spend unchanged`, { disputeId });
    return;
  }
  if (!context.dodo) {
    context.warnOnce(
      'dispute-without-dodo',
      `dodoWebhooks: ${event.type} names a payment, not a customer: pass the \`dodo\` client to dodoWebhooks so lost disputes leave lifetime spend.`,
      { disputeId },
    );
    return;
  }
  const payment = await paymentOf(paymentId, context);
  const customerId = customerIdOf(payment);
  if (!customerId) throw new UnreadableEventError(`payment ${paymentId} names no customer`);
  const settlement: Settlement | undefined = usdSettlementOf(payment, context);
  if (!settlement) return;
  const disputed = readDisputeAmount(data.amount as unknown, 'amount', data.currency ?? settlement.currency);
  await clawBack(customerId, `dispute:${disputeId}`, usdShare(disputed, settlement), context);
};
