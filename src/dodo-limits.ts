/**
 * Limits of Dodo's product catalog that this package plans for, each with the page it rests on.
 * Where two pages disagree, the stricter number is kept (see docs/dodo-model.md).
 */
export const DODO_LIMITS = {
  /**
   * Credit entitlements one product can attach: "You can attach up to 3 credits per product"
   * (https://docs.dodopayments.com/features/credit-based-billing).
   */
  creditsPerProduct: 3,
  /**
   * Meters one usage-based product can link. "A subscription can have up to 3 meters" for the
   * credit-billed meters of https://docs.dodopayments.com/features/credit-based-billing, while
   * https://docs.dodopayments.com/features/usage-based-billing/billing says "up to 10 meters per
   * product": the stricter holds.
   */
  metersPerProduct: 3,
} as const;
