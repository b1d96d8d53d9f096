export { BillingError, ConfigError, StoreError } from './errors.js';
export {
  costOfTokens,
  displayUsd,
  formatCredits,
  formatUsd,
  MONEY_SCALE,
  type ModelPrice,
  type Money,
  moneyFromMinorUnits,
  moneyFromString,
  type PriceInput,
  type PricingInput,
  parseCredits,
  parsePricePerMillion,
  parseUsd,
  resolvePricing,
  type TokenCost,
  UNITS_PER_DOLLAR,
  unitsPerCredit,
} from './money.js';
export type * from './store/types.js';
