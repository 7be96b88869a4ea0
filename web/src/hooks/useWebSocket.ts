'use client';

/**
 * useWebSocket: one wsbroadcast subscription for a React component. The connection itself
 * lives in `lib/connection.ts` (reconnects, resume, dead links, the `/sse` fallback) and, when
 * the browser can, is shared by all the tabs of the origin (`lib/tabs.ts`).
 */

import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';

import { DEFAULT_BASE_DELAY_MS, DEFAULT_MAX_DELAY_MS } from '@/lib/backoff';
import {
  Connection,
  type ConnectionHandlers,
  type ConnectionSettings,
  type ConnectionSink,
  type ConnectionStatus,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_FALLBACK_AFTER,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_RETRY_WEBSOCKET_AFTER_MS,
  type TokenProvider,
  type Transport,
} from '@/lib/connection';
import { isRelativeUrl, MAX_REWIND, resolveSubscribeUrl, sseUrlFor, subscribeUrl } from '@/lib/protocol';
import { canShareAcrossTabs, type Source, TabGroup } from '@/lib/tabs';

export type { ConnectionStatus, DisconnectInfo, Token, TokenProvider, Transport } from '@/lib/connection';
export { DEFAULT_HEARTBEAT_INTERVAL_MS } from '@/lib/connection';

export interface UseWebSocketOptions extends ConnectionHandlers {
  /**
   * The subscribe URL: `ws://host/api/v1/ws`, or relative (`/api/v1/ws`), resolved against
   * the page. A URL that cannot work throws a `SubscribeUrlError` when the hook is rendered.
   */
  url: string;
  /** False: no connection (status `idle`); true again connects. Default true. */
  enabled?: boolean;
  /** Reconnect attempts in a row before giving up; unlimited when not given. */
  reconnectAttempts?: number;
  /** Base of the exponential backoff, and the shortest wait before any retry, in ms (default 500). */
  reconnectInterval?: number;
  /** Ceiling of the backoff, in ms (default 20 000). */
  maxReconnectInterval?: number;
  /**
   * The heartbeat interval (ms) assumed until the server's first heartbeat states its own
   * (default 25 000, the service's default); 0 turns dead-link detection off.
   */
  heartbeatInterval?: number;
  /** A handshake that has not opened after this long is dropped and retried (ms, default 10 000). */
  connectTimeout?: number;
  /** Deliver only these event types. */
  types?: readonly string[];
  /** Deliver only events of this post (and those with no `post_id`, such as system notices). */
  postId?: string;
  /**
   * With no position to resume from, begin with the last N (1 to 100) events that pass the
   * filters (`rewind=N`): a page's recent activity with no server render. A reconnect
   * resumes from its position instead. Sets the default `storageKey` to null, so that each
   * page load rewinds.
   */
  rewind?: number;
  /**
   * Receive this post's live reader count (`readers=1`, needs `postId`) through `onReaders`.
   * The service counts each socket as one reader, so the default `shareAcrossTabs` becomes
   * false: each tab is a reader of its own.
   */
  readers?: boolean;
  /** Sent as the `bearer.<jwt>` subprotocol (over `/sse`, as `token=`); see `TokenProvider`. */
  getToken?: TokenProvider;
  /** Where to start when this tab has no stored position: a server-rendered `/events/head`. */
  since?: string | null;
  /** sessionStorage key for the last id; default derived from the URL and filters (null with `rewind`); null: none. */
  storageKey?: string | null;
  /**
   * Share one connection among the tabs of this origin (Web Locks + BroadcastChannel).
   * Default true, false with `readers` (shared, the tabs would count as one reader).
   */
  shareAcrossTabs?: boolean;
  /** `/sse` URL to read when the WebSocket cannot open; default beside `url`; null: no fallback. */
  sseUrl?: string | null;
  /** WebSocket attempts in a row failing before `/sse` is tried (default 3). */
  fallbackAfter?: number;
  /** On `/sse`, try the WebSocket again after this long (ms, default 5 minutes). */
  retryWebSocketAfter?: number;
}

export interface UseWebSocketResult {
  status: ConnectionStatus;
  /** `websocket`, or `sse` while falling back. */
  transport: Transport;
  /**
   * Where this subscription would resume: the id of the last event (or a resync's head, or a
   * heartbeat's `last_id`). Reading it subscribes the component to its changes; a component
   * that never reads it does not re-render on every event.
   */
  lastEventId: string | null;
  /** Close the connection and stay closed (until `reconnect()`). */
  disconnect: () => void;
  /** Connect again now, from the last id, with a fresh backoff (after `unauthorized` or `closed`). */
  reconnect: () => void;
}

function readStored(key: string | null): string | null {
  if (key === null) return null;
  try {
    return window.sessionStorage.getItem(key);
  } catch {
    return null; // storage disabled: resume within this page only
  }
}

function writeStored(key: string | null, id: string): void {
  if (key === null) return;
  try {
    window.sessionStorage.setItem(key, id);
  } catch {
    // storage full or disabled: the id still lives in memory
  }
}

/** The default sessionStorage key: one position per subscribe URL and filters. */
export function lastEventIdKey(url: string, types?: readonly string[], postId?: string): string {
  // On the server a relative URL stays relative (there is no page yet); the key is used in the browser only.
  const target = isRelativeUrl(url)
    ? `${url}?types=${types?.join(',') ?? ''}&post_id=${postId ?? ''}`
    : subscribeUrl(url, { types, postId });
  return `wsbroadcast:last-event-id:${target}`;
}

/** Tabs share a connection only when they ask for the very same stream. */
function groupName(url: string, settings: ConnectionSettings): string {
  const extra = `${settings.rewind ? `&rewind=${settings.rewind}` : ''}${settings.readers ? '&readers=1' : ''}`;
  return `${lastEventIdKey(url, settings.types, settings.postId)}${extra}`;
}

/**
 * Check the URL where the hook is configured. In the browser a relative URL is resolved
 * against the page; on the server (no page yet) only its shape can be checked.
 */
function checkedUrl(url: string): string {
  if (typeof window !== 'undefined') return resolveSubscribeUrl(url, window.location.href);
  return isRelativeUrl(url) ? resolveSubscribeUrl(url, 'http://localhost/') && url : resolveSubscribeUrl(url);
}

/** One live source per settings key, torn down a microtask after its effect ends unless revived. */
interface Live {
  key: string;
  source: Source;
  disposing: boolean;
}

export function useWebSocket(options: UseWebSocketOptions): UseWebSocketResult;
export function useWebSocket(url: string, options?: Omit<UseWebSocketOptions, 'url'>): UseWebSocketResult;
export function useWebSocket(
  first: string | UseWebSocketOptions,
  rest: Omit<UseWebSocketOptions, 'url'> = {},
): UseWebSocketResult {
  // Both seed shapes: `useWebSocket({ url, onMessage })` and `useWebSocket(url, { onMessage })`.
  const options: UseWebSocketOptions = typeof first === 'string' ? { ...rest, url: first } : first;
  const {
    types,
    postId,
    rewind,
    readers = false,
    since = null,
    enabled = true,
    shareAcrossTabs = !readers,
    reconnectAttempts = Number.POSITIVE_INFINITY,
    reconnectInterval = DEFAULT_BASE_DELAY_MS,
    maxReconnectInterval = DEFAULT_MAX_DELAY_MS,
    heartbeatInterval = DEFAULT_HEARTBEAT_INTERVAL_MS,
    connectTimeout = DEFAULT_CONNECT_TIMEOUT_MS,
    fallbackAfter = DEFAULT_FALLBACK_AFTER,
    retryWebSocketAfter = DEFAULT_RETRY_WEBSOCKET_AFTER_MS,
  } = options;
  const url = useMemo(() => checkedUrl(options.url), [options.url]);
  if (rewind !== undefined && !(Number.isInteger(rewind) && rewind >= 1 && rewind <= MAX_REWIND)) {
    // The service would close with 4400 and the hook stop: say so where it is configured.
    throw new RangeError(`useWebSocket: rewind must be an integer from 1 to ${MAX_REWIND}, not ${rewind}`);
  }
  const sseUrl = useMemo(() => {
    if (options.sseUrl === null) return null;
    if (options.sseUrl !== undefined) return options.sseUrl;
    return isRelativeUrl(url) ? null : sseUrlFor(url); // server render: decided in the browser
  }, [options.sseUrl, url]);
  const storageKey =
    options.storageKey !== undefined ? options.storageKey : rewind ? null : lastEventIdKey(url, types, postId);

  const [status, setStatus] = useState<ConnectionStatus>(enabled ? 'connecting' : 'idle');
  const [transport, setTransport] = useState<Transport>('websocket');
  // The position lives in a ref; only a component that read `lastEventId` re-renders on a change.
  const positionRef = useRef<string | null>(null);
  const positionReadRef = useRef(false);
  const [, setPositionVersion] = useState(0);

  // Callbacks live in a ref: a parent passing new inline functions each render does not
  // reconnect; the connection always calls the latest ones.
  const handlersRef = useRef<ConnectionHandlers>(options);
  useLayoutEffect(() => {
    handlersRef.current = options;
  });

  const liveRef = useRef<Live | null>(null);
  const typesKey = types ? types.join(',') : '';
  const key = JSON.stringify([
    url,
    sseUrl,
    typesKey,
    postId ?? '',
    rewind ?? 0,
    readers,
    storageKey,
    shareAcrossTabs,
    reconnectAttempts,
    reconnectInterval,
    maxReconnectInterval,
    heartbeatInterval,
    connectTimeout,
    fallbackAfter,
    retryWebSocketAfter,
  ]);
  // Set by disconnect(), cleared by reconnect(): no new settings bring the connection back meanwhile.
  const disconnectedRef = useRef(false);
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    const previous = liveRef.current;
    if (!enabled || disconnectedRef.current) {
      if (previous !== null) {
        previous.source.dispose();
        liveRef.current = null;
      }
      return undefined;
    }
    const liveKey = `${key}#${generation}`;
    if (previous !== null && previous.key === liveKey && previous.disposing) {
      // React StrictMode's simulated unmount and remount: keep the one socket.
      previous.disposing = false;
      return () => disposeSoon(previous, liveRef);
    }
    previous?.source.dispose();

    const resolvedUrl = resolveSubscribeUrl(url, window.location.href);
    const settings: ConnectionSettings = {
      url: resolvedUrl,
      sseUrl: sseUrl ?? (options.sseUrl === null ? null : sseUrlFor(resolvedUrl)),
      types: typesKey ? typesKey.split(',') : undefined,
      postId,
      rewind,
      readers,
      since: readStored(storageKey) ?? since,
      reconnectAttempts,
      reconnectInterval,
      maxReconnectInterval,
      heartbeatInterval,
      connectTimeout,
      fallbackAfter,
      retryWebSocketAfter,
    };
    positionRef.current = settings.since;
    if (positionReadRef.current) setPositionVersion((n) => n + 1);
    const sink: ConnectionSink = {
      handlers: () => handlersRef.current,
      status: setStatus,
      transport: setTransport,
      position: (id) => {
        positionRef.current = id;
        writeStored(storageKey, id);
        if (positionReadRef.current) setPositionVersion((n) => n + 1);
      },
    };
    const source: Source =
      shareAcrossTabs && canShareAcrossTabs()
        ? new TabGroup(`wsbroadcast:${groupName(resolvedUrl, settings)}`, settings, sink)
        : new Connection(settings, sink);
    const live: Live = { key: liveKey, source, disposing: false };
    liveRef.current = live;
    source.start();
    return () => disposeSoon(live, liveRef);
    // `since` only seeds the first connection; the key holds every other setting.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, enabled, generation]);

  const disconnect = useCallback(() => {
    disconnectedRef.current = true;
    liveRef.current?.source.disconnect();
  }, []);

  const reconnect = useCallback(() => {
    const live = liveRef.current;
    if (disconnectedRef.current || live === null) {
      disconnectedRef.current = false;
      if (live !== null) live.source.dispose();
      liveRef.current = null;
      setGeneration((n) => n + 1);
    } else {
      live.source.reconnect();
    }
  }, []);

  return {
    status: enabled ? status : 'idle',
    transport,
    get lastEventId() {
      positionReadRef.current = true;
      return positionRef.current;
    },
    disconnect,
    reconnect,
  };
}

/**
 * Unmount: tear down a microtask later, unless the effect comes straight back first, as it
 * does after React StrictMode's simulated unmount: the hook never opens a second socket.
 * A promise, not a timer, so that tests with fake timers still see the teardown.
 */
function disposeSoon(live: Live, ref: { current: Live | null }): void {
  live.disposing = true;
  void Promise.resolve().then(() => {
    if (!live.disposing) return;
    live.source.dispose();
    if (ref.current === live) ref.current = null;
  });
}

export default useWebSocket;
