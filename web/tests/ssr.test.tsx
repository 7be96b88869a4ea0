/** @jest-environment node */

/** Server rendering: the hook and the app's pieces render with no window, no socket, no warning. */

import { renderToString } from 'react-dom/server';

import RealtimeNotifications from '@/components/common/RealtimeNotifications';
import ConnectionBadge from '@/components/realtime/ConnectionBadge';
import LiveFeed from '@/components/realtime/LiveFeed';
import { RealtimeProvider } from '@/components/realtime/RealtimeProvider';

jest.mock('next/navigation', () => ({ useRouter: () => ({ refresh: jest.fn() }) }));

it('renders on the server as connecting, with an empty feed and no warning', () => {
  const error = jest.spyOn(console, 'error');
  const html = renderToString(
    <RealtimeProvider url="ws://localhost:8000/api/v1/ws" since="e1-0">
      <RealtimeNotifications />
      <ConnectionBadge />
      <LiveFeed />
    </RealtimeProvider>,
  );
  expect(typeof window).toBe('undefined');
  expect(html).toContain('Connecting…');
  expect(html).toContain('Nothing yet.');
  expect(error).not.toHaveBeenCalled();
});

it('renders on the server with a relative URL and filters (resolved later, in the browser)', () => {
  const html = renderToString(
    <RealtimeProvider url="/api/v1/ws" postId="p1" types={['comment_update']}>
      <ConnectionBadge />
    </RealtimeProvider>,
  );
  expect(html).toContain('Connecting…');
});

it('renders RealtimeNotifications with no provider above it', () => {
  expect(renderToString(<RealtimeNotifications url="ws://localhost:8000/api/v1/ws" />)).toBe('');
});
