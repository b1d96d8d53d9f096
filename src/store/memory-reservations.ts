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

  /** The sum of the reservations still live at `now`. */
  live(now: number): Money {
    if (now >= this.earliestExpiry) this.dropExpired(now);
    return this.total;
  }

  hold(id: string, amount: Money, expiresAt: number): void {
    this.remove(id);
    this.held.set(id, { amount, expiresAt });
    this.total += amount;
    if (expiresAt < this.earliestExpiry) this.earliestExpiry = expiresAt;
  }

  /** Removes a reservation; true when it was still live at `now`. */
  remove(id: string, now = Number.NEGATIVE_INFINITY): boolean {
    const reservation = this.held.get(id);
    if (!reservation) return false;
    this.held.delete(id);
    this.total -= reservation.amount;
    return reservation.expiresAt > now;
  }

  private dropExpired(now: number): void {
    this.total = 0n;
    this.earliestExpiry = Number.POSITIVE_INFINITY;
    for (const [id, reservation] of this.held) {
      if (reservation.expiresAt <= now) {
        this.held.delete(id);
        continue;
      }
      this.total += reservation.amount;
      if (reservation.expiresAt < this.earliestExpiry) this.earliestExpiry = reservation.expiresAt;
    }
  }
}
