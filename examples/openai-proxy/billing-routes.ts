import type { Request, RequestHandler, Response } from 'express';
import { createApiAccountCheckout, findApiAccount, parseUsd } from '../../src/index.js';
import { customerIdOf } from './api-keys.js';
import { type BalanceSources, balanceReport } from './balance.js';
import type { Wiring } from './wiring.js';

function fail(res: Response, status: number, message: string, type: string, code: string, param?: string) {
  res.status(status).json({ error: { message, type, param: param ?? null, code } });
}

/** `GET /billing/balance`: balance, reserved, tier and limits, usage this period by model. */
export function balanceRoute(sources: BalanceSources): RequestHandler {
  return async function balanceHandler(req: Request, res: Response) {
    try {
      res.json(await balanceReport(sources, customerIdOf(req)!));
    } catch (error) {
      console.error('GET /billing/balance failed:', error);
      fail(
        res,
        503,
        'Billing is temporarily unavailable, so the balance cannot be read. Please retry shortly.',
        'server_error',
        'billing_unavailable',
      );
    }
  };
}

/** The pack a request names (`5`, `"5"`, `"5.00"`), or undefined. */
function packOf(
  packs: Wiring['packs'],
  requested: unknown,
): [dollars: string, productId: string] | undefined {
  if (typeof requested !== 'number' && typeof requested !== 'string') return undefined;
  let amount: bigint;
  try {
    amount = parseUsd(requested, 'pack');
  } catch {
    return undefined;
  }
  return [...packs].find(([dollars]) => parseUsd(dollars, 'pack') === amount);
}

function originOf(wiring: Wiring, req: Request): string {
  return wiring.publicUrl ?? `${req.protocol}://${req.get('host')}`;
}

/**
 * `POST /billing/account` → the caller's API account: `{ status: "open", subscription_id }` when
 * it is open, or `{ status: "checkout", checkout_url }` to open it — the $0 usage plan's checkout,
 * which keeps the card for later charges. Dodo's meters deduct credits only from the plan's
 * subscribers, so this is the sign-up step every customer takes before buying credits.
 */
export function accountRoute(wiring: Wiring): RequestHandler {
  return async function accountHandler(req: Request, res: Response) {
    try {
      const opened = await createApiAccountCheckout({
        dodo: wiring.dodo,
        usagePlanProductId: wiring.usagePlanProductId,
        customer: { customerId: customerIdOf(req)! },
        returnUrl: `${originOf(wiring, req)}/?account=open`,
      });
      if (opened.status === 'exists') {
        res.json({
          status: opened.account.status === 'active' ? 'open' : opened.account.status,
          subscription_id: opened.account.subscription_id,
        });
        return;
      }
      res.json({ status: 'checkout', checkout_url: opened.checkoutUrl, session_id: opened.sessionId });
    } catch (error) {
      console.error('POST /billing/account failed:', error);
      fail(
        res,
        502,
        'The API account could not be opened right now. Please retry shortly.',
        'server_error',
        'checkout_unavailable',
      );
    }
  };
}

/**
 * `POST /billing/top-up { pack: 5 }` → `{ checkout_url }`: a Dodo checkout session for the
 * credit pack, attached to the caller's customer, returning to the status page. Paying it makes
 * Dodo send `payment.succeeded` and `credit.added`, which `dodoWebhooks` applies. A customer
 * whose API account is not open is sent to `POST /billing/account` first: credits Dodo's meters
 * would never deduct must not be sold.
 */
export function topUpRoute(wiring: Wiring): RequestHandler {
  return async function topUpHandler(req: Request, res: Response) {
    const pack = packOf(wiring.packs, (req.body as { pack?: unknown } | undefined)?.pack);
    if (!pack) {
      const offered = [...wiring.packs.keys()].join(', ');
      return fail(
        res,
        400,
        `\`pack\` must be the price of a credit pack in US dollars: one of ${offered}.`,
        'invalid_request_error',
        'unknown_pack',
        'pack',
      );
    }
    const [dollars, productId] = pack;
    const origin = originOf(wiring, req);
    try {
      const account = await findApiAccount({
        dodo: wiring.dodo,
        usagePlanProductId: wiring.usagePlanProductId,
        customerId: customerIdOf(req)!,
      });
      if (account?.status !== 'active') {
        return fail(
          res,
          409,
          `Your API account is not open${account ? ` (it is ${account.status})` : ''}: open it with POST /billing/account, then buy credits.`,
          'invalid_request_error',
          'api_account_required',
        );
      }
      const session = await wiring.dodo.checkoutSessions.create({
        product_cart: [{ product_id: productId, quantity: 1 }],
        customer: { customer_id: customerIdOf(req)! },
        return_url: `${origin}/?topup=${encodeURIComponent(dollars)}`,
        metadata: { pack: dollars },
      });
      res.json({ checkout_url: session.checkout_url, session_id: session.session_id, pack: dollars });
    } catch (error) {
      console.error('POST /billing/top-up failed:', error);
      fail(
        res,
        502,
        'The checkout session could not be created. Please retry shortly.',
        'server_error',
        'checkout_unavailable',
      );
    }
  };
}
