import type { Response } from 'express';
import { formatUsd, type Money } from './money.js';

/**
 * A key budget's headers: what its hard limit leaves after `used` (never below zero), and
 * whether its soft limit is reached. The admission sets them from spend and holds; a JSON
 * answer's settlement sets them again from the spend it left.
 */
export function setBudgetHeaders(
  res: Response,
  limits: { hard?: Money | undefined; soft?: Money | undefined },
  used: Money,
): void {
  if (limits.hard !== undefined) {
    const left = limits.hard - used;
    res.setHeader('x-billing-budget-remaining', formatUsd(left > 0n ? left : 0n));
  }
  if (limits.soft !== undefined && used >= limits.soft)
    res.setHeader('x-billing-budget-soft-limit', 'reached');
}
