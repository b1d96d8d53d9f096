import { createHash, randomBytes } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';

function digest(apiKey: string): string {
  return createHash('sha256').update(apiKey).digest('base64url');
}

/** Shows a key the way OpenAI's error does: its start and end only. */
function masked(apiKey: string): string {
  return apiKey.length <= 10 ? '***' : `${apiKey.slice(0, 6)}***${apiKey.slice(-4)}`;
}

/**
 * API keys → Dodo customer ids. Keys are kept as SHA-256 digests, so the table never holds a
 * key in clear and a lookup does not compare secrets character by character.
 */
export class ApiKeys {
  private readonly customers = new Map<string, string>();

  constructor(entries: Readonly<Record<string, string>> = {}) {
    for (const [apiKey, customerId] of Object.entries(entries)) this.add(apiKey, customerId);
  }

  /** A fresh key, shaped like OpenAI's: `sk-…`. */
  static generate(prefix = 'sk-demo-'): string {
    return `${prefix}${randomBytes(24).toString('base64url')}`;
  }

  add(apiKey: string, customerId: string): void {
    this.customers.set(digest(apiKey), customerId);
  }

  customerOf(apiKey: string): string | undefined {
    return this.customers.get(digest(apiKey));
  }
}

/** The customer `apiKeyAuth` found for this request (what `customerId(req)` returns). */
export function customerIdOf(req: Request): string | undefined {
  const customerId: unknown = req.res?.locals.customerId;
  return typeof customerId === 'string' ? customerId : undefined;
}

/**
 * `Authorization: Bearer sk-…` → the Dodo customer, in `res.locals.customerId`. No key or a
 * wrong one: 401 with OpenAI's bodies, which the `openai` SDK raises as `AuthenticationError`.
 */
export function apiKeyAuth(keys: ApiKeys): RequestHandler {
  return function apiKeyAuthMiddleware(req: Request, res: Response, next: NextFunction) {
    const header = req.get('authorization') ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      res.status(401).json({
        error: {
          message:
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
          type: 'invalid_request_error',
          param: null,
          code: null,
        },
      });
      return;
    }
    const apiKey = match[1]!;
    const customerId = keys.customerOf(apiKey);
    if (!customerId) {
      res.status(401).json({
        error: {
          message: `Incorrect API key provided: ${masked(apiKey)}.`,
          type: 'invalid_request_error',
          param: null,
          code: 'invalid_api_key',
        },
      });
      return;
    }
    res.locals.customerId = customerId;
    next();
  };
}
