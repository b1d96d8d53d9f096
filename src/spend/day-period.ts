const DAY_MS = 86_400_000;

/** How long a day's spend counters are kept by default: a year and a month, for year-on-year views. */
export const SPEND_RETENTION_MS = 400 * DAY_MS;

/** The UTC calendar day of a time, `2026-11-30`. */
export function utcDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
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
