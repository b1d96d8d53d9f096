import type { Request, RequestHandler, Response } from 'express';
import type { Billing } from '../../src/index.js';
import { ApiKeys, apiKeyIdOf, customerIdOf } from './api-keys.js';

/** The most a demo key's monthly budget may be, so a typo cannot lift it past the demo's credits. */
const MAX_BUDGET_DOLLARS = 1_000;

function fail(res: Response, status: number, message: string, code: string, param: string | null = null) {
  res.status(status).json({ error: { message, type: 'invalid_request_error', param, code } });
}

/**
 * `POST /billing/keys { "budget": "1.00" }`: a new API key for the caller's customer, with a
 * monthly hard budget (its requests are refused with 402 `budget_exceeded` once it has spent it,
 * whatever the account's balance). The key is shown once; budgets are kept under its id.
 */
export function createKeyRoute(apiKeys: ApiKeys, billing: Billing): RequestHandler {
  return async function createKeyHandler(req: Request, res: Response) {
    const budget: unknown = (req.body as { budget?: unknown } | undefined)?.budget;
    if (
      budget !== undefined &&
      (typeof budget !== 'string' ||
        !/^\d{1,4}(\.\d{1,2})?$/.test(budget) ||
        Number(budget) <= 0 ||
        Number(budget) > MAX_BUDGET_DOLLARS)
    ) {
      fail(
        res,
        400,
        `budget must be a dollar amount as a string, above 0 and at most ${MAX_BUDGET_DOLLARS} ("1.00").`,
        'invalid_budget',
        'budget',
      );
      return;
    }
    const customerId = customerIdOf(req)!;
    const apiKey = ApiKeys.generate();
    const keyId = apiKeys.add(apiKey, customerId);
    try {
      if (budget !== undefined) await billing.setBudget(customerId, keyId, { hard: budget });
    } catch (error) {
      console.error('POST /billing/keys failed:', error);
      fail(res, 503, 'The key could not be created right now. Please retry shortly.', 'billing_unavailable');
      return;
    }
    res.status(201).json({ api_key: apiKey, key_id: keyId, budget: budget ?? null });
  };
}

/** `GET /billing/keys`: the caller's keys, each with its budget this month (exact USD strings). */
export function listKeysRoute(apiKeys: ApiKeys, billing: Billing): RequestHandler {
  return async function listKeysHandler(req: Request, res: Response) {
    const customerId = customerIdOf(req)!;
    try {
      const keys = await Promise.all(
        apiKeys.keysOf(customerId).map(async (keyId) => ({
          key_id: keyId,
          current: keyId === apiKeyIdOf(req),
          budget: (await billing.budget(customerId, keyId)) ?? null,
        })),
      );
      res.json({ keys });
    } catch (error) {
      console.error('GET /billing/keys failed:', error);
      fail(res, 503, 'Keys cannot be read right now. Please retry shortly.', 'billing_unavailable');
    }
  };
}
