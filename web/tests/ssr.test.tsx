/** @jest-environment node */

/** Server rendering: the hook and the app's pieces render with no window, no socket, no warning. */

import { renderToString } from 'react-dom/server';

import RealtimeNotifications from '@/components/common/RealtimeNotifications';
import PostActivity from '@/components/posts/PostActivity';
import PostComments from '@/components/posts/PostComments';
import ReadersCount from '@/components/posts/ReadersCount';
import TopPosts from '@/components/posts/TopPosts';
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

it('renders the post page and the sidebar on the server: counting, empty, with the server-read list', () => {
  const error = jest.spyOn(console, 'error');
  const html = renderToString(
    <RealtimeProvider url="/api/v1/ws" postId="p1" readers rewind={20}>
      <ReadersCount />
      <PostComments postId="p1" />
      <PostActivity />
      <TopPosts url="/api/v1/ws" initial={{ total: 3, posts: [{ post_id: 'p1', readers: 3 }] }} />
    </RealtimeProvider>,
  );
  expect(html).toContain('Counting readers…');
  expect(html).toContain('No comments yet.');
  expect(html).toContain('href="/posts/p1"');
  expect(error).not.toHaveBeenCalled();
});
