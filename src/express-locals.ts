import type { RequestBilling } from './billing-context.js';

/**
 * What a handler finds in `res.locals.billing`: the request's customer and id, its model, and
 * `record()` to report usage. It is a `RequestBilling`, typed as this structural view of it (no
 * private members) so that the ESM and the CommonJS declarations of this package, both in one
 * program, declare `Locals.billing` identically; `res.locals.billing instanceof RequestBilling`
 * narrows it to the whole class (`onEnd`…).
 */
export type RequestBillingLocal = Pick<
  RequestBilling,
  'customerId' | 'requestId' | 'model' | 'record' | 'recorded' | 'settledUsage' | 'isEnded'
>;

/*
 * Types `res.locals.billing` for the app through Express's declaration merging of `Locals`, so
 * `res.locals.billing.record(…)` type-checks without a cast wherever `express-llm-billing` is
 * imported.
 */
declare global {
  namespace Express {
    interface Locals {
      /**
       * The request's billing, set by the first billing middleware that runs for it
       * (`requireCredits`, `meterUsage`, `tierRateLimit`, `softCapRouter` or a `chain`): it is
       * there in every handler mounted after one of them, and absent on routes without any.
       * @example res.locals.billing.record({ model: 'gpt-4o', inputTokens: 1200, outputTokens: 300 })
       */
      billing: RequestBillingLocal;
    }
  }
}
