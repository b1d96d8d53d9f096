import type { Request, RequestHandler, Response } from 'express';
import { type AutoRecharge, type Billing, ConfigError, parseUsd } from '../../src/index.js';
import { customerIdOf } from './api-keys.js';
import { cents } from './balance.js';

function fail(res: Response, status: number, message: string, code: string, param: string | null = null) {
  res.status(status).json({ error: { message, type: 'invalid_request_error', param, code } });
}

/** The setting as the API answers it: exact strings, and to the cent for people (`display`). */
function view(setting: AutoRecharge | undefined) {
  if (!setting) return null;
  const show = (amount: string) => cents(parseUsd(amount, 'amount'));
  return {
    ...setting,
    display: {
      threshold: show(setting.threshold),
      amount: show(setting.amount),
      monthly_limit: show(setting.monthlyLimit),
      recharged: show(setting.recharged),
    },
  };
}

/** `GET /billing/auto-recharge`: the caller's auto-recharge and this month's recharges, or `null` when off. */
export function autoRechargeRoute(billing: Billing): RequestHandler {
  return async function autoRechargeHandler(req: Request, res: Response) {
    try {
      res.json({ auto_recharge: view(await billing.autoRecharge(customerIdOf(req)!)) });
    } catch (error) {
      console.error('GET /billing/auto-recharge failed:', error);
      fail(res, 503, 'Auto-recharge cannot be read right now. Please retry shortly.', 'billing_unavailable');
    }
  };
}

/**
 * `PUT /billing/auto-recharge { "threshold": "1.00", "amount": "5.00", "monthly_limit": "20.00" }`
 * opts the caller in (their card is the mandate their API account keeps); `DELETE` turns it off.
 * Amounts are dollar strings; a bad one is a 400 and changes nothing.
 */
export function setAutoRechargeRoute(billing: Billing): RequestHandler {
  return async function setAutoRechargeHandler(req: Request, res: Response) {
    const customerId = customerIdOf(req)!;
    const body = (req.body ?? {}) as Record<string, unknown>;
    const off = req.method === 'DELETE';
    const fields = ['threshold', 'amount', 'monthly_limit'] as const;
    if (!off) {
      const bad = fields.find((field) => typeof body[field] !== 'string');
      if (bad) {
        fail(res, 400, `${bad} must be a dollar amount as a string ("5.00").`, 'invalid_auto_recharge', bad);
        return;
      }
    }
    try {
      await billing.setAutoRecharge(
        customerId,
        off
          ? undefined
          : {
              threshold: body.threshold as string,
              amount: body.amount as string,
              monthlyLimit: body.monthly_limit as string,
            },
      );
      res.json({ auto_recharge: view(await billing.autoRecharge(customerId)) });
    } catch (error) {
      if (error instanceof ConfigError) {
        fail(res, 400, error.message, 'invalid_auto_recharge');
        return;
      }
      console.error(`${req.method} /billing/auto-recharge failed:`, error);
      fail(res, 503, 'Auto-recharge cannot be set right now. Please retry shortly.', 'billing_unavailable');
    }
  };
}
