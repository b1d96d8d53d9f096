import type { Effect, EffectContext, EventOf, WebhookType } from './context.js';
import { applyLedgerEntry, LEDGER_EVENTS } from './credits.js';
import { recordSuccessfulPayment } from './payments.js';
import { recordLostDispute, recordRefund } from './refunds.js';
import { recordSubscription, SUBSCRIPTION_EVENTS } from './subscriptions.js';

export type { DodoWebhookEvent, Effect, EffectContext, EventOf, WebhookType } from './context.js';

/** The built-in effect of each event type that has one, typed with the SDK's payload of that type. */
type Effects = { [T in WebhookType]?: (event: EventOf<T>, context: EffectContext) => Promise<void> };

const EFFECTS: Effects = {
  'payment.succeeded': recordSuccessfulPayment,
  'refund.succeeded': recordRefund,
  'dispute.lost': recordLostDispute,
  'dispute.accepted': recordLostDispute,
  ...Object.fromEntries(LEDGER_EVENTS.map((type) => [type, applyLedgerEntry])),
  ...Object.fromEntries(SUBSCRIPTION_EVENTS.map((type) => [type, recordSubscription])),
};

/**
 * Runs the built-in effect of a verified event, if its type has one: every other type of the
 * SDK's union (and any type it does not know yet) is acknowledged without effect.
 */
export async function applyBuiltInEffect(
  event: { type: string; data: unknown },
  context: EffectContext,
): Promise<void> {
  if (!Object.hasOwn(EFFECTS, event.type)) return;
  const effect = EFFECTS[event.type as WebhookType] as Effect<WebhookType>;
  await effect(event as EventOf<WebhookType>, context);
}

/** Whether a type has a built-in effect (the others are acknowledged, unchanged). */
export function hasBuiltInEffect(type: string): boolean {
  return Object.hasOwn(EFFECTS, type);
}
