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

const warned = new WeakMap<Logger, Set<string>>();

/**
 * Logs a misconfiguration once per logger: every route that mounts the same settings would
 * otherwise repeat it.
 */
export function warnOnce(logger: Logger, message: string): void {
  let messages = warned.get(logger);
  if (!messages) {
    messages = new Set();
    warned.set(logger, messages);
  }
  if (messages.has(message)) return;
  messages.add(message);
  logger.warn(message);
}
