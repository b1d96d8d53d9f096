import type DodoPayments from 'dodopayments';
import {
  type BalanceView,
  type BillingStore,
  displayUsd,
  type Money,
  parseCredits,
  parseUsd,
  type SubscriptionState,
  type Tier,
} from '../../src/index.js';

/** Money as a decimal string of US dollars, at least two decimals, never a float: `"4.99985"`. */
export function usd(amount: Money): string {
  return displayUsd(amount).replace('$', '');
}

/** Money for people, to the cent (`"$4.95"`, `"-$0.05"`), rounded exactly from the bigint. */
export function cents(amount: Money): string {
  return displayUsd(amount, { decimals: 2 });
}

/** A cost for people: to the cent, and `"<$0.01"` for one too small to show as a cent (never `"$0.00"`). */
export function costCents(amount: Money): string {
  const shown = cents(amount);
  return amount > 0n && shown === '$0.00' ? '<$0.01' : shown;
}

export interface BalanceSources {
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  /** Money units per credit. */
  perCredit: Money;
  tiers: readonly Tier[];
  /** Subscription product id → plan name, for the plans with soft caps. */
  plans: Readonly<Record<string, { name: string }>>;
  /** Deadline of the Dodo call made when the store has no balance yet. @default 3000 */
  dodoTimeoutMs?: number;
}

/** What `GET /billing/balance` answers. Money is decimal USD strings; token counts are integers. */
export interface BalanceReport {
  customer_id: string;
  currency: 'USD';
  balance: string;
  reserved: string;
  available: string;
  tier: {
    name: string;
    limits: { rpm: number; tpm: number | null; rpd: number | null };
    lifetime_spend: string;
    next: { name: string; min_spend: string } | null;
  };
  subscription: {
    plan: string;
    product_id: string;
    status: string;
    seats: number;
    period_end: string;
  } | null;
  period: {
    key: string;
    input_tokens: number;
    output_tokens: number;
    cost: string;
    by_model: { model: string; tokens: number; cost: string; cost_display: string }[];
  };
  /** The amounts above as people read them, to the cent (`"$4.95"`, `"<$0.01"`): what the status page shows. */
  display: {
    balance: string;
    available: string;
    reserved: string;
    lifetime_spend: string;
    next_tier_min_spend: string | null;
    period_cost: string;
  };
}

/** The local view, or Dodo's balance when the store has none yet (a first visit, a restart). */
async function balanceView(sources: BalanceSources, customerId: string): Promise<BalanceView> {
  const { store, dodo } = sources;
  const view = await store.getBalance(customerId);
  if (view && view.syncedAt > 0) return view;
  const observedAt = store.now();
  let balance: Money;
  try {
    const answer = await dodo.creditEntitlements.balances.retrieve(
      customerId,
      { credit_entitlement_id: sources.creditEntitlementId },
      { timeout: sources.dodoTimeoutMs ?? 3000, maxRetries: 0 },
    );
    balance = parseCredits(answer.balance, sources.perCredit);
  } catch (error) {
    // Dodo answers 404 for a customer who never had credits: a zero balance.
    if ((error as { status?: unknown }).status !== 404) throw error;
    balance = 0n;
  }
  return (await store.syncBalance(customerId, balance, observedAt)).view;
}

/** The highest tier the lifetime spend (and days since the first payment) unlocks. */
function tierOf(tiers: readonly Tier[], spend: Money, firstPaymentAt: number | undefined, now: number) {
  const days = firstPaymentAt === undefined ? 0 : Math.floor((now - firstPaymentAt) / 86_400_000);
  let index = 0;
  tiers.forEach((tier, at) => {
    if (spend >= parseUsd(tier.minSpend, 'minSpend') && days >= (tier.minDaysSinceFirstPayment ?? 0))
      index = at;
  });
  return { tier: tiers[index]!, next: tiers[index + 1] };
}

function activePlan(
  sources: BalanceSources,
  subscriptions: readonly SubscriptionState[],
): SubscriptionState | undefined {
  return subscriptions
    .filter((subscription) => subscription.status === 'active' && sources.plans[subscription.productId])
    .sort((a, b) => b.updatedAt - a.updatedAt)[0];
}

/**
 * The period whose usage counters the middlewares add to: a subscriber's current billing
 * period (the key `softCapRouter` uses), else the UTC calendar month (`meterUsage`'s default).
 */
function periodKey(subscription: SubscriptionState | undefined, now: number): string {
  return subscription
    ? `subscription:${subscription.subscriptionId}:${subscription.periodStart}`
    : new Date(now).toISOString().slice(0, 7);
}

/** Balance, reservations, tier and limits, and this period's usage by model, from the store. */
export async function balanceReport(sources: BalanceSources, customerId: string): Promise<BalanceReport> {
  const { store } = sources;
  const now = store.now();
  const [view, spend, subscriptions] = await Promise.all([
    balanceView(sources, customerId),
    store.getSpend(customerId),
    store.getSubscriptions(customerId),
  ]);
  const subscription = activePlan(sources, subscriptions);
  const key = periodKey(subscription, now);
  const counters = await store.getUsage(customerId, key);
  const models = Object.keys(counters)
    .filter((name) => name.startsWith('tokens:'))
    .map((name) => name.slice('tokens:'.length))
    .sort();
  const { tier, next } = tierOf(sources.tiers, spend.spend, spend.firstPaymentAt, now);
  return {
    customer_id: customerId,
    currency: 'USD',
    balance: usd(view.balance),
    reserved: usd(view.reserved),
    available: usd(view.available),
    tier: {
      name: tier.name,
      limits: { rpm: tier.rpm, tpm: tier.tpm ?? null, rpd: tier.rpd ?? null },
      lifetime_spend: usd(spend.spend),
      next: next ? { name: next.name, min_spend: usd(parseUsd(next.minSpend, 'minSpend')) } : null,
    },
    subscription: subscription
      ? {
          plan: sources.plans[subscription.productId]!.name,
          product_id: subscription.productId,
          status: subscription.status,
          seats: subscription.quantity,
          period_end: new Date(subscription.periodEnd).toISOString(),
        }
      : null,
    period: {
      key,
      input_tokens: Number(counters.input_tokens ?? 0n),
      output_tokens: Number(counters.output_tokens ?? 0n),
      cost: usd(counters.cost ?? 0n),
      by_model: models.map((model) => ({
        model,
        tokens: Number(counters[`tokens:${model}`] ?? 0n),
        cost: usd(counters[`cost:${model}`] ?? 0n),
        cost_display: costCents(counters[`cost:${model}`] ?? 0n),
      })),
    },
    display: {
      balance: cents(view.balance),
      available: cents(view.available),
      reserved: cents(view.reserved),
      lifetime_spend: cents(spend.spend),
      next_tier_min_spend: next ? cents(parseUsd(next.minSpend, 'minSpend')) : null,
      period_cost: costCents(counters.cost ?? 0n),
    },
  };
}
