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

/**
 * Calls Dodo under a deadline of its own: past `timeoutMs` the call is aborted and the promise
 * rejects with `timedOut()`, whatever the SDK's own timeout and retry settings would do.
 */
export async function withDeadline<T>(
  timeoutMs: number,
  timedOut: () => Error,
  call: (options: DeadlineOptions) => Promise<T>,
): Promise<T> {
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(timedOut());
    }, timeoutMs);
  });
  try {
    return await Promise.race([call({ timeout: timeoutMs, maxRetries: 0, signal: abort.signal }), deadline]);
  } finally {
    clearTimeout(timer);
  }
}
