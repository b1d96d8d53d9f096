/** Where the middlewares report what they do not answer with (fail-open passes, retries, dead letters). */
export interface Logger {
  warn(message: string, details?: Record<string, unknown>): void;
  error(message: string, details?: Record<string, unknown>): void;
}

/** Default logger: one line on stderr, prefixed so it can be grepped. */
export const consoleLogger: Logger = {
  warn: (message, details) => console.warn(`[express-llm-billing] ${message}`, details ?? ''),
  error: (message, details) => console.error(`[express-llm-billing] ${message}`, details ?? ''),
};
