/**
 * The hook against a real `ws` server on a free port: connecting, resuming with `since`,
 * reconnecting by close code with backoff, dead links, StrictMode and disconnect().
 */

import net from 'node:net';

import { act, renderHook } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';

import { lastEventIdKey, type UseWebSocketOptions, useWebSocket } from '@/hooks/useWebSocket';
import { SubscribeUrlError, type WsEvent } from '@/lib/protocol';

import { eventFrame, type ServerConnection, TestServer } from './support/wsServer';
import { settle, until } from './support/wait';

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
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'hrtime'] });
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

  it('throws a clear error for a URL that cannot work, instead of a silent disconnect', async () => {
    await startServer();
    jest.spyOn(console, 'error').mockImplementation(() => undefined); // React reports the throw
    expect(() => setup({ url: 'ftp://example.com/ws' })).toThrow(SubscribeUrlError);
    expect(() => setup({ url: 'ftp://example.com/ws' })).toThrow(/scheme must be ws:, wss:, http: or https:/);
    expect(opened).not.toHaveBeenCalled();
  });

  it('resolves a relative URL against the page (http: becomes ws:)', async () => {
    await startServer();
    jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    setup({ url: '/api/v1/ws', since: 'e-1' });
    // The page is http://localhost/ under jsdom; no server listens there, the URL is what counts.
    expect(opened).toHaveBeenCalledWith('ws://localhost/api/v1/ws?since=e-1');
  });

  it('takes the seed positional shape, useWebSocket(url, { onMessage })', async () => {
    const frame = eventFrame();
    await startServer((c) => c.send(frame));
    const seen: string[] = [];
    const { result } = renderHook(() => useWebSocket(server.url, { onMessage: (event) => seen.push(event.id) }));
    await settle(() => seen.length === 1, 'the event');
    expect(seen).toEqual([frame.id]);
    expect(result.current.status).toBe('open');
  });

  it('does not connect while enabled is false, and connects when it turns true', async () => {
    await startServer();
    const { result, rerender } = setup({ enabled: false });
    await settle(() => result.current.status === 'idle', 'idle');
    expect(opened).not.toHaveBeenCalled();
    rerender({ enabled: true });
    await settle(() => result.current.status === 'open', 'the socket to open');
    expect(server.connections).toHaveLength(1);
  });

  it('does not re-render a consumer that never reads lastEventId on every event', async () => {
    await startServer();
    let quietRenders = 0;
    let readingRenders = 0;
    const quiet = renderHook(() => {
      quietRenders += 1;
      return useWebSocket({ url: server.url, storageKey: null }).status;
    });
    const reading = renderHook(() => {
      readingRenders += 1;
      return useWebSocket({ url: server.url, storageKey: null }).lastEventId;
    });
    await settle(() => quiet.result.current === 'open' && server.connections.length === 2, 'both open');
    const [before, beforeReading] = [quietRenders, readingRenders];
    for (const connection of server.connections) for (let n = 0; n < 5; n += 1) connection.send(eventFrame());
    await settle(() => reading.result.current !== null && readingRenders >= beforeReading + 1, 'the reader to update');
    await settle(() => /^0-/.test(reading.result.current ?? ''), 'the id');
    expect(quietRenders).toBe(before);
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
  it('backs off exponentially with jitter, never under 0.5 s, up to a 20 s ceiling', async () => {
    useFakeClock(0.5); // each delay is halfway between the base and its ceiling
    await startServer((c) => c.socket.close(1013, 'too slow'));
    const { calls } = setup();
    const delays = [750, 1_250, 2_250, 4_250, 8_250, 10_250, 10_250];
    for (const [n, delay] of delays.entries()) {
      await settle(() => calls.disconnects.length === n + 1, `close #${n + 1}`);
      expect(calls.disconnects[n]).toEqual({ code: 1013, willReconnect: true });
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
    advance(750);
    await settle(() => calls.disconnects.length === 2, 'the second refusal');
    advance(1_249); // the second retry waits 1.25 s
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
    advance(750);
    await settle(() => result.current.status === 'open', 'the retry to open');
    expect(getToken.mock.calls).toEqual([[{ refresh: false }], [{ refresh: true }]]);
    expect(offered(server.connections[1]!)).toEqual(['wsbroadcast', 'bearer.new.token.jwt']);
  });

  it('waits a random delay of up to 5 s after 1001 (server shutting down), longer with each attempt', async () => {
    useFakeClock(0.5);
    await startServer((c) => c.socket.close(1001, 'shutting down'));
    const { calls } = setup();
    // Halfway between 0.5 s and 5 s, then 10 s, then 20 s.
    for (const [n, delay] of [2_750, 5_250, 10_250].entries()) {
      await settle(() => calls.disconnects.length === n + 1, `1001 #${n + 1}`);
      expect(calls.disconnects[n]).toEqual({ code: 1001, willReconnect: true });
      advance(delay - 1);
      expect(opened).toHaveBeenCalledTimes(n + 1);
      advance(1);
      expect(opened).toHaveBeenCalledTimes(n + 2);
    }
  });

  it('gives up after reconnectAttempts failed attempts in a row', async () => {
    useFakeClock(0.5);
    await startServer((c) => c.socket.close(1013, 'at the limit'));
    const { result, calls } = setup({ reconnectAttempts: 2 });
    await settle(() => calls.disconnects.length === 1, 'close #1');
    advance(750);
    await settle(() => calls.disconnects.length === 2, 'close #2');
    advance(1_250);
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

    advance(750);
    const second = await server.connection(2);
    expect(second.url.searchParams.get('since')).toBe(frame.id);
  });

  it('takes the dead-link deadline from the heartbeat interval, and resumes from its last_id', async () => {
    useFakeClock(0.5);
    jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await startServer((c) => {
      if (server.connections.length > 1) return;
      // A filtered stream: nothing matched, but the stream moved on to e1-99.
      c.send({ type: 'heartbeat', data: { last_id: 'e1-99', interval: 2 }, timestamp: '2024-01-01T00:00:00Z' });
    });
    // The hook assumes 25 s (55 s of silence) until the server says 2 s (2 x 2 s + 2 s).
    const { result, calls } = setup({ since: 'e1-10' });
    await settle(() => result.current.lastEventId === 'e1-99', 'the heartbeat');
    advance(5_999);
    expect(calls.disconnects).toEqual([]);
    advance(1);
    expect(calls.disconnects).toEqual([{ code: 1006, willReconnect: true }]);
    advance(750);
    const second = await server.connection(2);
    expect(second.url.searchParams.get('since')).toBe('e1-99'); // no needless resync
  });

  it('backs off when a server sends a heartbeat and then closes with 1013, again and again', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      c.send({ type: 'heartbeat', data: { last_id: 'e1-1', interval: 25 }, timestamp: '2024-01-01T00:00:00Z' });
      c.socket.close(1013, 'too slow'); // the heartbeat goes first
    });
    const { calls } = setup();
    // The first frame does not reset the count: the waits grow.
    for (const [n, delay] of [750, 1_250, 2_250, 4_250].entries()) {
      await settle(() => calls.disconnects.length === n + 1, `close #${n + 1}`);
      advance(delay - 1);
      expect(opened).toHaveBeenCalledTimes(n + 1);
      advance(1);
      expect(opened).toHaveBeenCalledTimes(n + 2);
    }
  });

  it('starts the backoff again once a connection has stayed up 5 s', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      if (server.connections.length <= 2) c.socket.close(1013, 'too slow');
    });
    const { result, calls } = setup();
    await settle(() => calls.disconnects.length === 1, 'close #1');
    advance(750);
    await settle(() => calls.disconnects.length === 2, 'close #2');
    advance(1_250);
    await settle(() => result.current.status === 'open', 'the third to stay open');
    advance(5_000);
    server.connections[2]!.socket.close(1013, 'too slow');
    await settle(() => calls.disconnects.length === 3, 'close #3');
    advance(749);
    expect(opened).toHaveBeenCalledTimes(3);
    advance(1);
    expect(opened).toHaveBeenCalledTimes(4);
  });

  it('drops a handshake that does not complete in 10 s, and retries', async () => {
    useFakeClock(0.5);
    jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await startServer();
    // A proxy holding the Upgrade: the TCP connection is accepted, no answer ever comes.
    const held: net.Socket[] = [];
    const hold = net.createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => hold.listen(0, '127.0.0.1', resolve));
    const url = `ws://127.0.0.1:${(hold.address() as net.AddressInfo).port}/api/v1/ws`;
    try {
      const { result, calls } = setup({ url });
      await until(() => held.length === 1, 'the held handshake');
      advance(9_999);
      expect(result.current.status).toBe('connecting');
      advance(1);
      expect(result.current.status).toBe('reconnecting');
      expect(calls.disconnects).toEqual([{ code: 1006, willReconnect: true }]);
      advance(750);
      expect(opened).toHaveBeenCalledTimes(2);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => hold.close(() => resolve()));
    }
  });

  it('leaves a handshake in progress alone on online and on the tab coming into view', async () => {
    const held: net.Socket[] = [];
    const hold = net.createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => hold.listen(0, '127.0.0.1', resolve));
    await startServer();
    try {
      setup({ url: `ws://127.0.0.1:${(hold.address() as net.AddressInfo).port}/api/v1/ws` });
      await until(() => held.length === 1, 'the held handshake');
      act(() => {
        window.dispatchEvent(new Event('online'));
        Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      });
      expect(opened).toHaveBeenCalledTimes(1);
      expect(held[0]!.destroyed).toBe(false);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => hold.close(() => resolve()));
    }
  });

  it('treats navigator.onLine as a hint: connects while it says offline, and shows offline while waiting', async () => {
    useFakeClock(0.5);
    const onLine = jest.spyOn(window.navigator, 'onLine', 'get').mockReturnValue(false);
    await startServer((c) => {
      if (server.connections.length === 1) c.socket.close(1013, 'at the limit');
    });
    const { result, calls } = setup();
    await settle(() => calls.disconnects.length === 1, 'the first connection'); // it did try
    expect(result.current.status).toBe('offline');
    onLine.mockReturnValue(true);
    act(() => {
      window.dispatchEvent(new Event('online'));
    });
    expect(opened).toHaveBeenCalledTimes(1); // the server asked to wait 750 ms: online does not cut it short
    advance(750);
    await settle(() => result.current.status === 'open', 'the retry to open');
  });

  it('retries at once on online after a lost link', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      if (server.connections.length === 1) c.socket.terminate();
    });
    const { calls } = setup();
    await settle(() => calls.disconnects.length === 1, 'the lost link');
    act(() => {
      window.dispatchEvent(new Event('online'));
    });
    expect(opened).toHaveBeenCalledTimes(2);
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
    advance(1_250);
    expect(opened).toHaveBeenCalledTimes(3);
  });
});

describe('unauthorized', () => {
  it('stops as unauthorized on 4401 with no getToken, and reconnect() tries again', async () => {
    useFakeClock(0.5);
    await startServer((c) => {
      if (server.connections.length === 1) c.socket.close(4401, 'token expired');
    });
    const { result, calls } = setup();
    await settle(() => result.current.status === 'unauthorized', 'unauthorized');
    expect(calls.disconnects).toEqual([{ code: 4401, willReconnect: false }]);
    advance(120_000);
    expect(opened).toHaveBeenCalledTimes(1);

    act(() => result.current.reconnect());
    await settle(() => result.current.status === 'open', 'the new try to open');
    expect(opened).toHaveBeenCalledTimes(2);
  });

  it('stops as unauthorized when getToken keeps failing', async () => {
    useFakeClock(0.5);
    jest.spyOn(console, 'error').mockImplementation(() => undefined);
    await startServer();
    const getToken = jest.fn(async () => {
      throw new Error('the session is gone');
    });
    const { result } = setup({ getToken });
    await settle(() => getToken.mock.calls.length === 1, 'try #1');
    advance(750);
    await settle(() => getToken.mock.calls.length === 2, 'try #2');
    advance(1_250);
    await settle(() => result.current.status === 'unauthorized', 'unauthorized');
    advance(120_000);
    expect(getToken).toHaveBeenCalledTimes(3);
    expect(opened).not.toHaveBeenCalled();
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
