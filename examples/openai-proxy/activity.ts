import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { LRUCache } from 'lru-cache';
import {
  type Billing,
  costOfTokens,
  type Money,
  type PricingInput,
  parseUsd,
  RequestBilling,
  resolvePricing,
} from '../../src/index.js';
import { customerIdOf } from './api-keys.js';
import { costCents, usd } from './balance.js';

const DAY_MS = 86_400_000;

/** One billed request, as the status page lists it. */
export interface ActivityEntry {
  requestId: string;
  /** When its billing ended, ms since the epoch. */
  at: number;
  /** The model it was billed at (after any soft-cap downgrade); several calls: the first one's. */
  model: string;
  /** LLM calls the request was billed for (more than one for a handler that makes several). */
  calls: number;
  inputTokens: number;
  outputTokens: number;
  /** What its tokens cost, exactly. */
  cost: Money;
  /** False when a subscription covered it: nothing was taken from the credits. */
  charged: boolean;
  /** True when its usage was estimated (a stream cut before its usage arrived). */
  estimated: boolean;
}

/** Credits spent on one UTC day (`YYYY-MM-DD`). */
export interface DaySpend {
  date: string;
  spend: Money;
}

/**
 * Where the status page reads the spend per day and the recent requests: `billingActivity`
 * reads the days from `billing.spend` and the requests from the process's own log.
 */
export interface ActivitySource {
  /** Every UTC day from `from` to `to` (inclusive), oldest first, with what was spent (0 if nothing). */
  spendByDay(customerId: string, range: { from: Date; to: Date }): Promise<DaySpend[]>;
  /** The customer's latest requests, newest first. */
  recentRequests(customerId: string, limit: number): Promise<ActivityEntry[]>;
  /** What the figures cover, said on the page. */
  readonly coverage: string;
}

export interface ActivityLogOptions {
  /** The price table the app bills with. */
  pricing: PricingInput;
  /** Customers remembered (least recently active forgotten first). @default 10_000 */
  maxCustomers?: number;
  /** Requests remembered per customer. @default 50 */
  maxRequests?: number;
}

export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * A bounded in-memory log of each customer's recent requests, filled as each request's billing
 * ends (what `meterUsage` settled, priced exactly with the app's own table). Bounded in
 * customers and requests, so it never grows with traffic; it starts empty with each process,
 * which the page says. (Spend per day comes from the store, through `billing.spend`.)
 */
export class ActivityLog {
  private readonly customers: LRUCache<string, ActivityEntry[]>;
  private readonly prices;
  private readonly maxRequests: number;

  constructor(options: ActivityLogOptions) {
    this.prices = resolvePricing(options.pricing);
    this.customers = new LRUCache({ max: options.maxCustomers ?? 10_000 });
    this.maxRequests = options.maxRequests ?? 50;
  }

  /**
   * Middleware, mounted after the billing middlewares of a route: logs the request once its
   * billing has ended (settled, so its usage is known), whatever the handler does.
   */
  track(): RequestHandler {
    return (_req: Request, res: Response, next: NextFunction) => {
      const billing = res.locals.billing;
      if (billing instanceof RequestBilling) billing.onEnd((ended) => this.settled(ended));
      next();
    };
  }

  private settled(billing: RequestBilling): void {
    const records = billing.settledUsage;
    if (!records || records.length === 0) return; // refused, or nothing generated: not billed
    let cost = 0n;
    for (const record of records) {
      const price = this.prices.get(record.model);
      if (price) cost += costOfTokens(price, record.inputTokens, record.outputTokens).total;
    }
    this.add(billing.customerId, {
      requestId: billing.requestId,
      at: Date.now(),
      model: records[0]!.model,
      calls: records.length,
      inputTokens: records.reduce((sum, record) => sum + record.inputTokens, 0),
      outputTokens: records.reduce((sum, record) => sum + record.outputTokens, 0),
      cost,
      charged: billing.chargeCredits,
      estimated: records.some((record) => record.estimated === true),
    });
  }

  /** Adds one request to the customer's log (the middleware's path; tests add past ones). */
  add(customerId: string, entry: ActivityEntry): void {
    let requests = this.customers.get(customerId);
    if (!requests) {
      requests = [];
      this.customers.set(customerId, requests);
    }
    requests.push(entry);
    if (requests.length > this.maxRequests) requests.shift();
  }

  async recentRequests(customerId: string, limit: number): Promise<ActivityEntry[]> {
    return (this.customers.peek(customerId) ?? []).slice(-limit).reverse();
  }
}

/**
 * The status page's source: spend per day from `billing.spend` (what the store settled, in every
 * process, exact; days are kept 400 days), recent requests from this process's log.
 */
export function billingActivity(billing: Pick<Billing, 'spend'>, log: ActivityLog): ActivitySource {
  return {
    coverage:
      'spend per day as billed (kept 400 days); recent requests served by this process since it started',
    async spendByDay(customerId, range) {
      const report = await billing.spend(customerId, range);
      return report.days.map((day) => ({ date: day.date, spend: parseUsd(day.cost, 'cost') }));
    },
    recentRequests: (customerId, limit) => log.recentRequests(customerId, limit),
  };
}

/** What `GET /billing/activity` answers. Money: exact decimal USD strings, and `*_display` to the cent. */
export interface ActivityReport {
  customer_id: string;
  currency: 'USD';
  /** What the figures cover. */
  coverage: string;
  /** The last `days` UTC days, oldest first; `bar` is the day's spend in thousandths of the largest day's (rounded up). */
  days: { date: string; spend: string; spend_display: string; bar: number }[];
  /** The newest requests first. */
  recent: {
    request_id: string;
    at: string;
    model: string;
    calls: number;
    input_tokens: number;
    output_tokens: number;
    cost: string;
    cost_display: string;
    charged: boolean;
    estimated: boolean;
  }[];
}

/** Builds the report from a source; `now` decides which days are "the last `days`". */
export async function activityReport(
  source: ActivitySource,
  customerId: string,
  options: { days: number; requests: number; now: number },
): Promise<ActivityReport> {
  const to = new Date(options.now);
  const from = new Date(options.now - (options.days - 1) * DAY_MS);
  const [days, recent] = await Promise.all([
    source.spendByDay(customerId, { from, to }),
    source.recentRequests(customerId, options.requests),
  ]);
  let largest = 0n; // bigint: Math.max would take numbers
  for (const day of days) if (day.spend > largest) largest = day.spend;
  return {
    customer_id: customerId,
    currency: 'USD',
    coverage: source.coverage,
    days: days.map((day) => ({
      date: day.date,
      spend: usd(day.spend),
      spend_display: costCents(day.spend),
      // Exact integer thousandths, rounded up so a day with any spend gets a visible bar.
      bar: largest > 0n && day.spend > 0n ? Number((day.spend * 1000n + largest - 1n) / largest) : 0,
    })),
    recent: recent.map((entry) => ({
      request_id: entry.requestId,
      at: new Date(entry.at).toISOString(),
      model: entry.model,
      calls: entry.calls,
      input_tokens: entry.inputTokens,
      output_tokens: entry.outputTokens,
      cost: usd(entry.cost),
      cost_display: entry.charged ? costCents(entry.cost) : 'plan',
      charged: entry.charged,
      estimated: entry.estimated,
    })),
  };
}

/** `GET /billing/activity?days=14`: spend per day and the latest requests with their cost. */
export function activityRoute(source: ActivitySource): RequestHandler {
  return async function activityHandler(req: Request, res: Response) {
    const days = Number(req.query.days ?? 14);
    if (!Number.isSafeInteger(days) || days < 1 || days > 31) {
      res.status(400).json({
        error: {
          message: '`days` must be a whole number of days from 1 to 31.',
          type: 'invalid_request_error',
          param: 'days',
          code: null,
        },
      });
      return;
    }
    res.json(await activityReport(source, customerIdOf(req)!, { days, requests: 20, now: Date.now() }));
  };
}
