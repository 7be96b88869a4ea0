/** Waiting on conditions with a deadline, on the real clock even while a test fakes timers. */

import { act } from '@testing-library/react';

// Taken before any test can install fake timers.
const realSetTimeout = globalThis.setTimeout;

const FACTOR = Number(process.env.WEB_TEST_TIMEOUT_FACTOR ?? '1') || 1;

function nowMs(): number {
  // Date.now() is faked along with the timers; process.hrtime is not.
  return Number(process.hrtime.bigint() / 1_000_000n);
}

function pause(): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, 5));
}

/** Resolve once `condition()` holds; fail naming `what` after `timeoutMs` of real time. */
export async function until(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = nowMs() + timeoutMs * FACTOR;
  while (!condition()) {
    if (nowMs() > deadline) throw new Error(`timed out waiting for ${what}`);
    await pause();
  }
}

/**
 * `until` for conditions on React state: each short wait runs inside act(), so state set by
 * socket events is rendered before the condition is checked again.
 */
export async function settle(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = nowMs() + timeoutMs * FACTOR;
  await act(async () => undefined);
  while (!condition()) {
    if (nowMs() > deadline) throw new Error(`timed out waiting for ${what}`);
    await act(pause);
  }
}
