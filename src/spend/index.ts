import { BillingError } from '../errors.js';
import { formatUsd, type Money } from '../money.js';
import type { BillingStore } from '../store/types.js';
import { nextDate, spendDayPeriod, utcDate } from './day-period.js';

/** The most days one `billing.spend` call reads: each day is one store read. */
export const MAX_SPEND_DAYS = 366;

const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The days to report, both included: `YYYY-MM-DD` (UTC), a `Date`, an ISO timestamp or ms since the epoch. */
export interface SpendRange {
  from: string | Date | number;
  to: string | Date | number;
}

/** Cost and tokens of one model on one day. */
export interface ModelSpend {
  /** Exact decimal USD, e.g. `"0.0123"`. */
  cost: string;
  tokens: number;
}

/** One UTC day's spend. */
export interface DaySpend {
  /** `YYYY-MM-DD`, UTC. */
  date: string;
  /** What the credits paid that day: exact decimal USD. */
  cost: string;
  inputTokens: number;
  outputTokens: number;
  tokens: number;
  /** Per model billed that day (usage a subscription covered counts tokens at no cost). */
  models: Record<string, ModelSpend>;
}

/** What `billing.spend` answers: every day of the range, oldest first, and their sum. */
export interface SpendReport {
  from: string;
  to: string;
  currency: 'USD';
  total: { cost: string; inputTokens: number; outputTokens: number; tokens: number };
  days: DaySpend[];
}

function rangeError(message: string): BillingError {
  return new BillingError('ERR_ELB_INVALID_SPEND_RANGE', `billing.spend: ${message}`, { status: 400 });
}

/** A bound of the range as a UTC date, or a clear error naming it. */
function dateOf(value: unknown, name: 'from' | 'to'): string {
  let ms: number;
  if (typeof value === 'string' && DATE.test(value)) ms = Date.parse(`${value}T00:00:00Z`);
  else if (typeof value === 'string') ms = Date.parse(value);
  else if (value instanceof Date) ms = value.getTime();
  else if (typeof value === 'number') ms = value;
  else ms = Number.NaN;
  if (!Number.isFinite(ms) || Number.isNaN(new Date(ms).getTime())) {
    throw rangeError(
      `\`${name}\` must be a date: 'YYYY-MM-DD' (UTC), a Date, an ISO timestamp or ms since the epoch (got ${String(value)}).`,
    );
  }
  const date = utcDate(ms);
  // Date.parse accepts 2026-02-31 as March 3rd: a calendar date must name itself.
  if (typeof value === 'string' && DATE.test(value) && date !== value) {
    throw rangeError(`\`${name}\` is not a calendar date (got ${value}).`);
  }
  return date;
}

/** The UTC dates from `from` to `to`, both included, checked: in order and at most MAX_SPEND_DAYS. */
export function spendDates(range: SpendRange): string[] {
  if (range === null || typeof range !== 'object') throw rangeError('pass `{ from, to }`.');
  const from = dateOf(range.from, 'from');
  const to = dateOf(range.to, 'to');
  if (from > to) throw rangeError(`\`from\` (${from}) is after \`to\` (${to}).`);
  const dates: string[] = [];
  for (let date = from; date <= to; date = nextDate(date)) {
    if (dates.length === MAX_SPEND_DAYS) {
      throw rangeError(
        `the range ${from} to ${to} is longer than ${MAX_SPEND_DAYS} days: ask for it in parts.`,
      );
    }
    dates.push(date);
  }
  return dates;
}

/** Counters of one model, by the name after `cost:` or `tokens:`. */
interface ModelCounters {
  cost: Money;
  tokens: bigint;
}

function dayOf(date: string, counters: Record<string, bigint>): { day: DaySpend; cost: Money } {
  const models = new Map<string, ModelCounters>();
  const modelOf = (name: string) => {
    let model = models.get(name);
    if (!model) {
      model = { cost: 0n, tokens: 0n };
      models.set(name, model);
    }
    return model;
  };
  for (const [name, amount] of Object.entries(counters)) {
    if (name.startsWith('cost:')) modelOf(name.slice(5)).cost += amount;
    else if (name.startsWith('tokens:')) modelOf(name.slice(7)).tokens += amount;
  }
  const cost = counters.cost ?? 0n;
  return {
    cost,
    day: {
      date,
      cost: formatUsd(cost),
      inputTokens: Number(counters.input_tokens ?? 0n),
      outputTokens: Number(counters.output_tokens ?? 0n),
      tokens: Number(counters.tokens ?? 0n),
      // fromEntries: a model named `__proto__` stays a model.
      models: Object.fromEntries(
        [...models].map(([model, spend]) => [
          model,
          { cost: formatUsd(spend.cost), tokens: Number(spend.tokens) },
        ]),
      ),
    },
  };
}

/**
 * A customer's spend by UTC day and by model, from the day counters each settlement adds: every
 * day of the range (empty days as zero), oldest first, and the exact total. Money is summed as
 * integers and formatted once, so the days add up to the total to the last unit.
 */
export async function readSpend(
  store: BillingStore,
  customerId: string,
  range: SpendRange,
): Promise<SpendReport> {
  if (typeof customerId !== 'string' || customerId === '') {
    throw new BillingError(
      'ERR_ELB_INVALID_CUSTOMER',
      'billing.spend: `customerId` must be a non-empty string.',
      {
        status: 400,
      },
    );
  }
  const dates = spendDates(range);
  const counters = await Promise.all(dates.map((date) => store.getUsage(customerId, spendDayPeriod(date))));
  let cost: Money = 0n;
  let inputTokens = 0;
  let outputTokens = 0;
  let tokens = 0;
  const days = dates.map((date, index) => {
    const read = dayOf(date, counters[index]!);
    cost += read.cost;
    inputTokens += read.day.inputTokens;
    outputTokens += read.day.outputTokens;
    tokens += read.day.tokens;
    return read.day;
  });
  return {
    from: dates[0]!,
    to: dates.at(-1)!,
    currency: 'USD',
    total: { cost: formatUsd(cost), inputTokens, outputTokens, tokens },
    days,
  };
}
