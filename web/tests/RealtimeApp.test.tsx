/**
 * The app's pieces over one real socket: toasts, the live feed and the status badge share
 * the provider's single connection, and a burst never floods the page with toasts.
 */

import { act, render, screen, within } from '@testing-library/react';
import { toast, Toaster } from 'sonner';

import RealtimeNotifications from '@/components/common/RealtimeNotifications';
import ConnectionBadge from '@/components/realtime/ConnectionBadge';
import LiveFeed from '@/components/realtime/LiveFeed';
import { RealtimeProvider } from '@/components/realtime/RealtimeProvider';

import { eventFrame, TestServer } from './support/wsServer';
import { settle } from './support/wait';

const refresh = jest.fn();
jest.mock('next/navigation', () => ({ useRouter: () => ({ refresh }) }));

let server: TestServer;

beforeEach(async () => {
  window.sessionStorage.clear();
  refresh.mockClear();
  setVisibility('visible');
  toast.dismiss(); // sonner keeps its toasts in a module: none of the last test's may show
  server = await TestServer.start();
  const error = console.error;
  // Socket events arrive on real I/O, outside act(); settle() renders what they set.
  jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('not wrapped in act')) return;
    error(...args);
  });
});

afterEach(async () => {
  jest.useRealTimers();
  jest.restoreAllMocks();
  await server.stop();
});

/** Fake timers for the app; sockets, promises and the test's own deadlines stay real. */
function useFakeClock(): void {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'hrtime'] });
}

function advance(ms: number): void {
  act(() => {
    jest.advanceTimersByTime(ms);
  });
}

function setVisibility(state: 'visible' | 'hidden'): void {
  Object.defineProperty(document, 'visibilityState', { value: state, configurable: true });
  Object.defineProperty(document, 'hidden', { value: state === 'hidden', configurable: true });
}

function renderApp() {
  return render(
    <>
      <RealtimeProvider url={server.url} since="head-at-render">
        <RealtimeNotifications />
        <header>
          <ConnectionBadge />
        </header>
        <LiveFeed />
      </RealtimeProvider>
      <Toaster />
    </>,
  );
}

/** The toasts mounted right now (sonner renders each as an `li[data-sonner-toast]`). */
function mountedToasts(): HTMLElement[] {
  return [...document.querySelectorAll<HTMLElement>('[data-sonner-toast]')];
}

function toasts() {
  return within(screen.getByRole('region', { name: /notifications/i }));
}

function feed(): HTMLElement[] {
  const list = screen.queryByRole('list', { name: 'Live activity' });
  return list ? within(list).queryAllByRole('listitem') : [];
}

async function open(): Promise<void> {
  await settle(() => screen.queryByText('Live') !== null, 'the badge to say Live');
}

it('shows each event as a toast and in the feed, over a single socket', async () => {
  useFakeClock();
  renderApp();
  await open();
  expect(server.connections).toHaveLength(1);
  expect(server.connections[0]!.url.searchParams.get('since')).toBe('head-at-render');

  const connection = server.connections[0]!;
  const frames = [
    eventFrame('blog_update', { post_id: 'p1', action: 'created', title: 'Hello' }),
    eventFrame('blog_update', { post_id: 'p2', action: 'updated' }),
    eventFrame('blog_update', { post_id: 'p3', action: 'deleted' }),
    eventFrame('comment_update', { post_id: 'p1', comment_id: 'c1', action: 'created' }),
    eventFrame('comment_update', { post_id: 'p1', comment_id: 'c1', action: 'updated' }),
    ...['info', 'warning', 'error'].map((level) =>
      eventFrame('system_notification', { message: `A ${level} notice`, level }),
    ),
  ];
  // One at a time, over more than a second each: no burst, every event its own toast.
  for (const [n, frame] of frames.entries()) {
    connection.send({ ...frame, timestamp: new Date().toISOString() });
    await settle(() => feed().length === n + 1, `feed entry #${n + 1}`);
    advance(1_100);
  }
  expect(feed().map((li) => li.querySelector('.feed__title')?.textContent)).toEqual([
    'A error notice',
    'A warning notice',
    'A info notice',
    'Comment edited',
    'New comment',
    'Post removed',
    'Post updated',
    'New post published',
  ]);
  const time = feed()[0]!.querySelector('time');
  expect(time?.getAttribute('dateTime')).toMatch(/^\d{4}-\d\d-\d\dT/);

  await settle(() => toasts().queryByText('A error notice') !== null, 'the last toast');
  expect(toasts().getByText('A error notice')).toBeInTheDocument();
  expect(toasts().queryByText('Comment edited')).toBeNull(); // in the feed only
  expect(server.connections).toHaveLength(1);
});

it('mounts at most a handful of toasts for 500 events in one burst, and keeps the feed bounded', async () => {
  useFakeClock();
  renderApp();
  await open();
  const connection = server.connections[0]!;
  let last = '';
  for (let n = 0; n < 500; n += 1) {
    const frame = eventFrame('comment_update', { post_id: 'p1', comment_id: `c${n}`, action: 'created' });
    connection.send(frame);
    last = frame.id;
  }
  await settle(() => feed()[0]?.getAttribute('data-event-id') === last, 'the last event in the feed');
  advance(1_000); // the summary is redrawn at most once a second
  await settle(() => toasts().queryByText('497 new comments') !== null, 'the summary to count 497');
  expect(mountedToasts().length).toBeLessThanOrEqual(4);
  expect(toasts().getAllByText('New comment')).toHaveLength(3);
  expect(feed()).toHaveLength(50);
});

it('toasts nothing while the tab is hidden, then one summary when it is shown', async () => {
  useFakeClock();
  renderApp();
  await open();
  setVisibility('hidden');
  act(() => {
    document.dispatchEvent(new Event('visibilitychange'));
  });
  const connection = server.connections[0]!;
  connection.send(eventFrame('blog_update', { post_id: 'p1', action: 'created' }));
  for (let n = 0; n < 11; n += 1) {
    connection.send(eventFrame('comment_update', { post_id: 'p1', comment_id: `c${n}`, action: 'created' }));
  }
  await settle(() => feed().length === 12, 'the feed to show all 12');
  advance(5_000);
  expect(mountedToasts()).toHaveLength(0);

  setVisibility('visible');
  act(() => {
    document.dispatchEvent(new Event('visibilitychange'));
  });
  advance(10); // sonner publishes on a timer
  await settle(() => mountedToasts().length === 1, 'one summary toast');
  expect(toasts().getByText('12 new updates')).toBeInTheDocument();
  expect(toasts().getByText('While you were away: 11 new comments, 1 post update')).toBeInTheDocument();
});

it('does not toast replayed events older than a minute, and keeps error notices until dismissed', async () => {
  useFakeClock();
  renderApp();
  await open();
  const connection = server.connections[0]!;
  const old = new Date(Date.now() - 120_000).toISOString();
  connection.send({ ...eventFrame('blog_update', { post_id: 'p1', action: 'created', title: 'Old news' }), timestamp: old });
  connection.send(eventFrame('system_notification', { message: 'Uploads are failing', level: 'error' }));
  connection.send(eventFrame('system_notification', { message: 'Comments reopened', level: 'info' }));
  await settle(() => feed().length === 3, 'the feed');
  advance(10); // sonner publishes on a timer
  await settle(() => toasts().queryByText('Comments reopened') !== null, 'the info toast');
  expect(toasts().queryByText('Old news')).toBeNull();

  advance(60_000); // sonner's 4 s would have closed anything not sticky
  advance(1_000); // and its exit animation
  await settle(() => toasts().queryByText('Comments reopened') === null, 'the info toast to close');
  expect(toasts().getByText('Uploads are failing')).toBeInTheDocument();
});

it('refreshes the page after a random delay of up to 3 s on resync, and marks the feed', async () => {
  useFakeClock();
  jest.spyOn(Math, 'random').mockReturnValue(0.5);
  renderApp();
  await settle(() => server.connections.length === 1, 'the connection');
  server.connections[0]!.send({
    type: 'resync',
    data: { reason: 'history_expired', head: 'e2-0' },
    timestamp: new Date().toISOString(),
  });
  await settle(() => screen.queryByText('Back in sync') !== null, 'the resync marker');
  advance(1_499);
  expect(refresh).not.toHaveBeenCalled();
  advance(1);
  expect(refresh).toHaveBeenCalledTimes(1);
});

it('RealtimeNotifications works with no provider above it: it owns a connection', async () => {
  render(
    <>
      <RealtimeNotifications url={server.url} since="e0" />
      <Toaster />
    </>,
  );
  const connection = await server.connection(1);
  expect(connection.url.searchParams.get('since')).toBe('e0');
  connection.send(eventFrame('blog_update', { post_id: 'p1', action: 'created', title: 'On its own' }));
  await settle(() => toasts().queryByText('On its own') !== null, 'the toast');
  expect(server.connections).toHaveLength(1);
});
