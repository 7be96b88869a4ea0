/**
 * The hook against a real `ws` server on a free port: connecting, resuming with `since`,
 * reconnecting by close code with backoff, dead links, StrictMode and disconnect().
 */

import { act, renderHook } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';

import { lastEventIdKey, type UseWebSocketOptions, useWebSocket } from '@/hooks/useWebSocket';
import type { WsEvent } from '@/lib/protocol';

import { eventFrame, type ServerConnection, TestServer } from './support/wsServer';
import { settle } from './support/wait';

const RealWebSocket = window.WebSocket;
let server: TestServer;
let opened: jest.Mock;

/** The hook's sockets, counted as they are constructed (and still real). */
function spyOnWebSocket(): jest.Mock {
  const spy = jest.fn((url: string, protocols?: string[]) =>
    protocols === undefined ? new RealWebSocket(url) : new RealWebSocket(url, protocols),
  );
  window.WebSocket = spy as unknown as typeof WebSocket;
  return spy;
}

function offered(connection: ServerConnection): string[] {
  return (connection.protocols ?? '').split(',').map((p) => p.trim());
}

async function startServer(script?: (connection: ServerConnection) => void): Promise<void> {
  server = await TestServer.start(script);
}

beforeEach(() => {
  window.sessionStorage.clear();
  opened = spyOnWebSocket();
  // Socket events arrive on real I/O, outside act(); settle() renders what they set.
  const error = console.error;
  jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('not wrapped in act')) return;
    error(...args);
  });
});

afterEach(async () => {
  jest.useRealTimers();
  jest.restoreAllMocks();
  window.WebSocket = RealWebSocket;
  await server?.stop();
});

/** Fake timers for the hook; sockets, promises and the test's own deadlines stay real. */
function useFakeClock(random: number): void {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
  jest.spyOn(Math, 'random').mockReturnValue(random);
}

function advance(ms: number): void {
  act(() => {
    jest.advanceTimersByTime(ms);
  });
}

function setup(options: Partial<UseWebSocketOptions> = {}) {
  const calls = {
    messages: [] as WsEvent[],
    disconnects: [] as { code: number; willReconnect: boolean }[],
    connects: 0,
  };
  const hook = renderHook(
    (props: Partial<UseWebSocketOptions>) =>
      useWebSocket({
        url: server.url,
        onMessage: (event) => calls.messages.push(event),
        onConnect: () => {
          calls.connects += 1;
        },
        onDisconnect: ({ code, willReconnect }) => calls.disconnects.push({ code, willReconnect }),
        ...options,
        ...props,
      }),
    { initialProps: {} },
  );
  return { ...hook, calls };
}

describe('connecting', () => {
  it('opens one socket and hands each event to onMessage', async () => {
    await startServer((c) => c.send(eventFrame('blog_update', { post_id: 'p1', action: 'created' })));
    const { result, calls } = setup();
    await settle(() => calls.messages.length === 1, 'the event');
    expect(result.current.status).toBe('open');
    expect(calls.messages[0]).toMatchObject({ type: 'blog_update', data: { post_id: 'p1' } });
    expect(result.current.lastEventId).toBe(calls.messages[0]!.id);
    expect(server.connections).toHaveLength(1);
    expect(server.connections[0]!.url.search).toBe('');
  });

  it('does not reconnect when the parent passes new inline callbacks on every render', async () => {
    await startServer();
    const seen: string[] = [];
    const { rerender, result } = renderHook(
      ({ label }: { label: string }) =>
        useWebSocket({
          url: server.url,
          onMessage: (event) => seen.push(`${label}:${event.id}`),
          onConnect: () => undefined,
          onDisconnect: () => undefined,
          onError: () => undefined,
          types: ['blog_update', 'comment_update'],
        }),
      { initialProps: { label: 'first' } },
    );
    await settle(() => result.current.status === 'open', 'the socket to open');
    for (const label of ['second', 'third', 'fourth']) rerender({ label });
    const frame = eventFrame();
    server.connections[0]!.send(frame);
    await settle(() => seen.length === 1, 'the event');

    expect(seen).toEqual([`fourth:${frame.id}`]); // the newest callback, not a stale one
    expect(opened).toHaveBeenCalledTimes(1);
    expect(server.connections).toHaveLength(1);
    expect(server.connections[0]!.closedWith).toBeNull();
  });

  it('opens exactly one socket under React StrictMode', async () => {
    await startServer();
    const wrapper = ({ children }: { children: ReactNode }) => <StrictMode>{children}</StrictMode>;
    const onConnect = jest.fn();
    const { result, unmount } = renderHook(() => useWebSocket({ url: server.url, onConnect }), {
      wrapper,
    });
    await settle(() => result.current.status === 'open', 'the socket to open');

    expect(opened).toHaveBeenCalledTimes(1);
    expect(server.connections).toHaveLength(1);
    expect(server.maxOpen).toBe(1);
    expect(onConnect).toHaveBeenCalledTimes(1);

    unmount();
    await settle(() => server.openConnections === 0, 'the socket to close on unmount');
    expect(server.connections[0]!.closedWith).toBe(1000);
  });

  it('sends the JWT as a subprotocol beside wsbroadcast, never in the URL', async () => {
    await startServer();
    const getToken = jest.fn(async () => 'header.payload.signature');
    const { result } = setup({ getToken });
    await settle(() => result.current.status === 'open', 'the socket to open');
    const connection = server.connections[0]!;
    expect(offered(connection)).toEqual(['wsbroadcast', 'bearer.header.payload.signature']);
    expect(connection.url.toString()).not.toContain('header.payload.signature');
    expect(getToken).toHaveBeenCalledWith({ refresh: false });
  });

  it('adds the types and post_id filters to the URL', async () => {
    await startServer();
    const { result } = setup({ types: ['blog_update', 'comment_update'], postId: 'p 7' });
    await settle(() => result.current.status === 'open', 'the socket to open');
    const { searchParams } = server.connections[0]!.url;
    expect(searchParams.get('types')).toBe('blog_update,comment_update');
    expect(searchParams.get('post_id')).toBe('p 7');
  });

  it('gives up at once on a URL that cannot be opened', async () => {
    await startServer();
    const error = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    const onError = jest.fn();
    const { result } = setup({ url: 'not a websocket url', onError });
    await settle(() => result.current.status === 'closed', 'the hook to give up');
    expect(onError).toHaveBeenCalledTimes(1);
    expect(error).toHaveBeenCalledWith('[useWebSocket] cannot open', 'not a websocket url', expect.anything());
  });

  it('logs and drops a frame that is not JSON, and keeps the connection', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await startServer((c) => {
      c.send('{not json');
      c.send(eventFrame());
    });
    const { result, calls } = setup();
    await settle(() => calls.messages.length === 1, 'the good event');
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('dropped a bad frame'));
    expect(result.current.status).toBe('open');
    expect(server.connections).toHaveLength(1);
  });
});

describe('resuming', () => {
  it('sends since=<last id> on every reconnect', async () => {
    jest.spyOn(Math, 'random').mockReturnValue(0); // reconnect at once
    await startServer();
    const { calls } = setup();
    const sent: string[] = [];
    for (let n = 1; n <= 3; n += 1) {
      const connection = await server.connection(n);
      expect(connection.url.searchParams.get('since')).toBe(n === 1 ? null : sent.at(-1));
      const frame = eventFrame();
      connection.send(frame);
      sent.push(frame.id);
      await settle(() => calls.messages.length === n, `event #${n}`);
      connection.socket.terminate(); // the link drops: 1006
    }
    expect(calls.messages.map((m) => m.id)).toEqual(sent);
  });

  it('starts from the since option, and after a reload from the id kept in sessionStorage', async () => {
    const frame = eventFrame();
    await startServer((c) => {
      if (server.connections.length === 1) c.send(frame);
    });
    const first = setup({ since: 'head-at-render' });
    await settle(() => first.calls.messages.length === 1, 'the event');
    expect(server.connections[0]!.url.searchParams.get('since')).toBe('head-at-render');
    expect(window.sessionStorage.getItem(lastEventIdKey(server.url))).toBe(frame.id);
    first.unmount(); // the page goes away

    // The reloaded page was rendered at a newer head, but this tab has missed events since frame.id.
    const second = setup({ since: 'a-newer-head' });
    await settle(() => second.result.current.status === 'open', 'the second page to connect');
    expect(server.connections[1]!.url.searchParams.get('since')).toBe(frame.id);
    expect(second.result.current.lastEventId).toBe(frame.id);
  });

  it('on resync stores the head as the last id and calls onResync', async () => {
    await startServer((c) => {
      if (server.connections.length === 1) {
        c.send({
          type: 'resync',
          data: { reason: 'history_expired', head: 'epoch2-0' },
          timestamp: '2024-01-01T00:00:00Z',
        });
      }
    });
    const onResync = jest.fn();
    const { result, calls } = setup({ since: 'epoch1-41', onResync });
    await settle(() => onResync.mock.calls.length === 1, 'the resync');
    expect(onResync).toHaveBeenCalledWith({ reason: 'history_expired', head: 'epoch2-0' });
    expect(result.current.lastEventId).toBe('epoch2-0');
    expect(calls.messages).toEqual([]);

    server.connections[0]!.socket.terminate();
    const next = await server.connection(2);
    expect(next.url.searchParams.get('since')).toBe('epoch2-0');
  });
});

describe('reconnecting by close code', () => {
  it('backs off exponentially with full jitter, from 0.5 s up to a 20 s ceiling', async () => {
    useFakeClock(0.5); // each delay is half its ceiling
    await startServer((c) => c.socket.close(1013, 'too slow'));
    const { calls } = setup();
    const ceilings = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 20_000, 20_000];
    for (const [n, ceiling] of ceilings.entries()) {
      await settle(() => calls.disconnects.length === n + 1, `close #${n + 1}`);
      expect(calls.disconnects[n]).toEqual({ code: 1013, willReconnect: true });
      const delay = ceiling / 2;
      advance(delay - 1);
      expect(opened).toHaveBeenCalledTimes(n + 1);
      advance(1);
      expect(opened).toHaveBeenCalledTimes(n + 2);
    }
  });

  it('backs off after 4429 (too many attempts)', async () => {
    useFakeClock(0.5);
    await startServer((c) => c.socket.close(4429, 'rate limited'));
    const { calls } = setup();
    await settle(() => calls.disconnects.length === 1, 'the first refusal');
    advance(250);
    await settle(() => calls.disconnects.length === 2, 'the second refusal');
    advance(499); // the second retry waits half of 1 s
    expect(opened).toHaveBeenCalledTimes(2);
    advance(1);
    expect(opened).toHaveBeenCalledTimes(3);
  });

  it.each([
    [4400, 'a bad query parameter'],
    [4403, 'an origin not allowed'],
  ])('stops for good on %i (%s)', async (code) => {
    useFakeClock(0.5);
    await startServer((c) => c.socket.close(code, 'refused'));
    const { result, calls } = setup();
    await settle(() => calls.disconnects.length === 1, 'the refusal');
    advance(120_000);
    expect(calls.disconnects).toEqual([{ code, willReconnect: false }]);
    expect(result.current.status).toBe('closed');
    expect(opened).toHaveBeenCalledTimes(1);
  });

  it('asks getToken for a new token before retrying after 4401', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      if (server.connections.length === 1) c.socket.close(4401, 'token expired');
    });
    const tokens = ['old.token.jwt', 'new.token.jwt'];
    const getToken = jest.fn(() => tokens.shift());
    const { result, calls } = setup({ getToken });
    await settle(() => calls.disconnects.length === 1, 'the 4401');
    advance(250);
    await settle(() => result.current.status === 'open', 'the retry to open');
    expect(getToken.mock.calls).toEqual([[{ refresh: false }], [{ refresh: true }]]);
    expect(offered(server.connections[1]!)).toEqual(['wsbroadcast', 'bearer.new.token.jwt']);
  });

  it('waits a random delay of up to 5 s after 1001 (server shutting down)', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      if (server.connections.length === 1) c.socket.close(1001, 'shutting down');
    });
    const { calls } = setup();
    await settle(() => calls.disconnects.length === 1, 'the 1001');
    expect(calls.disconnects[0]).toEqual({ code: 1001, willReconnect: true });
    advance(2_499);
    expect(opened).toHaveBeenCalledTimes(1);
    advance(1);
    expect(opened).toHaveBeenCalledTimes(2);
  });

  it('gives up after reconnectAttempts failed attempts in a row', async () => {
    useFakeClock(0.5);
    await startServer((c) => c.socket.close(1013, 'at the limit'));
    const { result, calls } = setup({ reconnectAttempts: 2 });
    await settle(() => calls.disconnects.length === 1, 'close #1');
    advance(250);
    await settle(() => calls.disconnects.length === 2, 'close #2');
    advance(500);
    await settle(() => calls.disconnects.length === 3, 'close #3');
    advance(120_000);
    expect(opened).toHaveBeenCalledTimes(3);
    expect(calls.disconnects.map((d) => d.willReconnect)).toEqual([true, true, false]);
    expect(result.current.status).toBe('closed');
  });
});

describe('noticing a dead link', () => {
  it('reconnects with since when nothing, not even a heartbeat, arrives for 2 intervals plus a margin', async () => {
    useFakeClock(0.5);
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const frame = eventFrame();
    await startServer((c) => {
      if (server.connections.length === 1) c.send(frame);
    });
    // Heartbeats every 1 s: silence for 2 s + 1 s margin means dead.
    const { result, calls } = setup({ heartbeatInterval: 1_000 });
    await settle(() => calls.messages.length === 1, 'the event');
    const first = server.connections[0]!;

    const socket = opened.mock.results[0]!.value as WebSocket;
    let frames = 0;
    socket.addEventListener('message', () => {
      frames += 1; // runs in the same dispatch as the hook's own handler
    });

    advance(2_000);
    first.send({ type: 'heartbeat', timestamp: '2024-01-01T00:00:02Z' });
    await settle(() => frames === 1, 'the heartbeat');
    // The heartbeat at 2 s pushed the deadline to 5 s.
    advance(2_999);
    expect(calls.disconnects).toEqual([]);
    advance(1);
    expect(calls.disconnects).toEqual([{ code: 1006, willReconnect: true }]);
    expect(result.current.status).toBe('reconnecting');
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('no message or heartbeat'));
    await settle(() => first.closedWith !== null, 'the dead socket to be closed');

    advance(250);
    const second = await server.connection(2);
    expect(second.url.searchParams.get('since')).toBe(frame.id);
  });

  it('drops the socket when the browser goes offline and reconnects when it is back online', async () => {
    const frame = eventFrame();
    await startServer((c) => {
      if (server.connections.length === 1) c.send(frame);
    });
    const { result, calls } = setup();
    await settle(() => calls.messages.length === 1, 'the event');

    act(() => {
      window.dispatchEvent(new Event('offline'));
    });
    expect(result.current.status).toBe('offline');
    await settle(() => server.connections[0]!.closedWith !== null, 'the socket to close');

    act(() => {
      window.dispatchEvent(new Event('online'));
    });
    const second = await server.connection(2);
    expect(second.url.searchParams.get('since')).toBe(frame.id);
    await settle(() => result.current.status === 'open', 'the socket to open');
  });

  it('retries at once when the tab comes back into view, unless the server asked to wait', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      const n = server.connections.length;
      if (n === 1) c.socket.terminate(); // a lost link
      if (n === 2) c.socket.close(1013, 'too slow');
    });
    const { calls } = setup();
    const showTab = () =>
      act(() => {
        Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      });

    await settle(() => calls.disconnects.length === 1, 'the lost link');
    showTab();
    expect(opened).toHaveBeenCalledTimes(2); // no 250 ms wait

    await settle(() => calls.disconnects.length === 2, 'the 1013');
    showTab();
    expect(opened).toHaveBeenCalledTimes(2); // the backoff holds
    advance(500);
    expect(opened).toHaveBeenCalledTimes(3);
  });
});

describe('disconnect()', () => {
  it('closes the socket and never reconnects', async () => {
    useFakeClock(0.5);
    await startServer();
    const { result, calls } = setup();
    await settle(() => result.current.status === 'open', 'the socket to open');

    act(() => result.current.disconnect());
    expect(result.current.status).toBe('closed');
    await settle(() => server.connections[0]!.closedWith !== null, 'the server to see the close');
    expect(server.connections[0]!.closedWith).toBe(1000);

    act(() => {
      window.dispatchEvent(new Event('online'));
    });
    advance(120_000);
    expect(opened).toHaveBeenCalledTimes(1);
    expect(calls.disconnects).toEqual([{ code: 1000, willReconnect: false }]);
  });
});
