import { backoffDelay, restartDelay, staleAfterMs } from '@/lib/backoff';
import {
  closeCodePolicy,
  parseMessage,
  resolveSubscribeUrl,
  sseUrlFor,
  subprotocols,
  subscribeUrl,
  SubscribeUrlError,
} from '@/lib/protocol';

describe('parseMessage', () => {
  it('reads an event envelope', () => {
    const frame = JSON.stringify({
      id: 'e1-7',
      type: 'comment_update',
      data: { post_id: 'p1', comment_id: 'c9', action: 'created', extra: [1] },
      timestamp: '2024-01-01T00:00:00Z',
    });
    expect(parseMessage(frame)).toEqual({
      ok: true,
      message: {
        kind: 'event',
        event: {
          id: 'e1-7',
          type: 'comment_update',
          data: { post_id: 'p1', comment_id: 'c9', action: 'created', extra: [1] },
          timestamp: '2024-01-01T00:00:00Z',
        },
      },
    });
  });

  it('reads the control messages, which carry no id', () => {
    // A server before heartbeat data: no position, no interval.
    expect(parseMessage('{"type":"heartbeat","timestamp":"2024-01-01T00:00:00Z"}')).toEqual({
      ok: true,
      message: { kind: 'heartbeat', heartbeat: { lastId: null, interval: null } },
    });
    const beat = '{"type":"heartbeat","data":{"last_id":"e1-40","interval":25},"timestamp":"x"}';
    expect(parseMessage(beat)).toEqual({
      ok: true,
      message: { kind: 'heartbeat', heartbeat: { lastId: 'e1-40', interval: 25 } },
    });
    const readers = '{"type":"readers","data":{"post_id":"p1","readers":3},"timestamp":"x"}';
    expect(parseMessage(readers)).toEqual({
      ok: true,
      message: { kind: 'readers', readers: { post_id: 'p1', readers: 3 } },
    });
    const resync = '{"type":"resync","data":{"reason":"history_expired","head":"e2-0"},"timestamp":"x"}';
    expect(parseMessage(resync)).toEqual({
      ok: true,
      message: { kind: 'resync', resync: { reason: 'history_expired', head: 'e2-0' } },
    });
  });

  it.each([
    ['not JSON', '{oops'],
    ['not an object', '[1,2]'],
    ['no type', '{"id":"1","data":{}}'],
    ['an event with no id', '{"type":"blog_update","data":{"post_id":"p","action":"created"}}'],
    ['data not an object', '{"id":"1","type":"blog_update","data":"x"}'],
    ['a resync with no head', '{"type":"resync","data":{"reason":"history_expired"}}'],
  ])('refuses %s without throwing', (_name, frame) => {
    expect(parseMessage(frame)).toMatchObject({ ok: false });
  });

  it('refuses a binary frame', () => {
    expect(parseMessage(new ArrayBuffer(2))).toMatchObject({ ok: false });
  });
});

describe('closeCodePolicy: the contract table', () => {
  it.each([
    [1001, 'random-delay'],
    [1012, 'random-delay'],
    [1013, 'backoff'],
    [4400, 'stop'],
    [4401, 'refresh-token'],
    [4403, 'stop'],
    [4429, 'backoff'],
    [1006, 'backoff'],
    [1011, 'backoff'],
    [1000, 'backoff'],
  ])('%i -> %s', (code, policy) => {
    expect(closeCodePolicy(code)).toBe(policy);
  });
});

describe('subscribeUrl', () => {
  const base = 'ws://localhost:8000/api/v1/ws';

  it('leaves the URL exactly as given when there is nothing to add', () => {
    expect(subscribeUrl(base, {})).toBe(base);
    expect(subscribeUrl(base, { since: null, types: [] })).toBe(base);
  });

  it('adds since, types and post_id, encoded', () => {
    const url = new URL(subscribeUrl(base, { since: 'e1-5', types: ['a', 'b'], postId: 'p&1' }));
    expect(url.searchParams.get('since')).toBe('e1-5');
    expect(url.searchParams.get('types')).toBe('a,b');
    expect(url.searchParams.get('post_id')).toBe('p&1');
  });

  it('adds rewind only with no since, and readers=1 only with a post_id', () => {
    const first = new URL(subscribeUrl(base, { postId: 'p1', rewind: 20, readers: true }));
    expect(Object.fromEntries(first.searchParams)).toEqual({ post_id: 'p1', rewind: '20', readers: '1' });
    const resumed = new URL(subscribeUrl(base, { since: 'e1-9', postId: 'p1', rewind: 20, readers: true }));
    expect(Object.fromEntries(resumed.searchParams)).toEqual({ since: 'e1-9', post_id: 'p1', readers: '1' });
    // readers=1 without post_id is a 4400: never sent.
    expect(subscribeUrl(base, { readers: true })).toBe(base);
  });

  it('offers the token as a subprotocol beside wsbroadcast', () => {
    expect(subprotocols('a.b.c')).toEqual(['wsbroadcast', 'bearer.a.b.c']);
  });
});

describe('resolveSubscribeUrl', () => {
  const page = 'https://blog.example.com/posts/7?x=1';

  it('resolves a relative URL against the page, http: to ws: and https: to wss:', () => {
    expect(resolveSubscribeUrl('/api/v1/ws', page)).toBe('wss://blog.example.com/api/v1/ws');
    expect(resolveSubscribeUrl('/api/v1/ws', 'http://127.0.0.1:3000/')).toBe('ws://127.0.0.1:3000/api/v1/ws');
    expect(resolveSubscribeUrl('https://push.example.com/ws', page)).toBe('wss://push.example.com/ws');
  });

  it('leaves an absolute ws: or wss: URL exactly as given', () => {
    expect(resolveSubscribeUrl('ws://localhost:8000/api/v1/ws', page)).toBe('ws://localhost:8000/api/v1/ws');
    expect(resolveSubscribeUrl('wss://push.example.com/ws')).toBe('wss://push.example.com/ws');
  });

  it.each([
    ['another scheme', 'ftp://example.com/ws', page, /scheme/],
    ['a fragment', 'ws://example.com/ws#x', page, /fragment/],
    ['a relative URL with no page', '/api/v1/ws', undefined, /not an absolute URL/],
    ['an empty URL', '  ', page, /empty/],
  ])('refuses %s with a clear error', (_name, url, base, message) => {
    expect(() => resolveSubscribeUrl(url, base)).toThrow(SubscribeUrlError);
    expect(() => resolveSubscribeUrl(url, base)).toThrow(message);
  });

  it('puts /sse beside /ws', () => {
    expect(sseUrlFor('ws://localhost:8000/api/v1/ws')).toBe('http://localhost:8000/api/v1/sse');
    expect(sseUrlFor('wss://push.example.com/ws')).toBe('https://push.example.com/sse');
    expect(sseUrlFor('wss://push.example.com/stream')).toBeNull();
  });
});

describe('backoff', () => {
  it('grows from 0.5 s and levels off at 20 s', () => {
    const top = () => 0.999_999;
    const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 12].map((n) => backoffDelay(n, 500, 20_000, top));
    expect(ceilings).toEqual([999, 1_999, 3_999, 7_999, 15_999, 19_999, 19_999, 19_999, 19_999]);
  });

  it('never retries sooner than the base delay, and draws the rest of the range', () => {
    expect(backoffDelay(0, 500, 20_000, () => 0)).toBe(500);
    expect(backoffDelay(3, 500, 20_000, () => 0)).toBe(500);
    expect(backoffDelay(3, 500, 20_000, () => 0.5)).toBe(4_250);
    for (let i = 0; i < 100; i += 1) {
      const delay = backoffDelay(10);
      expect(delay).toBeGreaterThanOrEqual(500);
      expect(delay).toBeLessThan(20_000);
    }
  });

  it('spreads reconnects after a shutdown over 5 s, wider with each attempt', () => {
    expect(restartDelay(0, 500, 20_000, () => 0)).toBe(500);
    expect(restartDelay(0, 500, 20_000, () => 0.999_999)).toBe(4_999);
    expect(restartDelay(1, 500, 20_000, () => 0.999_999)).toBe(9_999);
    expect(restartDelay(5, 500, 20_000, () => 0.999_999)).toBe(19_999);
  });

  it('calls a link dead after twice the heartbeat interval plus a margin', () => {
    expect(staleAfterMs(25_000)).toBe(55_000);
    expect(staleAfterMs(1_000)).toBe(3_000);
  });
});
