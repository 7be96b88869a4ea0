/** Reconnect delays: jittered exponential backoff, and the random delay after a shutdown. */

export const DEFAULT_BASE_DELAY_MS = 500;
export const DEFAULT_MAX_DELAY_MS = 20_000;
/** Upper bound of the first random wait after a 1001 (server shutting down). */
export const RESTART_DELAY_MS = 5_000;

/**
 * The wait before retry number `attempt` (0 for the first): a uniform draw from
 * [baseMs, min(maxMs, baseMs * 2^(attempt + 1))). The jitter keeps clients cut off
 * together from coming back together; the floor keeps a retry from ever being immediate.
 */
export function backoffDelay(
  attempt: number,
  baseMs: number = DEFAULT_BASE_DELAY_MS,
  maxMs: number = DEFAULT_MAX_DELAY_MS,
  random: () => number = Math.random,
): number {
  const ceiling = Math.max(baseMs, Math.min(maxMs, baseMs * 2 ** (Math.max(0, attempt) + 1)));
  return Math.floor(baseMs + random() * (ceiling - baseMs));
}

/**
 * The wait after the server said it is shutting down (1001): spread over a few seconds so
 * a fleet of tabs does not come back at once, the spread doubling with each attempt in a
 * row (a service that stays down is not hammered every 5 s), never under `baseMs`.
 */
export function restartDelay(
  attempt = 0,
  baseMs: number = DEFAULT_BASE_DELAY_MS,
  maxMs: number = DEFAULT_MAX_DELAY_MS,
  random: () => number = Math.random,
): number {
  const ceiling = Math.max(baseMs, Math.min(Math.max(maxMs, RESTART_DELAY_MS), RESTART_DELAY_MS * 2 ** Math.max(0, attempt)));
  return Math.floor(baseMs + random() * (ceiling - baseMs));
}

/** No message, not even a heartbeat, for this long means the link is dead. */
export function staleAfterMs(heartbeatIntervalMs: number): number {
  return 2 * heartbeatIntervalMs + Math.min(5_000, heartbeatIntervalMs);
}
