import { customerIdOf, type Effect, readCredits, timeOf } from './context.js';

/**
 * Every `credit.*` ledger movement carries the balance after it: it is applied as an
 * observation of Dodo's balance at the entry's time, so late or out-of-order webhooks never
 * overwrite a newer view (see docs/balance-sync.md). A deduction also confirms usage we
 * settled locally, so it is no longer counted as pending.
 */
export const applyLedgerEntry: Effect = async (
  event,
  { store, perCredit, creditEntitlementId, logger, webhookId, retentionMs },
) => {
  const { data } = event;
  const customerId = customerIdOf(data);
  if (!customerId || typeof data.balance_after !== 'string') {
    logger.warn(`${event.type} without customer or balance_after: balance view unchanged`, {
      type: event.type,
    });
    return;
  }
  if (creditEntitlementId !== undefined && data.credit_entitlement_id !== creditEntitlementId) return;
  // Every field is read before anything is applied: an unreadable one changes nothing.
  const overage = data.overage_after === undefined ? 0n : readCredits(data, 'overage_after', perCredit);
  const balance = readCredits(data, 'balance_after', perCredit) - overage;
  if (event.type === 'credit.deducted') {
    const amount = readCredits(data, 'amount', perCredit);
    // Once per ledger entry, however often its delivery is processed.
    const entryId = typeof data.id === 'string' && data.id !== '' ? data.id : `webhook:${webhookId}`;
    await store.confirmDeducted(customerId, entryId, amount < 0n ? -amount : amount, retentionMs);
  }
  await store.syncBalance(customerId, balance, timeOf(data.created_at, timeOf(event.timestamp, store.now())));
};
