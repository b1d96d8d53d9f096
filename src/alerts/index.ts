import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { formatUsd, type Money, parseUsd } from '../money.js';

/** A threshold a customer's balance crossed, going down. */
export interface BalanceAlert {
  kind: 'balance';
  customerId: string;
  /** The threshold crossed, exact decimal USD (`"5"`, `"0.5"`). */
  threshold: string;
  /** The balance before and after the settlement that crossed it, exact decimal USD. */
  before: string;
  balance: string;
}

export type BillingAlert = BalanceAlert;

/** Alerts fired as requests settle, each once per crossing, across every process. */
export interface AlertsOptions {
  /**
   * Balances, in US dollars, that fire an alert when a settlement takes the customer's balance
   * from above one to at or below it. A top-up that lifts the balance above it re-arms it.
   * @example ['5.00', '1.00', '0']
   */
  balanceBelow?: readonly (string | number)[];
  /** Called with each alert; a failure is logged, never a request's. */
  on: (alert: BillingAlert) => void | Promise<void>;
}

/**
 * Fires low-balance alerts from settlements. A settlement deducts its cost atomically, so the
 * balance it moves from and to are known exactly, and exactly one settlement — in whatever
 * process — moves the balance across a threshold: the alert fires once per crossing with no
 * extra store write.
 */
export class BalanceAlerts {
  private readonly thresholds: readonly Money[];

  constructor(
    private readonly options: AlertsOptions,
    private readonly logger: Logger,
  ) {
    if (typeof options?.on !== 'function') {
      throw new ConfigError(
        'ERR_ELB_INVALID_OPTION',
        '`alerts.on` must be a function called with each alert.',
      );
    }
    this.thresholds = (options.balanceBelow ?? []).map((value, index) =>
      parseUsd(value, `alerts.balanceBelow[${index}]`),
    );
  }

  /** A settlement of `cost` left the customer's balance at `balance`. */
  settled(customerId: string, cost: Money, balance: Money | undefined): void {
    if (balance === undefined || cost <= 0n) return;
    const before = balance + cost;
    for (const threshold of this.thresholds) {
      if (before > threshold && balance <= threshold) {
        this.fire({
          kind: 'balance',
          customerId,
          threshold: formatUsd(threshold),
          before: formatUsd(before),
          balance: formatUsd(balance),
        });
      }
    }
  }

  private fire(alert: BillingAlert): void {
    Promise.resolve()
      .then(() => this.options.on(alert))
      .catch((error: unknown) => this.logger.error('an alert callback failed', { alert, error }));
  }
}
