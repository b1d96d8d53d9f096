const WINDOW_MS = 60_000;

/** The job was stopped while it waited for a slot. */
export class BudgetAbortedError extends Error {
  constructor() {
    super('The reconciliation job was stopped.');
    this.name = 'BudgetAbortedError';
  }
}

/**
 * At most `perMinute` calls in any sliding window of one minute: a call takes a slot when it
 * starts, and waits (without polling) for the oldest slot of the window to lapse when none is
 * free. A sliding window, not a fixed one, so no burst of twice the budget straddles a boundary.
 */
export class CallBudget {
  /** Start times of the calls of the last minute, oldest first. */
  private readonly starts: number[] = [];

  constructor(
    readonly perMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Waits for a free slot and takes it; rejects with `BudgetAbortedError` once `signal` aborts. */
  async take(signal: AbortSignal): Promise<void> {
    for (;;) {
      if (signal.aborted) throw new BudgetAbortedError();
      const now = this.now();
      while (this.starts.length > 0 && this.starts[0]! <= now - WINDOW_MS) this.starts.shift();
      if (this.starts.length < this.perMinute) {
        this.starts.push(now);
        return;
      }
      await sleep(this.starts[0]! + WINDOW_MS - now, signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(1, ms));
    timer.unref?.();
    signal.addEventListener('abort', done, { once: true });
  });
}
