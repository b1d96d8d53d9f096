import type { Effect } from './context.js';
import { applyLedgerEntry } from './credits.js';
import { recordSuccessfulPayment } from './payments.js';
import { recordLostDispute, recordRefund } from './refunds.js';
import { recordSubscription } from './subscriptions.js';

export type { DodoWebhookEvent, Effect, EffectContext } from './context.js';

const LEDGER_EVENTS = [
  'credit.added',
  'credit.deducted',
  'credit.expired',
  'credit.manual_adjustment',
  'credit.rolled_over',
  'credit.rollover_forfeited',
  'credit.overage_charged',
  'credit.overage_reset',
];

/** The built-in effect of an event type, if it has one. */
export function builtInEffect(type: string): Effect | undefined {
  if (type === 'payment.succeeded') return recordSuccessfulPayment;
  if (type === 'refund.succeeded') return recordRefund;
  if (type === 'dispute.lost') return recordLostDispute;
  if (LEDGER_EVENTS.includes(type)) return applyLedgerEntry;
  if (type.startsWith('subscription.')) return recordSubscription;
  return undefined;
}
