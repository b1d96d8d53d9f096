import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import { formatUsd, type Money, parseUsd } from '../money.js';
import type { BalanceView } from '../store/types.js';
import { type Fraction, fractionOf, parseFraction } from './fraction.js';

/** A threshold a customer's balance crossed, going down. */
export interface BalanceAlert {
  kind: 'balance';
  customerId: string;
  /** The threshold crossed, exact decimal USD (`"5"`, `"0.5"`). */
  threshold: string;
  /**
   * When the threshold is a share of the last top-up: that share (`"0.1"`) and the top-up's
   * amount, exact decimal USD (`threshold` = `lastTopUp` × `fractionOfLastTopUp`).
   */
  fractionOfLastTopUp?: string;
  lastTopUp?: string;
  /** The balance before and after the settlement that crossed it, exact decimal USD. */
  before: string;
  balance: string;
}

/**
 * A low-balance threshold: an amount in US dollars (`"5.00"`), or a share of the customer's
 * last top-up (`{ fractionOfLastTopUp: "0.1" }`: $2 after a $20 top-up, $5 after a $50 one).
 */
export type BalanceThreshold = string | number | { fractionOfLastTopUp: string | number };

/** A key's spend this period crossed its soft limit, or a share of its hard limit, going up. */
export interface BudgetAlert {
  kind: 'budget';
  customerId: string;
  /** The budget key (`budgetKey(req)`). */
  key: string;
  /** What was crossed: the soft limit, or a percentage of the hard limit (`80`). */
  crossed: 'soft' | number;
  /** The amount crossed, exact decimal USD. */
  threshold: string;
  /** The key's spend this period after the settlement that crossed it, exact decimal USD. */
  spent: string;
  /** The hard limit, when the key has one. */
  hard?: string;
}

export type BillingAlert = BalanceAlert | BudgetAlert;

/** Alerts fired as requests settle — low balances, key budgets — each once per crossing, across every process. */
export interface AlertsOptions {
  /**
   * Balances that fire an alert when a settlement takes the customer's balance from above one
   * to at or below it: amounts in US dollars, or shares of the customer's last top-up (the
   * last `credit.added` entry, auto-recharges included; rounded down to 10⁻¹² USD; a customer
   * with no top-up recorded has no such threshold). A top-up that lifts the balance above a
   * threshold re-arms it, and a new top-up moves the shares with it.
   * @example ['5.00', { fractionOfLastTopUp: '0.25' }, { fractionOfLastTopUp: '0.1' }, '0']
   */
  balanceBelow?: readonly BalanceThreshold[];
  /**
   * Percentages of a key's hard budget whose crossing fires an alert, once per period; a key's
   * soft limit fires one too.
   * @default [50, 80, 100]
   */
  budgetPercents?: readonly number[];
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
  private readonly thresholds: readonly (Money | Fraction)[];
  private readonly budgetPercents: readonly number[];

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
    this.thresholds = (options.balanceBelow ?? []).map(parseThreshold);
    this.budgetPercents = options.budgetPercents ?? [50, 80, 100];
    for (const percent of this.budgetPercents) {
      if (!Number.isInteger(percent) || percent <= 0 || percent > 1000) {
        throw new ConfigError(
          'ERR_ELB_INVALID_OPTION',
          `\`alerts.budgetPercents\` holds whole percentages of a key's hard budget, from 1 to 1000 (got ${percent}).`,
        );
      }
    }
  }

  /**
   * A settlement added `cost` to a key's spend this period, leaving it at `spent`. The store adds
   * it atomically, so exactly one settlement — in whatever process — moves the spend across each
   * threshold: each fires once per period with no extra store write.
   */
  budgetSettled(
    customerId: string,
    budget: { key: string; hard?: Money | undefined; soft?: Money | undefined },
    cost: Money,
    spent: Money,
  ): void {
    if (cost <= 0n) return;
    const before = spent - cost;
    const thresholds: [BudgetAlert['crossed'], Money][] = [];
    if (budget.soft !== undefined) thresholds.push(['soft', budget.soft]);
    if (budget.hard !== undefined) {
      for (const percent of this.budgetPercents) {
        // A share that rounds to nothing is no threshold: spend never crosses $0 going up.
        const share = (budget.hard * BigInt(percent)) / 100n;
        if (share > 0n) thresholds.push([percent, share]);
      }
    }
    for (const [crossed, threshold] of thresholds) {
      if (before >= threshold || spent < threshold) continue;
      this.fire({
        kind: 'budget',
        customerId,
        key: budget.key,
        crossed,
        threshold: formatUsd(threshold),
        spent: formatUsd(spent),
        ...(budget.hard === undefined ? {} : { hard: formatUsd(budget.hard) }),
      });
    }
  }

  /**
   * A settlement of `cost` left the customer's balance view at `view`. Its last top-up comes
   * from the same atomic step as its balance, so every process draws the same shares from it.
   */
  settled(customerId: string, cost: Money, view: BalanceView | undefined): void {
    if (view === undefined || cost <= 0n) return;
    const { balance, lastTopUp } = view;
    const before = balance + cost;
    for (const entry of this.thresholds) {
      const share = typeof entry === 'bigint' ? undefined : entry;
      if (share && lastTopUp === undefined) continue;
      const threshold = share ? fractionOf(lastTopUp!, share) : (entry as Money);
      if (before > threshold && balance <= threshold) {
        this.fire({
          kind: 'balance',
          customerId,
          threshold: formatUsd(threshold),
          ...(share ? { fractionOfLastTopUp: share.text, lastTopUp: formatUsd(lastTopUp!) } : {}),
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

/** One entry of `alerts.balanceBelow`: an amount, or a share of the last top-up. */
function parseThreshold(value: BalanceThreshold, index: number): Money | Fraction {
  const name = `alerts.balanceBelow[${index}]`;
  if (typeof value === 'string' || typeof value === 'number') return parseUsd(value, name);
  if (typeof value === 'object' && value !== null && 'fractionOfLastTopUp' in value) {
    const extra = Object.keys(value).filter((key) => key !== 'fractionOfLastTopUp');
    if (extra.length === 0) return parseFraction(value.fractionOfLastTopUp, `${name}.fractionOfLastTopUp`);
  }
  throw new ConfigError(
    'ERR_ELB_INVALID_OPTION',
    `\`${name}\` must be an amount of US dollars such as "5.00", or a share of the last top-up such as { fractionOfLastTopUp: "0.1" } (got ${JSON.stringify(value) ?? String(value)}).`,
  );
}
