/**
 * The post page's pieces over one real socket (`post_id`, `readers=1`, `rewind`): the reader
 * count, seen at once and announced at a polite pace, the comments live, and the rewound
 * activity, each event once.
 */

import { act, render, screen, within } from '@testing-library/react';

import PostActivity from '@/components/posts/PostActivity';
import PostComments from '@/components/posts/PostComments';
import ReadersCount from '@/components/posts/ReadersCount';
import ConnectionBadge from '@/components/realtime/ConnectionBadge';
import { RealtimeProvider } from '@/components/realtime/RealtimeProvider';
import { ANNOUNCE_INTERVAL_MS } from '@/lib/announce';

import { eventFrame, type ServerConnection, TestServer } from './support/wsServer';
import { settle } from './support/wait';

jest.mock('next/navigation', () => ({ useRouter: () => ({ refresh: jest.fn() }) }));

let server: TestServer;

beforeEach(async () => {
  window.sessionStorage.clear();
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

function useFakeClock(): void {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'hrtime'] });
  jest.spyOn(Math, 'random').mockReturnValue(0);
}

function advance(ms: number): void {
  act(() => {
    jest.advanceTimersByTime(ms);
  });
}

function renderPost(postId = 'p1') {
  return render(
    <RealtimeProvider url={server.url} postId={postId} readers rewind={20}>
      <ConnectionBadge />
      <ReadersCount />
      <PostComments postId={postId} />
      <PostActivity />
    </RealtimeProvider>,
  );
}

function readersFrame(readers: number, postId = 'p1') {
  return { type: 'readers', data: { post_id: postId, readers }, timestamp: new Date().toISOString() };
}

/** What the eye sees, and what the polite live region holds (what a screen reader hears). */
function shown(): string {
  return document.querySelector('.readers__count')?.textContent ?? '';
}

/** The count's live region (the connection badge is a status region too). */
function liveRegion(): HTMLElement {
  return document.querySelector<HTMLElement>('.readers [role="status"]')!;
}

function announced(): string {
  return liveRegion().textContent ?? '';
}

async function connected(): Promise<ServerConnection> {
  return server.connection(1);
}

describe('the subscription', () => {
  it('asks for the post, its reader count and its last 20 events, then resumes without rewinding', async () => {
    useFakeClock();
    renderPost();
    const first = await connected();
    expect(Object.fromEntries(first.url.searchParams)).toEqual({ post_id: 'p1', readers: '1', rewind: '20' });
    const frame = eventFrame('comment_update', { post_id: 'p1', comment_id: 'c1', action: 'created' });
    first.send(frame);
    await settle(() => document.querySelector(`[data-event-id="${frame.id}"]`) !== null, 'the rewound event');

    first.socket.close(1011, 'server error');
    await settle(() => document.querySelector('[data-status="reconnecting"]') !== null, 'the client to see the close');
    advance(1_000); // the first backoff is at most 1 s
    const second = await server.connection(2);
    // A reconnect resumes from its position (the service ignores rewind with since; none is sent).
    expect(Object.fromEntries(second.url.searchParams)).toEqual({ post_id: 'p1', readers: '1', since: frame.id });
  });

  it('refuses a rewind the service would refuse (1 to 100), where it is configured', () => {
    jest.spyOn(console, 'error').mockImplementation(() => undefined); // React reports the throw
    for (const rewind of [0, 101, 2.5]) {
      expect(() =>
        render(
          <RealtimeProvider url={server.url} postId="p1" rewind={rewind}>
            <PostActivity />
          </RealtimeProvider>,
        ),
      ).toThrow(`rewind must be an integer from 1 to 100, not ${rewind}`);
    }
    expect(server.connections).toHaveLength(0);
  });

  it('keeps no position in sessionStorage: each page load rewinds', async () => {
    renderPost();
    const connection = await connected();
    connection.send(eventFrame('blog_update', { post_id: 'p1', action: 'updated' }));
    await settle(() => screen.queryByText('Post updated') !== null, 'the event');
    expect(window.sessionStorage.length).toBe(0);
  });
});

describe('ReadersCount', () => {
  it('shows each count at once, announces the first one, and marks it stale while the link is down', async () => {
    renderPost();
    expect(shown()).toBe('Counting readers…');
    expect(announced()).toBe('');
    const connection = await connected();
    connection.send(readersFrame(3));
    await settle(() => shown() === '3 reading now', 'the count');
    expect(announced()).toBe('3 reading now');
    expect(liveRegion()).toHaveAttribute('aria-live', 'polite');
    // The visible count is not read twice: the region speaks for it.
    expect(document.querySelector('.readers__count')).toHaveAttribute('aria-hidden', 'true');
    expect(document.querySelector('.readers')).not.toHaveAttribute('data-stale');

    // The link drops: the last count stays, marked as stale until the service counts again.
    connection.socket.close(1011, 'server error');
    await settle(() => document.querySelector('.readers[data-stale="true"]') !== null, 'the stale mark');
    expect(shown()).toBe('3 reading now');
    (await server.connection(2)).send(readersFrame(2));
    await settle(() => shown() === '2 reading now', 'the new count');
    expect(document.querySelector('.readers')).not.toHaveAttribute('data-stale');
  });

  it('announces at most once per interval, only a change, and the newest value in the end', async () => {
    useFakeClock();
    renderPost();
    const connection = await connected();
    connection.send(readersFrame(3));
    await settle(() => announced() === '3 reading now', 'the first announcement');

    // 4 then 5 within the interval: seen at once, heard once, as 5, when the interval is up.
    advance(1_000);
    connection.send(readersFrame(4));
    await settle(() => shown() === '4 reading now', 'the count of 4');
    advance(1_000);
    connection.send(readersFrame(5));
    await settle(() => shown() === '5 reading now', 'the count of 5');
    expect(announced()).toBe('3 reading now');
    advance(ANNOUNCE_INTERVAL_MS - 2_000 - 1);
    expect(announced()).toBe('3 reading now');
    advance(1);
    expect(announced()).toBe('5 reading now');

    // 6 and back to 5 within the next interval: nothing new to say, so nothing is said.
    const changes: string[] = [];
    const observer = new MutationObserver(() => changes.push(announced()));
    observer.observe(liveRegion(), { childList: true, characterData: true, subtree: true });
    connection.send(readersFrame(6));
    await settle(() => shown() === '6 reading now', 'the count of 6');
    connection.send(readersFrame(5));
    await settle(() => shown() === '5 reading now', 'the count back at 5');
    advance(ANNOUNCE_INTERVAL_MS);
    await act(async () => undefined);
    expect(changes).toEqual([]);

    // Long after the last announcement, a change is said at once.
    connection.send(readersFrame(2));
    await settle(() => announced() === '2 reading now', 'the announcement of 2');
    observer.disconnect();
  });

  it('exposes the count as data-readers', async () => {
    renderPost();
    const connection = await connected();
    connection.send(readersFrame(7));
    await settle(() => document.querySelector('[data-readers="7"]') !== null, 'data-readers');
  });
});

describe('PostComments', () => {
  it('lists the post’s comments as they come: new, edited, removed, each once', async () => {
    renderPost();
    const connection = await connected();
    const comments = () => {
      const list = screen.queryByRole('list', { name: 'Comments' });
      return list ? within(list).queryAllByRole('listitem').map((li) => li.textContent) : [];
    };
    expect(screen.getByText(/No comments yet/)).toBeInTheDocument();
    const first = eventFrame('comment_update', {
      post_id: 'p1',
      comment_id: 'c1',
      action: 'created',
      author: 'Ada',
      body: 'First!',
    });
    connection.send(first);
    const comment = (data: object) => eventFrame('comment_update', data);
    connection.send(comment({ post_id: 'p2', comment_id: 'x', action: 'created', author: 'Other' }));
    connection.send(comment({ post_id: 'p1', comment_id: 'c2', action: 'created', author: 'Bo', body: 'Hi' }));
    await settle(() => comments().length === 2, 'two comments');
    expect(comments()).toEqual(['AdaFirst!', 'BoHi']);

    connection.send(first); // the same event again (a rewind after a reconnect): no change
    connection.send(comment({ post_id: 'p1', comment_id: 'c1', action: 'updated', body: 'First, edited' }));
    await settle(() => comments()[0] === 'Ada (edited)First, edited', 'the edit');
    connection.send(comment({ post_id: 'p1', comment_id: 'c2', action: 'deleted' }));
    await settle(() => comments().length === 1, 'the removal');
    expect(comments()).toEqual(['Ada (edited)First, edited']);
  });
});

describe('PostActivity', () => {
  it('shows the rewound and the live events newest first, each id once, at most 20', async () => {
    renderPost();
    const connection = await connected();
    const frames = Array.from({ length: 22 }, (_, n) =>
      eventFrame('comment_update', { post_id: 'p1', comment_id: `c${n}`, action: 'created' }),
    );
    for (const frame of frames) connection.send(frame);
    connection.send(frames[21]!); // shown already
    const notice = eventFrame('system_notification', { message: 'Maintenance at 22:00', level: 'warning' });
    connection.send(notice);
    await settle(() => screen.queryByText('Maintenance at 22:00') !== null, 'the notice');
    const items = document.querySelectorAll('[aria-label="Recent activity on this post"] [data-event-id]');
    const ids = [...items].map((li) => li.getAttribute('data-event-id'));
    expect(ids).toEqual([notice.id, ...frames.slice(3).map((frame) => frame.id).reverse()]);
  });
});
