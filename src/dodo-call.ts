import { type BillingObserver, dodoErrorLabel } from './metrics/observer.js';

/** The HTTP status of an error the `dodopayments` SDK threw, when it has one. */
export function httpStatusOf(error: unknown): number | undefined {
  const status = (error as { status?: unknown } | null)?.status;
  return typeof status === 'number' ? status : undefined;
}

/** Request options that hand the whole deadline to the caller: no SDK retries, one abort signal. */
export interface DeadlineOptions {
  timeout: number;
  maxRetries: 0;
  signal: AbortSignal;
}

/** Who is told how a call went: the SDK method it called, and the observer (`metrics`). */
export interface ObservedCall {
  operation: string;
  observer: Pick<BillingObserver, 'dodoCall'> | undefined;
}

/**
 * Calls Dodo under a deadline of its own: past `timeoutMs` the call is aborted and the promise
 * rejects with `timedOut()`, whatever the SDK's own timeout and retry settings would do. With
 * `observed`, its duration and outcome are reported to the observer.
 */
export async function withDeadline<T>(
  timeoutMs: number,
  timedOut: () => Error,
  call: (options: DeadlineOptions) => Promise<T>,
  observed?: ObservedCall,
): Promise<T> {
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let expired = false;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      expired = true;
      abort.abort();
      reject(timedOut());
    }, timeoutMs);
  });
  const started = observed?.observer ? performance.now() : 0;
  try {
    const result = await Promise.race([
      call({ timeout: timeoutMs, maxRetries: 0, signal: abort.signal }),
      deadline,
    ]);
    observed?.observer?.dodoCall?.(observed.operation, (performance.now() - started) / 1000, undefined);
    return result;
  } catch (error) {
    observed?.observer?.dodoCall?.(
      observed.operation,
      (performance.now() - started) / 1000,
      dodoErrorLabel(error, expired),
    );
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
