import type { Money } from '../money.js';

/**
 * What a request holds against a limit counted in a usage period — a subscription's hard cap,
 * an API key's budget — in the limit's unit.
 */
export interface LimitHold {
  period: string;
  unit: 'tokens' | 'cost';
  amount: bigint;
}

interface Reservation {
  amount: Money;
  expiresAt: number;
  limits: readonly LimitHold[];
}

/**
 * One customer's live request holds — credits, and what hard caps and budgets hold — with the running
 * total of the credits. Expired ones are dropped when the earliest expiry has passed, so reading
 * the total is O(1) however many requests are in flight.
 */
export class Reservations {
  private readonly held = new Map<string, Reservation>();
  private total: Money = 0n;
  private earliestExpiry = Number.POSITIVE_INFINITY;
  /** Characters of the ids held, for the store's memory accounting. */
  private idChars = 0;

  /** The sum of the credits still held at `now`. */
  live(now: number): Money {
    if (now >= this.earliestExpiry) this.dropExpired(now);
    return this.total;
  }

  /** How many reservations are live at `now`, and the characters of their ids. */
  count(now: number): { reservations: number; idChars: number } {
    this.live(now);
    return { reservations: this.held.size, idChars: this.idChars };
  }

  /** Whether `id` holds anything at `now`. */
  has(id: string, now: number): boolean {
    const reservation = this.held.get(id);
    return reservation !== undefined && reservation.expiresAt > now;
  }

  /** Whether any request holds anything (so the customer must not be forgotten). */
  get size(): number {
    return this.held.size;
  }

  /** What live holds of `period` add up to against a limit in `unit`. */
  limitHeld(period: string, unit: LimitHold['unit'], now: number): bigint {
    let sum = 0n;
    for (const { limits, expiresAt } of this.held.values()) {
      if (expiresAt <= now) continue;
      for (const limit of limits) if (limit.period === period && limit.unit === unit) sum += limit.amount;
    }
    return sum;
  }

  hold(id: string, amount: Money, expiresAt: number, limits: readonly LimitHold[] = []): void {
    this.remove(id);
    this.held.set(id, { amount, expiresAt, limits });
    this.idChars += id.length;
    this.total += amount;
    if (expiresAt < this.earliestExpiry) this.earliestExpiry = expiresAt;
  }

  /** Removes a request's holds; true when they were still live at `now`. */
  remove(id: string, now = Number.NEGATIVE_INFINITY): boolean {
    const reservation = this.held.get(id);
    if (!reservation) return false;
    this.held.delete(id);
    this.idChars -= id.length;
    this.total -= reservation.amount;
    return reservation.expiresAt > now;
  }

  private dropExpired(now: number): void {
    this.total = 0n;
    this.earliestExpiry = Number.POSITIVE_INFINITY;
    for (const [id, reservation] of this.held) {
      if (reservation.expiresAt <= now) {
        this.held.delete(id);
        this.idChars -= id.length;
        continue;
      }
      this.total += reservation.amount;
      if (reservation.expiresAt < this.earliestExpiry) this.earliestExpiry = reservation.expiresAt;
    }
  }
}
