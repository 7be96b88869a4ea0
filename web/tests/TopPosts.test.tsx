/** @jest-environment ./tests/support/jsdomWithFetch.ts */

/**
 * The home page's "Reading now" sidebar against a real HTTP server standing in for
 * `GET /readers`: it polls every 10 s, backs off while the service fails, asks nothing while
 * the tab is hidden, and links each post to its page.
 */

import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { act, render, screen, within } from '@testing-library/react';

import TopPosts from '@/components/posts/TopPosts';
import type { TopReaders } from '@/lib/readers';

import { settle } from './support/wait';

interface Answer {
  status: number;
  body: unknown;
}

/** A real HTTP server on a free port: records each request, answers what the test says. */
class ReadersServer {
  readonly requests: URL[] = [];
  answer: Answer = { status: 200, body: { total: 0, posts: [] } };

  private constructor(
    private readonly server: http.Server,
    readonly wsUrl: string,
  ) {}

  static async start(): Promise<ReadersServer> {
    let self: ReadersServer | null = null;
    const server = http.createServer((request, response) => {
      self!.requests.push(new URL(request.url ?? '/', 'http://127.0.0.1'));
      response.writeHead(self!.answer.status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(self!.answer.body));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    self = new ReadersServer(server, `ws://127.0.0.1:${port}/api/v1/ws`);
    return self;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

let server: ReadersServer;

beforeEach(async () => {
  server = await ReadersServer.start();
  setVisibility('visible');
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'hrtime'] });
  jest.spyOn(console, 'warn').mockImplementation(() => undefined);
});

afterEach(async () => {
  jest.useRealTimers();
  jest.restoreAllMocks();
  await server.stop();
});

function advance(ms: number): void {
  act(() => {
    jest.advanceTimersByTime(ms);
  });
}

function setVisibility(state: 'visible' | 'hidden'): void {
  Object.defineProperty(document, 'visibilityState', { value: state, configurable: true });
  Object.defineProperty(document, 'hidden', { value: state === 'hidden', configurable: true });
  document.dispatchEvent(new Event('visibilitychange'));
}

function top(...posts: [string, number][]): TopReaders {
  return {
    total: posts.reduce((sum, [, n]) => sum + n, 0),
    posts: posts.map(([post_id, readers]) => ({ post_id, readers })),
  };
}

function rows(): string[] {
  const list = screen.queryByRole('list', { name: 'Most read posts right now' });
  return list ? within(list).queryAllByRole('listitem').map((li) => li.textContent ?? '') : [];
}

async function requests(n: number): Promise<void> {
  await settle(() => server.requests.length >= n, `request #${n}`);
}

it('asks GET /readers?top=5 beside the subscribe URL at once, then every 10 s', async () => {
  server.answer = { status: 200, body: top(['p2', 3], ['p1', 1]) };
  render(<TopPosts url={server.wsUrl} />);
  await requests(1);
  expect(server.requests[0]!.pathname).toBe('/api/v1/readers');
  expect(server.requests[0]!.searchParams.get('top')).toBe('5');
  await settle(() => rows().length === 2, 'the list');
  expect(rows()).toEqual(['Post p23 readers', 'Post p11 reader']);
  expect(screen.getByRole('link', { name: 'Post p2' })).toHaveAttribute('href', '/posts/p2');

  server.answer = { status: 200, body: top(['p1', 4]) };
  advance(9_999);
  await act(async () => undefined);
  expect(server.requests).toHaveLength(1);
  advance(1);
  await requests(2);
  await settle(() => rows()[0] === 'Post p14 readers', 'the new list');
});

it('starts from the server-rendered list and first asks one interval later', async () => {
  render(<TopPosts url={server.wsUrl} initial={top(['p9', 2])} />);
  expect(rows()).toEqual(['Post p92 readers']);
  await act(async () => undefined);
  expect(server.requests).toHaveLength(0);
  advance(10_000);
  await requests(1);
  await settle(() => screen.queryByText('No one is reading a post right now.') !== null, 'the empty list');
});

it('backs off while the service fails, keeps the last list, and recovers', async () => {
  jest.spyOn(Math, 'random').mockReturnValue(0.999); // the top of each backoff range
  server.answer = { status: 200, body: top(['p1', 2]) };
  const { container } = render(<TopPosts url={server.wsUrl} />);
  await settle(() => rows().length === 1, 'the list');

  server.answer = { status: 503, body: { error: 'unavailable' } };
  advance(10_000);
  await requests(2);
  await settle(() => container.querySelector('[data-failures="1"]') !== null, 'the first failure');
  expect(rows()).toEqual(['Post p12 readers']); // the last list stays
  expect(screen.getByText('Counts may be out of date.')).toBeInTheDocument();

  // After the first failure the wait is up to 20 s, after the second up to 40 s: not 10 s.
  advance(19_900);
  await act(async () => undefined);
  expect(server.requests).toHaveLength(2);
  advance(100);
  await requests(3);
  await settle(() => container.querySelector('[data-failures="2"]') !== null, 'the second failure');
  advance(39_900);
  await act(async () => undefined);
  expect(server.requests).toHaveLength(3);

  server.answer = { status: 200, body: top(['p3', 5]) };
  advance(100);
  await requests(4);
  await settle(() => rows()[0] === 'Post p35 readers', 'the recovered list');
  expect(container.querySelector('[data-state="fresh"]')).not.toBeNull();
  expect(container.querySelector('[data-failures="0"]')).not.toBeNull();
  advance(10_000); // back to the plain interval
  await requests(5);
});

it('treats an answer of another shape as a failure', async () => {
  server.answer = { status: 200, body: { total: 'many' } };
  const { container } = render(<TopPosts url={server.wsUrl} />);
  await requests(1);
  await settle(() => container.querySelector('[data-state="stale"]') !== null, 'the stale mark');
  expect(screen.getByText('Reader counts are unavailable right now.')).toBeInTheDocument();
});

it('asks nothing while the tab is hidden, and asks at once when it is shown', async () => {
  render(<TopPosts url={server.wsUrl} />);
  await requests(1);
  await settle(() => screen.queryByText('No one is reading a post right now.') !== null, 'the first answer');
  setVisibility('hidden');
  advance(60_000);
  await act(async () => undefined);
  expect(server.requests).toHaveLength(1);
  act(() => setVisibility('visible'));
  await requests(2);
});

it('stops asking once unmounted', async () => {
  const { unmount } = render(<TopPosts url={server.wsUrl} />);
  await requests(1);
  await settle(() => screen.queryByText('No one is reading a post right now.') !== null, 'the first answer');
  unmount();
  advance(60_000);
  await act(async () => undefined);
  expect(server.requests).toHaveLength(1);
});
