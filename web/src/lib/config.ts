/**
 * Server-side settings of the web app, read per request (never inlined at build time), and
 * the current `/events/head` the page is rendered at.
 */

import { DEFAULT_WS_URL } from '@/lib/defaults';
import { httpBaseFromWs, isRelativeUrl, resolveSubscribeUrl, SubscribeUrlError } from '@/lib/protocol';

export { DEFAULT_WS_URL, httpBaseFromWs };
const HEAD_TIMEOUT_MS = 2_000;

export interface RealtimeConfig {
  /** What the browser connects to (`NEXT_PUBLIC_WS_URL`): absolute, or relative to the page. */
  wsUrl: string;
  /** Where this server reaches the HTTP API (`WSB_HTTP_URL`, else derived from an absolute `wsUrl`); null: unknown. */
  httpUrl: string | null;
}

function env(name: string): string | undefined {
  // An indexed read: Next.js inlines a literal `process.env.NEXT_PUBLIC_...` at build time,
  // and the same build must serve any deployment's URL.
  const value = process.env[name]?.trim();
  return value ? value : undefined;
}


/**
 * The settings, checked: a `NEXT_PUBLIC_WS_URL` that cannot work (another scheme, no host)
 * throws here, naming the variable, rather than leaving the page silently disconnected.
 */
export function realtimeConfig(): RealtimeConfig {
  const wsUrl = env('NEXT_PUBLIC_WS_URL') ?? DEFAULT_WS_URL;
  try {
    // A relative URL is resolved in the browser; here its shape is checked against any page.
    resolveSubscribeUrl(wsUrl, isRelativeUrl(wsUrl) ? 'http://localhost/' : undefined);
  } catch (error) {
    throw new SubscribeUrlError(`NEXT_PUBLIC_WS_URL: ${(error as Error).message}`);
  }
  const http = env('WSB_HTTP_URL') ?? (isRelativeUrl(wsUrl) ? null : httpBaseFromWs(wsUrl));
  return { wsUrl, httpUrl: http === null ? null : http.replace(/\/$/, '') };
}

/** The newest position, to subscribe `since`; null when the service cannot be reached. */
export async function fetchHead(httpUrl: string | null): Promise<string | null> {
  if (httpUrl === null) {
    console.warn('[wsbroadcast] a relative NEXT_PUBLIC_WS_URL needs WSB_HTTP_URL to read /events/head');
    return null;
  }
  try {
    const response = await fetch(`${httpUrl}/events/head`, {
      cache: 'no-store',
      signal: AbortSignal.timeout(HEAD_TIMEOUT_MS),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body: unknown = await response.json();
    const id = (body as { id?: unknown } | null)?.id;
    if (typeof id !== 'string' || id === '') throw new Error('no "id" in the answer');
    return id;
  } catch (error) {
    // The page still renders; the client subscribes from its stored position, or live only.
    console.warn(`[wsbroadcast] GET ${httpUrl}/events/head failed:`, error);
    return null;
  }
}
