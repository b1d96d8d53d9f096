import { customerIdOf, type Effect, timeOf } from './context.js';

/**
 * `subscription.*`: the plan state soft caps read. The webhook's own timestamp versions it, so
 * an older update arriving late never overwrites a newer one.
 */
export const recordSubscription: Effect = async (event, { store, seatAddonId, logger }) => {
  const { data } = event;
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
  await store.putSubscription(customerId, {
    subscriptionId,
    productId: data.product_id,
    status: typeof data.status === 'string' ? data.status : 'active',
    quantity,
    periodStart: timeOf(data.previous_billing_date, 0),
    periodEnd: timeOf(data.next_billing_date, 0),
    updatedAt: timeOf(event.timestamp, store.now()),
  });
};
