/**
 * Polls a JSON resource on an interval, free of React: one request at a time, each with a
 * timeout; after a failure, a jittered backoff that grows up to a ceiling (a service that is
 * down is not asked again every few seconds by every open tab); while the tab is hidden, no
 * request, and one at once when it is shown again if one fell due meanwhile.
 */

import { backoffDelay } from '@/lib/backoff';

export interface PollerOptions<T> {
  /** One request; reject (or throw) for a failure. */
  load: (signal: AbortSignal) => Promise<T>;
  onData: (value: T) => void;
  /** A failed poll; `failures` in a row, from 1. */
  onError?: (error: unknown, failures: number) => void;
  intervalMs: number;
  /** Ceiling of the backoff after failures. */
  maxIntervalMs: number;
  /** A request that has not answered after this long is aborted and counts as a failure. */
  timeoutMs: number;
  random?: () => number;
}

export class Poller<T> {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inFlight: AbortController | null = null;
  private failures = 0;
  private running = false;
  /** A poll fell due while the tab was hidden. */
  private due = false;

  constructor(private readonly options: PollerOptions<T>) {}

  /** Start polling: the first request now, or after one interval (`delayFirst`: the page came with data). */
  start(delayFirst = false): void {
    if (this.running) return;
    this.running = true;
    document.addEventListener('visibilitychange', this.handleVisibility);
    if (delayFirst) this.schedule(this.options.intervalMs);
    else void this.poll();
  }

  stop(): void {
    this.running = false;
    document.removeEventListener('visibilitychange', this.handleVisibility);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.inFlight?.abort();
    this.inFlight = null;
  }

  private schedule(delay: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.poll();
    }, delay);
  }

  private async poll(): Promise<void> {
    if (!this.running || this.inFlight !== null) return;
    if (document.visibilityState === 'hidden') {
      this.due = true; // nobody is looking: ask when someone is
      return;
    }
    this.due = false;
    const { load, onData, onError, intervalMs, maxIntervalMs, timeoutMs, random } = this.options;
    const controller = new AbortController();
    this.inFlight = controller;
    const timeout = setTimeout(() => controller.abort(), timeoutMs);
    let delay = intervalMs;
    try {
      const value = await load(controller.signal);
      if (controller !== this.inFlight) return; // stopped meanwhile
      this.failures = 0;
      onData(value);
    } catch (error) {
      if (controller !== this.inFlight) return;
      this.failures += 1;
      onError?.(error, this.failures);
      delay = backoffDelay(this.failures - 1, intervalMs, maxIntervalMs, random);
    } finally {
      clearTimeout(timeout);
      if (controller === this.inFlight) this.inFlight = null;
    }
    if (this.running) this.schedule(delay);
  }

  private readonly handleVisibility = (): void => {
    if (document.visibilityState === 'visible' && this.due && this.timer === null) void this.poll();
  };
}
