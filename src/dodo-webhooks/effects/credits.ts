import type { Logger } from '../../logger.js';
import type { Money } from '../../money.js';
import {
  customerIdOf,
  type Effect,
  readCredits,
  timeOf,
  UnreadableEventError,
  type WebhookType,
} from './context.js';

/** The `credit.*` events that carry a `CreditLedgerEntry`. */
export const LEDGER_EVENTS = [
  'credit.added',
  'credit.deducted',
  'credit.expired',
  'credit.manual_adjustment',
  'credit.rolled_over',
  'credit.rollover_forfeited',
  'credit.overage_charged',
  'credit.overage_reset',
] as const;

/** The ledger events the installed SDK knows (older versions lack `credit.overage_reset`). */
export type LedgerEventType = Extract<WebhookType, (typeof LEDGER_EVENTS)[number]>;

/**
 * Sources of a `credit.deducted` entry that are not metered usage: a debit made through the API
 * (`reference_type: "api"`, as Dodo's ledger example names API-made entries:
 * https://docs.dodopayments.com/developer-resources/webhooks/intents/credit) or by hand. Such a
 * debit took credits Dodo never owed for our usage, so it must not lower the usage still
 * pending here. Anything else is read as a meter's deduction: wrongly taking a usage deduction
 * for a manual one would keep `pending` up for good and refuse the customer, while the reverse
 * only lifts the view until the meter's own deduction arrives.
 */
const NOT_USAGE: ReadonlySet<string> = new Set(['api', 'manual', 'manual_adjustment', 'dashboard', 'admin']);

/**
 * Every `credit.*` ledger movement carries the balance after it: it is applied as an
 * observation of Dodo's balance at the entry's time, so late or out-of-order webhooks never
 * overwrite a newer view (see docs/balance-sync.md). A deduction of metered usage also
 * confirms usage we settled locally, so it is no longer counted as pending.
 */
export const applyLedgerEntry: Effect<LedgerEventType> = async (
  event,
  { store, perCredit, creditEntitlementId, logger, webhookId, retentionMs },
) => {
  const data = event.data as unknown as Record<string, unknown>;
  const customerId = customerIdOf(data);
  if (!customerId || data.balance_after === undefined || data.balance_after === null) {
    logger.warn(`${event.type} without customer or balance_after: balance view unchanged`, {
      type: event.type,
    });
    return;
  }
  if (creditEntitlementId !== undefined && data.credit_entitlement_id !== creditEntitlementId) return;
  // Every field is read before anything is applied: an unreadable one changes nothing.
  const overage =
    data.overage_after === undefined || data.overage_after === null
      ? 0n
      : readCredits(data.overage_after, 'overage_after', perCredit);
  const balance = readCredits(data.balance_after, 'balance_after', perCredit) - overage;
  const observedAt = timeOf(data.created_at, timeOf(event.timestamp, store.now()));
  // Once per ledger entry, however often its delivery is processed.
  const entryId = typeof data.id === 'string' && data.id !== '' ? data.id : `webhook:${webhookId}`;
  if (event.type === 'credit.deducted' && isUsageDeduction(data.reference_type)) {
    const amount = readCredits(data.amount, 'amount', perCredit);
    await store.confirmDeducted(customerId, entryId, amount < 0n ? -amount : amount, retentionMs);
  }
  if (event.type === 'credit.added') {
    // The top-up is recorded before the balance rises, so a settlement that sees the new
    // balance also sees the thresholds drawn from it (alerts as fractions of the last top-up).
    const amount = topUpAmount(data.amount, perCredit, logger);
    if (amount !== undefined)
      await store.recordTopUp(customerId, { topUpId: entryId, amount, at: observedAt });
  }
  await store.syncBalance(customerId, balance, observedAt);
};

/**
 * What a `credit.added` entry added, or `undefined` (logged) when it cannot be read: the
 * balance it reports still applies, only share-of-top-up alerts miss this top-up.
 */
function topUpAmount(value: unknown, perCredit: Money, logger: Logger): Money | undefined {
  try {
    const amount = readCredits(value, 'amount', perCredit);
    return amount > 0n ? amount : undefined;
  } catch (error) {
    if (!(error instanceof UnreadableEventError)) throw error;
    logger.warn('credit.added with an unreadable amount: balance applied, last top-up unchanged', {
      amount: value,
    });
    return undefined;
  }
}

/**
 * Whether a `credit.deducted` entry (a `credit_deducted` ledger entry) is metered usage, by its
 * `reference_type`: the webhooks and the reconciliation job confirm pending usage by the same rule.
 */
export function isUsageDeduction(referenceType: unknown): boolean {
  return !(typeof referenceType === 'string' && NOT_USAGE.has(referenceType.toLowerCase()));
}
