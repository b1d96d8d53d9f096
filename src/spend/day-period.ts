const DAY_MS = 86_400_000;

/** How long a day's spend counters are kept by default: a year and a month, for year-on-year views. */
export const SPEND_RETENTION_MS = 400 * DAY_MS;

/** The last day formatted, and the times it covers: every settlement asks, mostly for today. */
let cachedDay = { from: 0, to: 0, date: '' };

/** The UTC calendar day of a time, `2026-11-30`. */
export function utcDate(ms: number): string {
  if (ms >= cachedDay.from && ms < cachedDay.to) return cachedDay.date;
  const date = new Date(ms).toISOString().slice(0, 10);
  const from = ms - (((ms % DAY_MS) + DAY_MS) % DAY_MS);
  cachedDay = { from, to: from + DAY_MS, date };
  return date;
}

/** The UTC calendar month of a time, `2026-11` (from the same cached day). */
export function utcMonth(ms: number): string {
  return utcDate(ms).slice(0, 7);
}

/**
 * The usage period that counts one UTC day's spend. The `day:` prefix keeps it apart from the
 * billing month (`2026-11`), subscription periods (`subscription:…`) and key budgets (`budget:…`).
 */
export function spendDayPeriod(date: string): string {
  return `day:${date}`;
}

/** The day after a `YYYY-MM-DD` date, UTC. */
export function nextDate(date: string): string {
  return utcDate(Date.parse(`${date}T00:00:00Z`) + DAY_MS);
}
