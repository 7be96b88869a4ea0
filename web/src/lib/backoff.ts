/** Reconnect delays: full-jitter exponential backoff, and the random delay after a shutdown. */

export const DEFAULT_BASE_DELAY_MS = 500;
export const DEFAULT_MAX_DELAY_MS = 20_000;
/** Upper bound of the random wait after a 1001 (server shutting down). */
export const RESTART_DELAY_MS = 5_000;

/**
 * The wait before retry number `attempt` (0 for the first): a uniform draw from
 * [0, min(maxMs, baseMs * 2^attempt)), the "full jitter" of AWS's backoff study, so
 * clients cut off together do not come back together.
 */
export function backoffDelay(
  attempt: number,
  baseMs: number = DEFAULT_BASE_DELAY_MS,
  maxMs: number = DEFAULT_MAX_DELAY_MS,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/** The wait after the server said it is shutting down (1001): spread over a few seconds. */
export function restartDelay(random: () => number = Math.random): number {
  return Math.floor(random() * RESTART_DELAY_MS);
}

/** No message, not even a heartbeat, for this long means the link is dead. */
export function staleAfterMs(heartbeatIntervalMs: number): number {
  return 2 * heartbeatIntervalMs + Math.min(5_000, heartbeatIntervalMs);
}
