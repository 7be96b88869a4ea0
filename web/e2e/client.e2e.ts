/**
 * The client off the happy path, in Debian's Chromium against a real wsbroadcast: a burst
 * becomes one summary toast; two tabs share one WebSocket and hand it over when the leader
 * closes; a proxy that refuses the WebSocket Upgrade leaves the page reading `/sse`.
 */

import fs from 'node:fs';
import path from 'node:path';

import type { BrowserContext, Page } from 'playwright-core';

import { type Browser, launchChromium } from './support/browser';
import { HttpProxy } from './support/httpProxy';
import { freePort, publish, type Service, startNext, startWsbroadcast, WEB_DIR } from './support/processes';

const ARTIFACTS = path.join(WEB_DIR, 'e2e', 'artifacts');
const STEP_MS = 30_000;
/** The hand-over the README promises: another tab holds the socket within 2 s. */
const HANDOVER_MS = 2_000;

let wsb: Service;
let next: Service;
let proxy: HttpProxy;
let browser: Browser;
let context: BrowserContext;
let serviceUrl: string;
let pageUrl: string;
const pageErrors: string[] = [];

interface SocketLog {
  created: number;
  closed: number;
  /** When each handshake was answered (Date.now()). */
  opened: number[];
  /** Resolves with the time the next handshake is answered. */
  nextOpen: () => Promise<number>;
}

/** A new tab with its WebSockets counted over the Chrome DevTools Protocol, from before it loads. */
async function openTab(): Promise<{ tab: Page; sockets: SocketLog }> {
  const tab = await context.newPage();
  tab.on('pageerror', (error) => pageErrors.push(String(error)));
  const waiting: ((at: number) => void)[] = [];
  const sockets: SocketLog = {
    created: 0,
    closed: 0,
    opened: [],
    nextOpen: () => new Promise((resolve) => waiting.push(resolve)),
  };
  const cdp = await context.newCDPSession(tab);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketCreated', () => {
    sockets.created += 1;
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', () => {
    const at = Date.now();
    sockets.opened.push(at);
    for (const resolve of waiting.splice(0)) resolve(at);
  });
  cdp.on('Network.webSocketClosed', () => {
    sockets.closed += 1;
  });
  await tab.goto(pageUrl, { timeout: STEP_MS });
  return { tab, sockets };
}

async function status(tab: Page, expected: string, transport = 'websocket'): Promise<void> {
  await tab
    .locator(`[role="status"][data-status="${expected}"][data-transport="${transport}"]`)
    .waitFor({ timeout: STEP_MS });
}

/** The ids in a tab's feed, oldest first. */
async function feedIds(tab: Page): Promise<string[]> {
  const ids = await tab
    .locator('[data-kind="event"]')
    .evaluateAll((items) => items.map((item) => item.getAttribute('data-event-id') ?? ''));
  return ids.reverse();
}

async function waitForFeed(tab: Page, id: string): Promise<void> {
  await tab.locator(`[data-event-id="${id}"]`).first().waitFor({ timeout: STEP_MS });
}

/** Subscribers the service has on WebSocket right now, from its own /metrics. */
async function serviceWebSockets(): Promise<number> {
  const text = await (await fetch(`${serviceUrl}/metrics`)).text();
  const match = /^wsb_connections\{transport="ws"\} (\S+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function comment(n: number) {
  return { type: 'comment_update', data: { post_id: 'p-300', comment_id: `c-${n}`, action: 'created', post_title: 'Burst' } };
}

beforeAll(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const wsbPort = await freePort();
  const webPort = await freePort();
  serviceUrl = `http://127.0.0.1:${wsbPort}`;
  pageUrl = `http://127.0.0.1:${webPort}/`;
  wsb = await startWsbroadcast({ port: wsbPort, allowedOrigin: `http://127.0.0.1:${webPort}`, heartbeatSeconds: 5 });
  proxy = await HttpProxy.start(wsbPort);
  next = await startNext(webPort, {
    // Both the WebSocket and, when it fails, /sse go through the proxy.
    NEXT_PUBLIC_WS_URL: `ws://127.0.0.1:${proxy.port}/api/v1/ws`,
    WSB_HTTP_URL: `${serviceUrl}/api/v1`,
  });
  browser = await launchChromium(STEP_MS);
  context = browser.context;
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await next?.stop();
  await proxy?.stop();
  await wsb?.stop();
}, 60_000);

it('shows a burst of 200 comments as a few toasts and one summary', async () => {
  const { tab } = await openTab();
  try {
    await status(tab, 'open');
    const ids = await publish(serviceUrl, Array.from({ length: 200 }, (_, n) => comment(n)));
    await waitForFeed(tab, ids.at(-1)!);
    const summary = tab.locator('[data-sonner-toast]').filter({ hasText: /^\d+ new comments$/ });
    await summary.filter({ hasText: '197 new comments' }).waitFor({ timeout: STEP_MS });
    expect(await summary.count()).toBe(1);
    expect(await tab.locator('[data-sonner-toast]').count()).toBeLessThanOrEqual(4);
    expect(await tab.locator('[data-kind="event"]').count()).toBe(50); // the feed stays bounded
    await tab.screenshot({ path: path.join(ARTIFACTS, 'burst.png'), animations: 'disabled' });
  } finally {
    await tab.close();
  }
});

it('shares one WebSocket between two tabs, and hands it over within 2 s when the leader closes', async () => {
  const first = await openTab();
  await status(first.tab, 'open');
  let second: { tab: Page; sockets: SocketLog } | undefined;
  try {
    second = await openTab();
    await status(second.tab, 'open'); // the leader's status, passed on
    expect(first.sockets.created - first.sockets.closed).toBe(1);
    expect(second.sockets.created).toBe(0);
    expect(await serviceWebSockets()).toBe(1);

    const shared = await publish(serviceUrl, {
      type: 'blog_update',
      data: { post_id: 'p-301', action: 'created', title: 'Seen by both tabs' },
    });
    await waitForFeed(first.tab, shared[0]!);
    await waitForFeed(second.tab, shared[0]!);

    // The leader goes; events are published while the other tab takes over.
    const opened = second.sockets.nextOpen();
    const closedAt = Date.now();
    const closing = first.tab.close();
    const during = await publish(serviceUrl, [comment(1001), comment(1002), comment(1003)]);
    await closing;
    during.push(...(await publish(serviceUrl, comment(1004))));
    const handover = (await within(opened, STEP_MS, 'the remaining tab to open a WebSocket')) - closedAt;
    expect(second.sockets.opened).toHaveLength(1);
    console.log(`hand-over: the remaining tab's WebSocket opened ${handover} ms after the leader closed`);
    expect(handover).toBeLessThan(HANDOVER_MS);

    const after = await publish(serviceUrl, {
      type: 'system_notification',
      data: { message: 'After the hand-over', level: 'info' },
    });
    await waitForFeed(second.tab, after[0]!);
    // Each event once, in order: none lost in the hand-over, none shown twice.
    expect(await feedIds(second.tab)).toEqual([...shared, ...during, ...after]);
    expect(await serviceWebSockets()).toBe(1);
    await second.tab.screenshot({ path: path.join(ARTIFACTS, 'handover.png'), animations: 'disabled' });
  } finally {
    await first.tab.close();
    await second?.tab.close();
  }
});

it('falls back to /sse when a proxy refuses the WebSocket Upgrade, and still shows events', async () => {
  proxy.refuseUpgrade = true;
  const requests: string[] = [];
  const tab = await context.newPage();
  tab.on('request', (request) => requests.push(request.url()));

  try {
    await tab.goto(pageUrl, { timeout: STEP_MS });
    await status(tab, 'open', 'sse');
    expect(proxy.refused).toBeGreaterThanOrEqual(3); // three WebSocket tries, then /sse
    const sse = requests.filter((url) => new URL(url).pathname === '/api/v1/sse');
    expect(sse.length).toBeGreaterThanOrEqual(1);
    expect(new URL(sse[0]!).searchParams.get('since')).not.toBeNull(); // from the rendered head

    const ids = await publish(serviceUrl, {
      type: 'blog_update',
      data: { post_id: 'p-302', action: 'created', title: 'Delivered over SSE' },
    });
    await waitForFeed(tab, ids[0]!);
    await tab.locator('[data-sonner-toast]').filter({ hasText: 'Delivered over SSE' }).waitFor({ timeout: STEP_MS });
    expect(await serviceWebSockets()).toBe(0);
    await tab.screenshot({ path: path.join(ARTIFACTS, 'sse-fallback.png'), animations: 'disabled' });
  } finally {
    proxy.refuseUpgrade = false;
    await tab.close();
  }
  expect(pageErrors).toEqual([]);
});

it('stills the badge pulse for a reader who asked for reduced motion', async () => {
  const tab = await context.newPage();
  try {
    await tab.goto(pageUrl, { timeout: STEP_MS });
    const animation = () =>
      tab.evaluate(() => {
        // A reconnecting badge, as the page draws one.
        const badge = document.createElement('span');
        badge.className = 'badge badge--reconnecting';
        const dot = document.createElement('span');
        dot.className = 'badge__dot';
        badge.append(dot);
        document.body.append(badge);
        const name = getComputedStyle(dot).animationName;
        badge.remove();
        return name;
      });
    await tab.emulateMedia({ reducedMotion: 'no-preference' });
    expect(await animation()).toBe('pulse');
    await tab.emulateMedia({ reducedMotion: 'reduce' });
    expect(await animation()).toBe('none');
  } finally {
    await tab.close();
  }
});
