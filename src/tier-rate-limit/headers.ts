/**
 * A duration the way OpenAI writes `x-ratelimit-reset-*` (Go's format): `20ms`, `1s`, `6m0s`,
 * `1h2m3s`. Seconds are rounded up, so a client that waits that long is never early.
 */
export function openAIDuration(ms: number): string {
  if (Math.ceil(ms) < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  let seconds = Math.ceil(ms / 1000);
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}

/** Seconds of a `retry-after` header: whole seconds, rounded up, at least one. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
