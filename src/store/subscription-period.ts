import type { SubscriptionState } from './types.js';

/**
 * The usage period of a subscription's current billing period, as the usage counters name it:
 * a renewal moves `periodStart`, so it starts a new count. RedisStore's `customer-profile.lua`
 * builds the same string to read the period's counters in the profile's round trip.
 */
export function subscriptionPeriod(
  subscription: Pick<SubscriptionState, 'subscriptionId' | 'periodStart'>,
): string {
  return `subscription:${subscription.subscriptionId}:${subscription.periodStart}`;
}
