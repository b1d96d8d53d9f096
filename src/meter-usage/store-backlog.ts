/**
 * Store writes that could not be made because the store was down, kept in order and retried
 * first on every drain of the outbox: they are idempotent, so one that did land and is retried
 * changes nothing. Bounded: past `max`, a write is refused and the caller says what is lost.
 */
export class StoreBacklog {
  private readonly writes: (() => Promise<unknown>)[] = [];

  constructor(private readonly max: number) {}

  get size(): number {
    return this.writes.length;
  }

  /** Keeps `write` for a later retry; false when the backlog is full. */
  add(write: () => Promise<unknown>): boolean {
    if (this.writes.length >= this.max) return false;
    this.writes.push(write);
    return true;
  }

  /** Retries the writes in order, stopping at the first that fails; resolves with its error. */
  async retry(): Promise<unknown> {
    while (this.writes.length > 0) {
      try {
        await this.writes[0]!();
      } catch (error) {
        return error;
      }
      this.writes.shift();
    }
    return undefined;
  }
}
