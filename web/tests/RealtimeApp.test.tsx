/**
 * The app's pieces over one real socket: toasts, the live feed and the status badge share
 * the provider's single connection.
 */

import { render, screen, within } from '@testing-library/react';
import { Toaster } from 'sonner';

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
  server = await TestServer.start();
  const error = console.error;
  // Socket events arrive on real I/O, outside act(); settle() renders what they set.
  jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('not wrapped in act')) return;
    error(...args);
  });
});

afterEach(async () => {
  jest.restoreAllMocks();
  await server.stop();
});

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

function toasts() {
  return within(screen.getByRole('region', { name: /notifications/i }));
}

it('shows each event as a toast and in the feed, over a single socket', async () => {
  renderApp();
  await settle(() => screen.queryByText('Live') !== null, 'the badge to say Live');
  expect(screen.getByRole('status')).toHaveTextContent('Live');
  expect(server.connections).toHaveLength(1);
  expect(server.connections[0]!.url.searchParams.get('since')).toBe('head-at-render');

  const connection = server.connections[0]!;
  connection.send(eventFrame('blog_update', { post_id: 'p1', action: 'created', title: 'Hello' }));
  connection.send(eventFrame('blog_update', { post_id: 'p2', action: 'updated' }));
  connection.send(eventFrame('blog_update', { post_id: 'p3', action: 'deleted' }));
  connection.send(eventFrame('comment_update', { post_id: 'p1', comment_id: 'c1', action: 'created' }));
  connection.send(eventFrame('comment_update', { post_id: 'p1', comment_id: 'c1', action: 'updated' }));
  for (const level of ['info', 'warning', 'error']) {
    connection.send(eventFrame('system_notification', { message: `A ${level} notice`, level }));
  }

  const feed = () => within(screen.getByRole('list', { name: 'Live activity' })).queryAllByRole('listitem');
  await settle(
    () => screen.queryByRole('list', { name: 'Live activity' }) !== null && feed().length === 8,
    'eight feed entries',
  );
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

  await settle(() => toasts().queryByText('A error notice') !== null, 'the last toast');
  for (const text of [
    'New post published',
    'Hello',
    'Post updated',
    'Post removed',
    'New comment',
    'A info notice',
    'A warning notice',
    'A error notice',
  ]) {
    expect(toasts().getByText(text)).toBeInTheDocument();
  }
  expect(toasts().queryByText('Comment edited')).toBeNull(); // in the feed only
  expect(server.connections).toHaveLength(1);
});

it('refreshes the page and marks the feed on resync', async () => {
  renderApp();
  await settle(() => server.connections.length === 1, 'the connection');
  server.connections[0]!.send({
    type: 'resync',
    data: { reason: 'history_expired', head: 'e2-0' },
    timestamp: '2024-01-01T00:00:00Z',
  });
  await settle(() => screen.queryByText('Back in sync') !== null, 'the resync marker');
  expect(refresh).toHaveBeenCalledTimes(1);
});
