import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BudgetAbortedError, CallBudget } from '../../src/reconcile/call-budget.js';

describe('CallBudget: at most N calls in any sliding minute', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_790_000_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lets N through at once, then one more each time the oldest slot lapses', async () => {
    const budget = new CallBudget(3);
    const signal = new AbortController().signal;
    const taken: number[] = [];
    const take = async () => {
      await budget.take(signal);
      taken.push(Date.now());
    };
    await take();
    await vi.advanceTimersByTimeAsync(10_000);
    await take();
    await take();
    const fourth = take();
    const fifth = take();
    await vi.advanceTimersByTimeAsync(49_999);
    expect(taken).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1);
    await fourth;
    expect(taken).toHaveLength(4); // the first slot (t = 0) lapsed at t = 60 s
    await vi.advanceTimersByTimeAsync(9_999);
    expect(taken).toHaveLength(4);
    await vi.advanceTimersByTimeAsync(1);
    await fifth;
    const start = taken[0]!;
    expect(taken.map((at) => at - start)).toEqual([0, 10_000, 10_000, 60_000, 70_000]);
    // Any 60-second window holds at most 3.
    for (const at of taken)
      expect(taken.filter((other) => other >= at && other < at + 60_000).length).toBeLessThanOrEqual(3);
  });

  it('stops a waiting caller at once when the job is stopped', async () => {
    const budget = new CallBudget(1);
    const stop = new AbortController();
    await budget.take(stop.signal);
    const waiting = budget.take(stop.signal);
    stop.abort();
    await expect(waiting).rejects.toBeInstanceOf(BudgetAbortedError);
    await expect(budget.take(stop.signal)).rejects.toBeInstanceOf(BudgetAbortedError);
  });
});
