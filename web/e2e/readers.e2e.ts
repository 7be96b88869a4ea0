/**
 * Live readers in Debian's Chromium against a real wsbroadcast: three tabs on one post say
 * "3 reading now" and, when one closes, the other two say 2 within 2 s. Each post tab holds
 * a socket of its own (the service counts sockets), while the site-wide notifications stay
 * on the one socket the tabs share. The post page shows the post's history (`rewind`) and
 * its comments live; the home page's sidebar lists the post and links to it.
 */

import fs from 'node:fs';
import path from 'node:path';

import type { BrowserContext, Page } from 'playwright-core';

import { type Browser, launchChromium } from './support/browser';
import { freePort, publish, type Service, startNext, startWsbroadcast, WEB_DIR } from './support/processes';

const ARTIFACTS = path.join(WEB_DIR, 'e2e', 'artifacts');
const STEP_MS = 30_000;
/** What the issue asks: the other tabs show the new count within 2 s of a tab closing. */
const COUNT_MS = 2_000;
const POST = 'p-16';

let wsb: Service;
let next: Service;
let browser: Browser;
let context: BrowserContext;
let serviceUrl: string;
let siteUrl: string;
const pageErrors: string[] = [];
/** Published before any tab opened: the post page finds them through `rewind`. */
let history: string[] = [];

async function openTab(url: string): Promise<Page> {
  const tab = await context.newPage();
  tab.on('pageerror', (error) => pageErrors.push(String(error)));
  await tab.goto(url, { timeout: STEP_MS });
  return tab;
}

async function readers(tab: Page, n: number, timeout = STEP_MS): Promise<void> {
  await tab.locator(`.readers[data-readers="${n}"]`).filter({ hasText: `${n} reading now` }).waitFor({ timeout });
}

/** Subscribers the service has on WebSocket right now, and the post's count, from its own API. */
async function serviceWebSockets(): Promise<number> {
  const text = await (await fetch(`${serviceUrl}/metrics`)).text();
  const match = /^wsb_connections\{transport="ws"\} (\S+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

async function serviceReaders(): Promise<number> {
  const body = (await (await fetch(`${serviceUrl}/api/v1/readers?post_id=${POST}`)).json()) as { readers: number };
  return body.readers;
}

/** The ids in a tab's post activity, newest first. */
async function activityIds(tab: Page): Promise<string[]> {
  return tab
    .locator('[aria-label="Recent activity on this post"] [data-event-id]')
    .evaluateAll((items) => items.map((item) => item.getAttribute('data-event-id') ?? ''));
}

beforeAll(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const wsbPort = await freePort();
  const webPort = await freePort();
  serviceUrl = `http://127.0.0.1:${wsbPort}`;
  siteUrl = `http://127.0.0.1:${webPort}`;
  wsb = await startWsbroadcast({ port: wsbPort, allowedOrigin: siteUrl, heartbeatSeconds: 5 });
  next = await startNext(webPort, {
    NEXT_PUBLIC_WS_URL: `ws://127.0.0.1:${wsbPort}/api/v1/ws`,
    WSB_HTTP_URL: `${serviceUrl}/api/v1`,
  });
  browser = await launchChromium(STEP_MS);
  context = browser.context;
  history = await publish(serviceUrl, [
    { type: 'blog_update', data: { post_id: POST, action: 'created', title: 'Counting readers, politely' } },
    { type: 'comment_update', data: { post_id: 'p-other', comment_id: 'x1', action: 'created' } },
    {
      type: 'comment_update',
      data: { post_id: POST, comment_id: 'c1', action: 'created', author: 'Ada', body: 'Three tabs, three readers?' },
    },
    {
      type: 'comment_update',
      data: { post_id: POST, comment_id: 'c2', action: 'created', author: 'Grace', body: 'One socket, one reader.' },
    },
  ]);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await next?.stop();
  await wsb?.stop();
}, 60_000);

it('counts three tabs on a post as 3 readers, and 2 within 2 s of one closing', async () => {
  const postUrl = `${siteUrl}/posts/${POST}`;
  const tabs: Page[] = [];
  try {
    for (let n = 0; n < 3; n += 1) tabs.push(await openTab(postUrl));
    for (const tab of tabs) await readers(tab, 3);
    expect(await serviceReaders()).toBe(3);
    // Three post sockets, one per tab, and one site-wide socket shared by the three tabs.
    expect(await serviceWebSockets()).toBe(4);

    // The rewound history: the post's three events, newest first, not the other post's.
    const [, , c1, c2] = history;
    expect(await activityIds(tabs[0]!)).toEqual([c2, c1, history[0]]);
    await tabs[0]!.getByRole('heading', { name: 'Counting readers, politely' }).waitFor({ timeout: STEP_MS });

    const closedAt = Date.now();
    await tabs.pop()!.close();
    await Promise.all(tabs.map((tab) => readers(tab, 2, STEP_MS)));
    const elapsed = Date.now() - closedAt;
    console.log(`readers: the other tabs showed "2 reading now" ${elapsed} ms after a tab closed`);
    expect(elapsed).toBeLessThan(COUNT_MS);
    expect(await serviceReaders()).toBe(2);

    // A new comment shows in both remaining tabs, live.
    await publish(serviceUrl, {
      type: 'comment_update',
      data: { post_id: POST, comment_id: 'c3', action: 'created', author: 'Linus', body: 'Live, as it happens.' },
    });
    for (const tab of tabs) await tab.locator('[data-comment-id="c3"]').waitFor({ timeout: STEP_MS });
    const comments = await tabs[0]!
      .locator('[data-comment-id]')
      .evaluateAll((items) => items.map((li) => li.getAttribute('data-comment-id')));
    expect(comments).toEqual(['c1', 'c2', 'c3']);
    await tabs[0]!.screenshot({ path: path.join(ARTIFACTS, 'post.png'), animations: 'disabled' });

    // The home page's sidebar lists the post (2 readers), and its link opens the post page.
    const home = await openTab(`${siteUrl}/`);
    tabs.push(home);
    const entry = home.locator(`[data-post-id="${POST}"]`);
    await entry.filter({ hasText: '2 readers' }).waitFor({ timeout: STEP_MS });
    await home.screenshot({ path: path.join(ARTIFACTS, 'top-posts.png'), animations: 'disabled' });
    await entry.getByRole('link').click();
    await home.waitForURL(`${siteUrl}/posts/${POST}`, { timeout: STEP_MS });
    for (const tab of tabs) await readers(tab, 3);
  } finally {
    for (const tab of tabs) await tab.close();
  }
  expect(pageErrors).toEqual([]);
});
