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
  /** Each customer's key ids, in creation order (what the status page lists). */
  private readonly keyIds = new Map<string, string[]>();

  constructor(entries: Readonly<Record<string, string>> = {}) {
    for (const [apiKey, customerId] of Object.entries(entries)) this.add(apiKey, customerId);
  }

  /** A fresh key, shaped like OpenAI's: `sk-…`. */
  static generate(prefix = 'sk-demo-'): string {
    return `${prefix}${randomBytes(24).toString('base64url')}`;
  }

  /** Registers a key; returns its id, what budgets are kept under (never the key itself). */
  add(apiKey: string, customerId: string): string {
    this.customers.set(digest(apiKey), customerId);
    const keyId = keyIdOf(apiKey);
    this.keyIds.set(customerId, [...(this.keyIds.get(customerId) ?? []), keyId]);
    return keyId;
  }

  /** The ids of a customer's keys, oldest first. */
  keysOf(customerId: string): readonly string[] {
    return this.keyIds.get(customerId) ?? [];
  }

  customerOf(apiKey: string): string | undefined {
    return this.customers.get(digest(apiKey));
  }
}

/** A key's public id: its start, and a digest that names it without revealing it. */
export function keyIdOf(apiKey: string): string {
  return `key_${digest(apiKey).slice(0, 16)}`;
}

/** The id of the key that authenticated this request (what `budgetKey(req)` returns). */
export function apiKeyIdOf(req: Request): string | undefined {
  const keyId: unknown = req.res?.locals.apiKeyId;
  return typeof keyId === 'string' ? keyId : undefined;
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
    res.locals.apiKeyId = keyIdOf(apiKey);
    next();
  };
}
