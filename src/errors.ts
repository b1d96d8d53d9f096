/**
 * Every error this package throws or answers with carries a stable `code` (for programs) and,
 * when it becomes an HTTP answer, a `status`.
 */
export class BillingError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(code: string, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BillingError';
    this.code = code;
    this.status = options.status ?? 500;
  }
}

/** Misconfiguration, thrown when a factory runs (at startup). The message names the option. */
export class ConfigError extends BillingError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = 'ConfigError';
  }
}

/**
 * The store's backend failed or timed out (Redis down, a script error). Expected outcomes such
 * as "not enough credits" are return values, never this error.
 */
export class StoreError extends BillingError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('ERR_ELB_STORE_UNAVAILABLE', message, { status: 503, ...options });
    this.name = 'StoreError';
  }
}
