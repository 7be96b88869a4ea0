/** The toast rules on their own, with a hand-driven clock. */

import { Notifier, SUMMARY_TOAST_ID, summarize, type ToastSpec } from '@/lib/notifier';
import type { WsEvent } from '@/lib/protocol';

let now = 1_700_000_000_000;
let n = 0;

function comment(at = now): WsEvent {
  n += 1;
  return {
    id: `e-${n}`,
    type: 'comment_update',
    data: { post_id: 'p1', comment_id: `c${n}`, action: 'created' },
    timestamp: new Date(at).toISOString(),
  };
}

function setup() {
  const shown: ToastSpec[] = [];
  const notifier = new Notifier((toast) => shown.push(toast), {}, () => now);
  return { shown, notifier };
}

beforeEach(() => {
  jest.useFakeTimers();
});

afterEach(() => {
  jest.useRealTimers();
});

it('gives the first three of a burst a toast each, then one summary updated in place', () => {
  const { shown, notifier } = setup();
  const events = Array.from({ length: 50 }, () => comment());
  for (const event of events) notifier.offer(event, false);
  jest.advanceTimersByTime(1_000);
  const ids = shown.map((toast) => toast.id);
  expect(ids.slice(0, 3)).toEqual(events.slice(0, 3).map((event) => event.id));
  expect(new Set(ids.slice(3))).toEqual(new Set([SUMMARY_TOAST_ID]));
  expect(shown.length).toBeLessThanOrEqual(5); // drawn at once, then at most once a second
  expect(shown.at(-1)).toMatchObject({ title: '47 new comments' });
});

it('gives an event its own toast again once the burst is over, with the summary still up', () => {
  const { shown, notifier } = setup();
  for (let i = 0; i < 10; i += 1) notifier.offer(comment(), false);
  jest.advanceTimersByTime(1_000);
  now += 1_500;
  const single = comment();
  notifier.offer(single, false);
  expect(shown.at(-1)).toMatchObject({ id: single.id, title: 'New comment' });
});

it('skips replayed events older than a minute', () => {
  const { shown, notifier } = setup();
  notifier.offer(comment(now - 61_000), false);
  notifier.offer(comment(now - 30_000), false);
  expect(shown).toHaveLength(1);
});

it('says what a mixed summary holds', () => {
  const counts = new Map([
    ['comment', 12],
    ['post', 3],
  ] as const);
  expect(summarize(new Map(counts), false)).toEqual({
    title: '15 new updates',
    description: '12 new comments, 3 post updates',
  });
  expect(summarize(new Map([['notice', 1]] as const), true)).toEqual({
    title: '1 notice',
    description: 'While you were away',
  });
});
