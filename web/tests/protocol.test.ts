import { backoffDelay, restartDelay, staleAfterMs } from '@/lib/backoff';
import { closeCodePolicy, parseMessage, subprotocols, subscribeUrl } from '@/lib/protocol';

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
    expect(parseMessage('{"type":"heartbeat","timestamp":"2024-01-01T00:00:00Z"}')).toEqual({
      ok: true,
      message: { kind: 'heartbeat' },
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

  it('offers the token as a subprotocol beside wsbroadcast', () => {
    expect(subprotocols('a.b.c')).toEqual(['wsbroadcast', 'bearer.a.b.c']);
  });
});

describe('backoff', () => {
  it('grows from 0.5 s and levels off at 20 s', () => {
    const top = () => 0.999_999;
    const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 12].map((n) => backoffDelay(n, 500, 20_000, top));
    expect(ceilings).toEqual([499, 999, 1_999, 3_999, 7_999, 15_999, 19_999, 19_999, 19_999]);
  });

  it('draws the whole range (full jitter)', () => {
    expect(backoffDelay(3, 500, 20_000, () => 0)).toBe(0);
    expect(backoffDelay(3, 500, 20_000, () => 0.5)).toBe(2_000);
    for (let i = 0; i < 100; i += 1) {
      const delay = backoffDelay(10);
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThan(20_000);
    }
  });

  it('spreads reconnects after a shutdown over 5 s', () => {
    expect(restartDelay(() => 0)).toBe(0);
    expect(restartDelay(() => 0.999_999)).toBe(4_999);
  });

  it('calls a link dead after twice the heartbeat interval plus a margin', () => {
    expect(staleAfterMs(25_000)).toBe(55_000);
    expect(staleAfterMs(1_000)).toBe(3_000);
  });
});
