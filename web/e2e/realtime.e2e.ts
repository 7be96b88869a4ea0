/**
 * The app in Debian's Chromium against a real wsbroadcast: a toast for every type of event,
 * a dropped link and a dead link resumed with nothing lost or doubled, and a restart of the
 * service (a new epoch) recovered through `resync`.
 */

import fs from 'node:fs';
import path from 'node:path';

import { type BrowserContext, type Page } from 'playwright-core';

import { type Browser, launchChromium } from './support/browser';
import { LinkProxy } from './support/proxy';
import { freePort, publish, type Service, startNext, startWsbroadcast, WEB_DIR } from './support/processes';

const ARTIFACTS = path.join(WEB_DIR, 'e2e', 'artifacts');
const HEARTBEAT_SECONDS = 1; // the heartbeat says so: the page calls a link dead after 3 s of silence
const STEP_MS = 30_000;

let wsbPort: number;
let wsb: Service;
let next: Service;
let proxy: LinkProxy;
let context: BrowserContext;
let page: Page;
let browser: Browser | undefined;
let serviceUrl: string;
let allowedOrigin: string;
const socketUrls: string[] = [];
const pageErrors: string[] = [];
/** Every id published since the page loaded: the feed must hold each exactly once. */
const published: string[] = [];

async function post(event: object): Promise<string> {
  const [id] = await publish(serviceUrl, event);
  published.push(id!);
  return id!;
}

async function status(expected: string): Promise<void> {
  await page.locator(`[role="status"][data-status="${expected}"]`).waitFor({ timeout: STEP_MS });
}

async function toast(...texts: string[]): Promise<void> {
  let locator = page.locator('[data-sonner-toast]');
  for (const text of texts) locator = locator.filter({ hasText: text });
  await locator.first().waitFor({ state: 'visible', timeout: STEP_MS });
}

async function inFeed(id: string): Promise<void> {
  await page.locator(`[data-event-id="${id}"]`).first().waitFor({ timeout: STEP_MS });
}

/** The ids in the feed, in the order shown (newest first). */
async function feedIds(): Promise<string[]> {
  return page
    .locator('[data-kind="event"]')
    .evaluateAll((items) => items.map((item) => item.getAttribute('data-event-id') ?? ''));
}

async function expectEachShownOnce(): Promise<void> {
  const ids = await feedIds();
  expect([...ids].reverse()).toEqual(published);
}

beforeAll(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  wsbPort = await freePort();
  const webPort = await freePort();
  serviceUrl = `http://127.0.0.1:${wsbPort}`;
  allowedOrigin = `http://127.0.0.1:${webPort}`;
  wsb = await startWsbroadcast({ port: wsbPort, allowedOrigin, heartbeatSeconds: HEARTBEAT_SECONDS });
  proxy = await LinkProxy.start(wsbPort);
  next = await startNext(webPort, {
    // The browser goes through the proxy; the page's server asks the service directly.
    NEXT_PUBLIC_WS_URL: `ws://127.0.0.1:${proxy.port}/api/v1/ws`,
    WSB_HTTP_URL: `${serviceUrl}/api/v1`,
  });
  browser = await launchChromium(STEP_MS);
  context = browser.context;
  page = context.pages()[0] ?? (await context.newPage());
  page.on('websocket', (socket) => socketUrls.push(socket.url()));
  page.on('pageerror', (error) => pageErrors.push(String(error)));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await next?.stop();
  await proxy?.stop();
  await wsb?.stop();
}, 60_000);

afterEach(async () => {
  // One picture per step: what the reader saw when it ended (passed or not).
  const name = expect.getState().currentTestName?.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  if (page && name) await page.screenshot({ path: path.join(ARTIFACTS, `step-${name}.png`) });
});

it('subscribes from the head the page was rendered at, losing nothing published in between', async () => {
  const head = ((await (await fetch(`${serviceUrl}/events/head`)).json()) as { id: string }).id;
  proxy.cut({ hold: true }); // the page renders, but its socket waits at the proxy
  await page.goto(`${allowedOrigin}/`, { timeout: STEP_MS });
  await page.getByRole('heading', { name: /happening on the blog/i }).waitFor({ timeout: STEP_MS });

  const id = await post({
    type: 'system_notification',
    data: { message: 'Welcome! New posts show up here as they happen.', level: 'info' },
  });
  proxy.release();
  await status('open');
  await toast('Welcome! New posts show up here as they happen.');
  await inFeed(id);
  expect(new URL(socketUrls[0]!).searchParams.get('since')).toBe(head);
  await expectEachShownOnce();
});

it('shows a toast for every type of event', async () => {
  const events: [object, string[]][] = [
    [
      { type: 'blog_update', data: { post_id: 'p-101', action: 'created', title: 'Notes on resumable streams' } },
      ['New post published', 'Notes on resumable streams'],
    ],
    [
      { type: 'blog_update', data: { post_id: 'p-102', action: 'updated', title: 'A field guide to backoff' } },
      ['Post updated', 'A field guide to backoff'],
    ],
    [
      { type: 'blog_update', data: { post_id: 'p-099', action: 'deleted', title: 'Draft: an old idea' } },
      ['Post removed', 'Draft: an old idea'],
    ],
    [
      {
        type: 'comment_update',
        data: { post_id: 'p-101', comment_id: 'c-1', action: 'created', post_title: 'Notes on resumable streams' },
      },
      ['New comment', 'on Notes on resumable streams'],
    ],
    [
      { type: 'system_notification', data: { message: 'Comments are open again.', level: 'info' } },
      ['Comments are open again.'],
    ],
    [
      { type: 'system_notification', data: { message: 'Maintenance tonight at 23:00 UTC.', level: 'warning' } },
      ['Maintenance tonight at 23:00 UTC.'],
    ],
    [
      { type: 'system_notification', data: { message: 'Image uploads are failing.', level: 'error' } },
      ['Image uploads are failing.'],
    ],
  ];
  for (const [event, texts] of events) {
    // A second apart, as a reader meets them: quicker than that, the page sums them up in one toast.
    await page.waitForTimeout(1_100);
    const id = await post(event);
    await toast(...texts);
    await inFeed(id);
  }
  // An edited comment goes to the feed, without a toast.
  const edited = await post({
    type: 'comment_update',
    data: { post_id: 'p-101', comment_id: 'c-1', action: 'updated' },
  });
  await inFeed(edited);
  await expectEachShownOnce();
  await page.screenshot({ path: path.join(ARTIFACTS, 'toasts.png'), animations: 'disabled' });
});

it('resumes a dropped connection with every event posted meanwhile, each shown once', async () => {
  const before = socketUrls.length;
  const lastSeen = published.at(-1)!;
  proxy.cut({ hold: true }); // the socket dies; its reconnect waits at the proxy
  await status('reconnecting');
  const missed = [
    await post({ type: 'blog_update', data: { post_id: 'p-103', action: 'created', title: 'Posted while you were away' } }),
    await post({ type: 'comment_update', data: { post_id: 'p-103', comment_id: 'c-2', action: 'created' } }),
    await post({ type: 'system_notification', data: { message: 'Caught up after a drop.', level: 'info' } }),
  ];
  proxy.release();
  await status('open');
  for (const id of missed) await inFeed(id);
  await toast('Posted while you were away');
  // Three events at once, a moment after the last step's: the third may be summed up instead.
  await page
    .locator('[data-sonner-toast]')
    .filter({ hasText: /Caught up after a drop\.|^\d+ (notices?|new updates)/ })
    .first()
    .waitFor({ state: 'visible', timeout: STEP_MS });
  expect(socketUrls.length).toBeGreaterThan(before);
  expect(new URL(socketUrls.at(-1)!).searchParams.get('since')).toBe(lastSeen);
  await expectEachShownOnce();
});

it('notices a dead link by its silence and resumes', async () => {
  const before = socketUrls.length;
  const lastSeen = published.at(-1)!;
  proxy.freeze(); // open, but nothing gets through: not even heartbeats
  const id = await post({
    type: 'blog_update',
    data: { post_id: 'p-104', action: 'updated', title: 'Sent into a dead link' },
  });
  await inFeed(id); // after 3 s of silence the page reconnects with since
  await toast('Sent into a dead link');
  expect(socketUrls.length).toBeGreaterThan(before);
  expect(new URL(socketUrls.at(-1)!).searchParams.get('since')).toBe(lastSeen);
  await expectEachShownOnce();
});

it('recovers through resync when the service restarts with a new epoch', async () => {
  const resyncsBefore = await page.locator('[data-kind="resync"]').count();
  expect(await wsb.stop()).toBe(0);
  await page.locator('[role="status"]:not([data-status="open"])').waitFor({ timeout: STEP_MS });
  // Nothing is posted while it is down. The new process starts a new epoch: the page's
  // last id belongs to a stream that is gone, so the service answers with resync.
  wsb = await startWsbroadcast({ port: wsbPort, allowedOrigin, heartbeatSeconds: HEARTBEAT_SECONDS });
  await page.locator('[data-kind="resync"]').nth(resyncsBefore).waitFor({ timeout: STEP_MS });
  await status('open');

  const id = await post({
    type: 'blog_update',
    data: { post_id: 'p-105', action: 'created', title: 'First post after the restart' },
  });
  await toast('New post published', 'First post after the restart');
  await inFeed(id);
  await expectEachShownOnce();
  expect(await page.locator('[data-kind="resync"]').count()).toBe(resyncsBefore + 1);
  expect(pageErrors).toEqual([]);
  await page.screenshot({ path: path.join(ARTIFACTS, 'realtime.png'), animations: 'disabled' });
});

it('catches up on what was posted while the reader was away', async () => {
  const lastSeen = published.at(-1)!;
  await page.goto('about:blank'); // the reader leaves; the tab keeps its sessionStorage
  published.length = 0; // the page comes back with an empty feed
  const id = await post({
    type: 'blog_update',
    data: { post_id: 'p-106', action: 'created', title: 'Published while you were on another site' },
  });
  await page.goto(`${allowedOrigin}/`, { timeout: STEP_MS });
  await toast('Published while you were on another site');
  await inFeed(id);
  // The page was rendered at a head that already includes the post; the tab's own last id wins.
  expect(new URL(socketUrls.at(-1)!).searchParams.get('since')).toBe(lastSeen);
  await expectEachShownOnce();
  expect(pageErrors).toEqual([]);
});

it('stops for good when the service refuses the page origin (4403)', async () => {
  // Same app, another origin: http://localhost is not in the service's allowed list.
  const other = await context.newPage();
  const sockets: string[] = [];
  other.on('websocket', (socket) => sockets.push(socket.url()));
  try {
    await other.goto(allowedOrigin.replace('127.0.0.1', 'localhost') + '/', { timeout: STEP_MS });
    await other.locator('[role="status"][data-status="closed"]').waitFor({ timeout: STEP_MS });
    expect(await other.getByRole('status').textContent()).toContain('Disconnected');
    expect(sockets).toHaveLength(1);
  } finally {
    await other.close();
  }
});

it('gets the same stream through EventSource, for networks that block WebSocket', async () => {
  type Received = { lastEventId: string; id: string; type: string };
  type SseWindow = { received: Received[]; source?: EventSource };
  const reader = await context.newPage();
  const open = (url: string) =>
    reader.evaluate(
      (sseUrl) =>
        new Promise<void>((resolve, reject) => {
          const w = window as unknown as SseWindow;
          w.source?.close();
          w.received = [];
          w.source = new EventSource(sseUrl);
          w.source.onmessage = (message: MessageEvent<string>) => {
            const event = JSON.parse(message.data) as { id: string; type: string };
            w.received.push({ lastEventId: message.lastEventId, id: event.id, type: event.type });
          };
          w.source.onopen = () => resolve();
          w.source.onerror = () => reject(new Error('EventSource failed'));
        }),
      url,
    );
  const received = (count: number) =>
    reader
      .waitForFunction((n) => (window as unknown as SseWindow).received.length >= n, count, {
        timeout: STEP_MS,
      })
      .then(() => reader.evaluate(() => (window as unknown as SseWindow).received));
  try {
    await reader.goto(`${allowedOrigin}/`, { timeout: STEP_MS });
    const sseUrl = `${serviceUrl}/api/v1/sse`; // another origin: CORS lets the page read it
    await open(sseUrl);
    const ids = [
      ...(await publish(serviceUrl, { type: 'blog_update', data: { post_id: 'p-201', action: 'created' } })),
      ...(await publish(serviceUrl, { type: 'system_notification', data: { message: 'Over SSE', level: 'info' } })),
    ];
    expect(await received(2)).toEqual([
      { lastEventId: ids[0], id: ids[0], type: 'blog_update' },
      { lastEventId: ids[1], id: ids[1], type: 'system_notification' },
    ]);
    await open(`${sseUrl}?since=${encodeURIComponent(ids[0]!)}`); // resume after the first
    expect((await received(1))[0]).toEqual({ lastEventId: ids[1], id: ids[1], type: 'system_notification' });
  } finally {
    await reader.close();
  }
});
