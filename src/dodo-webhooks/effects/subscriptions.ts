import type { SubscriptionState } from '../../store/types.js';
import { customerIdOf, type Effect, timeOf, type WebhookType } from './context.js';

/** The `subscription.*` events, each carrying the subscription. */
export const SUBSCRIPTION_EVENTS = [
  'subscription.active',
  'subscription.renewed',
  'subscription.on_hold',
  'subscription.past_due',
  'subscription.paused',
  'subscription.unpaused',
  'subscription.cancelled',
  'subscription.failed',
  'subscription.expired',
  'subscription.plan_changed',
  'subscription.updated',
  'subscription.update_payment_method',
] as const;

/** The subscription events the installed SDK knows (older versions lack `past_due`, `paused`…). */
export type SubscriptionEventType = Extract<WebhookType, (typeof SUBSCRIPTION_EVENTS)[number]>;

/**
 * `subscription.*`: the plan state soft caps read, with Dodo's own status. The webhook's
 * timestamp versions it, so an older update arriving late never overwrites a newer one.
 * A `past_due` subscription is in Dodo's grace period ("the subscription moves to `on_hold` or
 * to `cancelled`" at `past_due_ends_at`): its deadline is kept, so soft caps keep the plan
 * until then even if the webhook that ends the grace is late.
 */
export const recordSubscription: Effect<SubscriptionEventType> = async (
  event,
  { store, seatAddonId, logger },
) => {
  const data = event.data;
  const customerId = customerIdOf(data);
  const subscriptionId = data.subscription_id;
  if (!customerId || typeof subscriptionId !== 'string' || typeof data.product_id !== 'string') {
    logger.warn(`${event.type} without customer, subscription or product id: plan unchanged`, {
      subscriptionId,
    });
    return;
  }
  const addons = Array.isArray(data.addons)
    ? (data.addons as { addon_id?: unknown; quantity?: unknown }[])
    : [];
  const seatAddon =
    seatAddonId === undefined ? undefined : addons.find((addon) => addon.addon_id === seatAddonId);
  const baseQuantity = typeof data.quantity === 'number' ? data.quantity : 1;
  const quantity = typeof seatAddon?.quantity === 'number' ? seatAddon.quantity : baseQuantity;
  // Any status Dodo sends is kept, including ones an older SDK does not type (`past_due`, `paused`).
  const status: string = typeof data.status === 'string' ? data.status : 'active';
  const state: SubscriptionState = {
    subscriptionId,
    productId: data.product_id,
    status,
    quantity,
    periodStart: timeOf(data.previous_billing_date, 0),
    periodEnd: timeOf(data.next_billing_date, 0),
    updatedAt: timeOf(event.timestamp, store.now()),
  };
  if (status === 'past_due') {
    const endsAt = timeOf((data as { past_due_ends_at?: unknown }).past_due_ends_at, Number.NaN);
    if (Number.isFinite(endsAt)) state.graceEndsAt = endsAt;
  }
  await store.putSubscription(customerId, state);
};
