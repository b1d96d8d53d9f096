import type { Money } from '../money.js';

interface Reservation {
  amount: Money;
  expiresAt: number;
}

/**
 * One customer's live reservations with their running total. Expired ones are dropped when the
 * earliest expiry has passed, so reading the total is O(1) however many requests are in flight.
 */
export class Reservations {
  private readonly held = new Map<string, Reservation>();
  private total: Money = 0n;
  private earliestExpiry = Number.POSITIVE_INFINITY;
  /** Characters of the ids held, for the store's memory accounting. */
  private idChars = 0;

  /** The sum of the reservations still live at `now`. */
  live(now: number): Money {
    if (now >= this.earliestExpiry) this.dropExpired(now);
    return this.total;
  }

  /** How many reservations are live at `now`, and the characters of their ids. */
  count(now: number): { reservations: number; idChars: number } {
    this.live(now);
    return { reservations: this.held.size, idChars: this.idChars };
  }

  hold(id: string, amount: Money, expiresAt: number): void {
    this.remove(id);
    this.held.set(id, { amount, expiresAt });
    this.idChars += id.length;
    this.total += amount;
    if (expiresAt < this.earliestExpiry) this.earliestExpiry = expiresAt;
  }

  /** Removes a reservation; true when it was still live at `now`. */
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
