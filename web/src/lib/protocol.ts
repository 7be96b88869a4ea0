/**
 * The wsbroadcast wire protocol, as docs/api.md states it: the event envelope, the control
 * messages, parsing one text frame, and what a client does for each close code.
 */

// The event types come from the service's own JSON Schemas (`npm run gen:types` reads
// GET /schema; `npm run check:types` fails when they are out of date): one source.
import type {
  BlogUpdateData,
  BlogUpdateEvent,
  CommentUpdateEvent,
  KnownEvent,
  SystemNotificationData,
  SystemNotificationEvent,
} from './events.generated';

export type {
  BlogUpdateData,
  BlogUpdateEvent,
  CommentUpdateData,
  CommentUpdateEvent,
  KnownEvent,
  KnownEventType,
  SystemNotificationData,
  SystemNotificationEvent,
} from './events.generated';

export type PostAction = BlogUpdateData['action'];
export type NoticeLevel = SystemNotificationData['level'];

/** Any other type, which a server with strict typing off or WSB_EVENT_TYPES lets through. */
export interface OtherEvent {
  id: string;
  type: string;
  data: Record<string, unknown>;
  timestamp: string;
}

/** One published event: `{"id", "type", "data", "timestamp"}`, exactly these fields. */
export type WsEvent = KnownEvent | OtherEvent;

export interface ResyncInfo {
  reason: string;
  /** The newest position: store it as the last id, then refetch state. */
  head: string;
}

/**
 * A heartbeat's `data`: how far this subscriber's stream has got (always a valid `since`,
 * past events a filter dropped) and the server's heartbeat interval in seconds. A server
 * older than this field sends neither.
 */
export interface HeartbeatInfo {
  lastId: string | null;
  /** Seconds; null when the server did not say. */
  interval: number | null;
}

/** A live reader count of one post (`readers=1`). */
export interface ReadersInfo {
  post_id: string;
  readers: number;
}

/** A parsed frame: an event, or one of the control messages that carry no `id`. */
export type ServerMessage =
  | { kind: 'event'; event: WsEvent }
  | { kind: 'heartbeat'; heartbeat: HeartbeatInfo }
  | { kind: 'resync'; resync: ResyncInfo }
  | { kind: 'readers'; readers: ReadersInfo };

export type ParseResult = { ok: true; message: ServerMessage } | { ok: false; error: string };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Parse one text frame; never throws, a bad frame comes back as `{ ok: false, error }`. */
export function parseMessage(raw: unknown): ParseResult {
  if (typeof raw !== 'string') return { ok: false, error: 'frame is not text' };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { ok: false, error: 'frame is not JSON' };
  }
  if (!isRecord(value)) return { ok: false, error: 'frame is not a JSON object' };
  const { type, data } = value;
  if (typeof type !== 'string' || type === '') return { ok: false, error: 'type: missing' };
  if (type === 'heartbeat') {
    const info = isRecord(data) ? data : {};
    const lastId = typeof info.last_id === 'string' && info.last_id !== '' ? info.last_id : null;
    const interval =
      typeof info.interval === 'number' && Number.isFinite(info.interval) && info.interval > 0
        ? info.interval
        : null;
    return { ok: true, message: { kind: 'heartbeat', heartbeat: { lastId, interval } } };
  }
  if (type === 'readers') {
    if (!isRecord(data) || typeof data.post_id !== 'string' || typeof data.readers !== 'number') {
      return { ok: false, error: 'readers: data.post_id or data.readers missing' };
    }
    return { ok: true, message: { kind: 'readers', readers: { post_id: data.post_id, readers: data.readers } } };
  }
  if (type === 'resync') {
    if (!isRecord(data) || typeof data.head !== 'string' || data.head === '') {
      return { ok: false, error: 'resync: data.head missing' };
    }
    const reason = typeof data.reason === 'string' ? data.reason : 'unknown';
    return { ok: true, message: { kind: 'resync', resync: { reason, head: data.head } } };
  }
  if (typeof value.id !== 'string' || value.id === '') return { ok: false, error: 'id: missing' };
  if (!isRecord(data)) return { ok: false, error: 'data: not an object' };
  const timestamp = typeof value.timestamp === 'string' ? value.timestamp : '';
  const event = { id: value.id, type, data, timestamp } as WsEvent;
  return { ok: true, message: { kind: 'event', event } };
}

export function isBlogUpdate(event: WsEvent): event is BlogUpdateEvent {
  return event.type === 'blog_update';
}

export function isCommentUpdate(event: WsEvent): event is CommentUpdateEvent {
  return event.type === 'comment_update';
}

export function isSystemNotification(event: WsEvent): event is SystemNotificationEvent {
  return event.type === 'system_notification';
}

/** Close codes the contract names. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  TRY_AGAIN_LATER: 1013,
  BAD_PARAMETER: 4400,
  UNAUTHORIZED: 4401,
  FORBIDDEN_ORIGIN: 4403,
  RATE_LIMITED: 4429,
} as const;

/**
 * What the client does after a close:
 * - `stop`: never retry unchanged (a bad query parameter, an origin not allowed);
 * - `refresh-token`: get a new token first, then retry with backoff;
 * - `random-delay`: the server is shutting down; retry after a random delay, elsewhere;
 * - `backoff`: retry with exponential backoff (too slow, at the limit, rate limited, a lost link).
 * Every retry resumes with `since`.
 */
export type ClosePolicy = 'stop' | 'refresh-token' | 'random-delay' | 'backoff';

export function closeCodePolicy(code: number): ClosePolicy {
  switch (code) {
    case CloseCode.BAD_PARAMETER:
    case CloseCode.FORBIDDEN_ORIGIN:
      return 'stop';
    case CloseCode.UNAUTHORIZED:
      return 'refresh-token';
    case CloseCode.GOING_AWAY:
    case 1012: // service restart: the same advice as a shutdown
      return 'random-delay';
    default:
      // 1013, 4429 and anything unexpected (1006 for a dropped link, 1011, ...).
      return 'backoff';
  }
}

/** The subprotocols to offer: `wsbroadcast` beside `bearer.<jwt>`, never the token in the URL. */
export function subprotocols(token: string): string[] {
  return ['wsbroadcast', `bearer.${token}`];
}

export interface SubscribeParams {
  since?: string | null;
  types?: readonly string[];
  postId?: string;
  /** Begin with the last N (1 to 100) matching events; sent only when there is no `since`. */
  rewind?: number;
  /** Also receive the post's reader counts (`readers=1`; needs `postId`). */
  readers?: boolean;
}

/** The largest `rewind` the service takes. */
export const MAX_REWIND = 100;

/**
 * The subscribe URL with `since`, `types`, `post_id`, `rewind` and `readers`; the URL
 * unchanged when none is set. `rewind` goes only on a connection with no `since`: the first
 * one of a page; a reconnect resumes from its position, it does not rewind again.
 */
export function subscribeUrl(url: string, params: SubscribeParams): string {
  const query: [string, string][] = [];
  if (params.since) query.push(['since', params.since]);
  if (params.types && params.types.length > 0) query.push(['types', params.types.join(',')]);
  if (params.postId) query.push(['post_id', params.postId]);
  if (params.rewind && !params.since) query.push(['rewind', String(params.rewind)]);
  if (params.readers && params.postId) query.push(['readers', '1']);
  if (query.length === 0) return url;
  const target = new URL(url);
  for (const [name, value] of query) target.searchParams.set(name, value);
  return target.toString();
}

/** A subscribe URL that cannot work: thrown when the hook is configured, never a silent retry. */
export class SubscribeUrlError extends Error {
  override readonly name = 'SubscribeUrlError';
}

const SCHEMES: Record<string, string> = { 'ws:': 'ws:', 'wss:': 'wss:', 'http:': 'ws:', 'https:': 'wss:' };

/**
 * The absolute `ws:`/`wss:` URL to open. A relative URL (`/api/v1/ws`, what a site behind
 * one proxy uses) is resolved against `base` (the page), `http:` becoming `ws:` and `https:`
 * `wss:`; an absolute `ws:`/`wss:` URL comes back exactly as given. Throws
 * `SubscribeUrlError` for what cannot work (another scheme, a fragment, no host).
 */
export function resolveSubscribeUrl(url: string, base?: string): string {
  const trimmed = url.trim();
  if (trimmed === '') throw new SubscribeUrlError('the subscribe URL is empty');
  let target: URL;
  try {
    target = base === undefined ? new URL(trimmed) : new URL(trimmed, base);
  } catch {
    throw new SubscribeUrlError(
      base === undefined
        ? `"${url}" is not an absolute URL (ws://host/api/v1/ws) and there is no page to resolve it against`
        : `"${url}" is not a URL`,
    );
  }
  const scheme = SCHEMES[target.protocol];
  if (scheme === undefined) {
    throw new SubscribeUrlError(`"${url}": the scheme must be ws:, wss:, http: or https:, not ${target.protocol}`);
  }
  if (target.hash !== '') throw new SubscribeUrlError(`"${url}": a WebSocket URL cannot have a #fragment`);
  if (target.host === '') throw new SubscribeUrlError(`"${url}" has no host`);
  if (/^wss?:\/\//i.test(trimmed)) return trimmed;
  target.protocol = scheme;
  return target.toString();
}

/** Whether `url` is relative (resolved against the page in the browser). */
export function isRelativeUrl(url: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(url.trim());
}

/**
 * The `/sse` URL beside a `/ws` URL: `ws://host/api/v1/ws` -> `http://host/api/v1/sse`
 * (`wss:` -> `https:`). Null when the path does not end in `/ws` (no guess is made).
 */
export function sseUrlFor(wsUrl: string): string | null {
  const target = new URL(wsUrl);
  if (!/\/ws\/?$/.test(target.pathname)) return null;
  target.protocol = target.protocol === 'wss:' ? 'https:' : 'http:';
  target.pathname = target.pathname.replace(/\/ws\/?$/, '/sse');
  return target.toString();
}

/** `ws://host:8000/api/v1/ws` -> `http://host:8000/api/v1` (wss -> https): the HTTP API beside it. */
export function httpBaseFromWs(wsUrl: string): string {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/ws\/?$/, '');
  url.search = '';
  url.hash = '';
  return url.toString().replace(/\/$/, '');
}
