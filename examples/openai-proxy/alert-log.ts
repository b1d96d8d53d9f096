import type { Request, RequestHandler, Response } from 'express';
import { LRUCache } from 'lru-cache';
import type { BillingAlert } from '../../src/index.js';
import { customerIdOf } from './api-keys.js';

/**
 * The alerts the billing fired for each customer (low balance, a key's budget), newest first,
 * for the status page: where a real app would send an email or a Slack message.
 */
export class AlertLog {
  private readonly customers = new LRUCache<string, (BillingAlert & { at: number })[]>({ max: 10_000 });

  /** The `alerts.on` callback. */
  readonly record = (alert: BillingAlert): void => {
    const alerts = this.customers.get(alert.customerId) ?? [];
    alerts.unshift({ ...alert, at: Date.now() });
    this.customers.set(alert.customerId, alerts.slice(0, 20));
  };

  /** `GET /billing/alerts`: the caller's recent alerts. */
  route(): RequestHandler {
    return (req: Request, res: Response) => {
      res.json({ alerts: this.customers.get(customerIdOf(req)!) ?? [] });
    };
  }
}
