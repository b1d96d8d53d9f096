import type { AdmissionPlan, AdmissionPlans, SubscriptionState } from './types.js';

/**
 * The subscription that covers a request: the most recently updated one (then the larger id),
 * in an active status, to a product of `plans`; a grace period (`graceEndsAt`, a `past_due`
 * subscription's deadline) counts until it ends. RedisStore's `admit.lua` applies the same rule
 * inside its script; the store conformance suite holds the two equal.
 */
export function coveringSubscription(
  subscriptions: Iterable<SubscriptionState>,
  plans: AdmissionPlans,
  now: number,
): { subscription: SubscriptionState; plan: AdmissionPlan } | undefined {
  let best: { subscription: SubscriptionState; plan: AdmissionPlan } | undefined;
  for (const subscription of subscriptions) {
    const plan = plans.byProduct.get(subscription.productId);
    if (!plan || !plans.activeStatuses.includes(subscription.status)) continue;
    if (subscription.graceEndsAt !== undefined && subscription.graceEndsAt <= now) continue;
    const newer =
      !best ||
      subscription.updatedAt > best.subscription.updatedAt ||
      (subscription.updatedAt === best.subscription.updatedAt &&
        subscription.subscriptionId > best.subscription.subscriptionId);
    if (newer) best = { subscription, plan };
  }
  return best;
}

/** A plan's hard cap for this subscription: the amount, times the seats when it is per seat. */
export function hardCapLimit(
  cap: NonNullable<AdmissionPlan['hardCap']>,
  subscription: Pick<SubscriptionState, 'quantity'>,
): bigint {
  return cap.perSeat ? cap.amount * BigInt(Math.max(1, subscription.quantity)) : cap.amount;
}
