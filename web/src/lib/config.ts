/**
 * Server-side settings of the web app, read per request (never inlined at build time), and
 * the current `/events/head` the page is rendered at.
 */

export const DEFAULT_WS_URL = 'ws://localhost:8000/api/v1/ws';
const DEFAULT_HEARTBEAT_SECONDS = 25;
const HEAD_TIMEOUT_MS = 2_000;

export interface RealtimeConfig {
  /** What the browser connects to (`NEXT_PUBLIC_WS_URL`). */
  wsUrl: string;
  /** Where this server reaches the HTTP API (`WSB_HTTP_URL`, else derived from `wsUrl`). */
  httpUrl: string;
  /** The service's heartbeat interval in ms (`NEXT_PUBLIC_WS_HEARTBEAT_SECONDS`). */
  heartbeatMs: number;
}

function env(name: string): string | undefined {
  // An indexed read: Next.js inlines a literal `process.env.NEXT_PUBLIC_...` at build time,
  // and the same build must serve any deployment's URL.
  const value = process.env[name]?.trim();
  return value ? value : undefined;
}

/** `ws://host:8000/api/v1/ws` -> `http://host:8000/api/v1` (wss -> https). */
export function httpBaseFromWs(wsUrl: string): string {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/ws\/?$/, '');
  url.search = '';
  url.hash = '';
  return url.toString().replace(/\/$/, '');
}

export function realtimeConfig(): RealtimeConfig {
  const wsUrl = env('NEXT_PUBLIC_WS_URL') ?? DEFAULT_WS_URL;
  const httpUrl = (env('WSB_HTTP_URL') ?? httpBaseFromWs(wsUrl)).replace(/\/$/, '');
  const seconds = Number(env('NEXT_PUBLIC_WS_HEARTBEAT_SECONDS') ?? DEFAULT_HEARTBEAT_SECONDS);
  const heartbeatMs = Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 25_000;
  return { wsUrl, httpUrl, heartbeatMs };
}

/** The newest position, to subscribe `since`; null when the service cannot be reached. */
export async function fetchHead(httpUrl: string): Promise<string | null> {
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
