'use client';

/**
 * useWebSocket: one wsbroadcast subscription. Connects, resumes with `since` (kept in
 * sessionStorage across reloads), reconnects by the contract's close-code table with
 * jittered backoff, and notices a dead link by its silence.
 */

import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';

import {
  backoffDelay,
  DEFAULT_BASE_DELAY_MS,
  DEFAULT_MAX_DELAY_MS,
  restartDelay,
  staleAfterMs,
} from '@/lib/backoff';
import {
  CloseCode,
  closeCodePolicy,
  parseMessage,
  type ResyncInfo,
  subprotocols,
  subscribeUrl,
  type WsEvent,
} from '@/lib/protocol';

export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'offline' | 'closed';

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** False when the hook has stopped for good (4400, 4403, attempts used up, `disconnect()`). */
  willReconnect: boolean;
}

export type Token = string | null | undefined;
/** Called before every connection; `refresh` is true after a 4401 (a new token is needed). */
export type TokenProvider = (context: { refresh: boolean }) => Token | Promise<Token>;

export interface UseWebSocketOptions {
  /** The subscribe URL, e.g. `ws://localhost:8000/api/v1/ws`. */
  url: string;
  /** Each event, in order; heartbeats and resyncs never come here. */
  onMessage?: (event: WsEvent) => void;
  onConnect?: () => void;
  onDisconnect?: (info: DisconnectInfo) => void;
  onError?: (error: Event) => void;
  /** The server could not resume from the last id (history expired, new epoch): refetch. */
  onResync?: (info: ResyncInfo) => void;
  /** Reconnect attempts in a row before giving up; unlimited when not given. */
  reconnectAttempts?: number;
  /** Base of the exponential backoff, in ms (default 500). */
  reconnectInterval?: number;
  /** Ceiling of the backoff, in ms (default 20 000). */
  maxReconnectInterval?: number;
  /** The server's heartbeat interval in ms (default 25 000; 0: no dead-link detection). */
  heartbeatInterval?: number;
  /** Deliver only these event types. */
  types?: readonly string[];
  /** Deliver only events of this post (and those with no `post_id`, such as system notices). */
  postId?: string;
  /** A subscriber JWT, sent as the `bearer.<jwt>` subprotocol, never in the URL. */
  getToken?: TokenProvider;
  /** Where to start when this tab has no stored position: a server-rendered `/events/head`. */
  since?: string | null;
  /** sessionStorage key for the last id; default derived from the URL and filters; null: none. */
  storageKey?: string | null;
}

export interface UseWebSocketResult {
  status: ConnectionStatus;
  /** The id of the last event delivered (or the head of the last resync). */
  lastEventId: string | null;
  /** Close the socket and never reconnect. */
  disconnect: () => void;
}

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 25_000;
/** A connection open this long has proven itself: the backoff starts again from its base. */
const STABLE_AFTER_MS = 5_000;
/** Our own close code when we drop a socket we gave up on (a dead link, going offline). */
const CLIENT_DROP = 4000;

type Timer = ReturnType<typeof setTimeout>;

interface Settings {
  url: string;
  types?: readonly string[];
  postId?: string;
  reconnectAttempts: number;
  reconnectInterval: number;
  maxReconnectInterval: number;
  heartbeatInterval: number;
  storageKey: string | null;
  since: string | null;
}

interface Sink {
  handlers: () => UseWebSocketOptions;
  setStatus: (status: ConnectionStatus) => void;
  setLastEventId: (id: string | null) => void;
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

function isThenable<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** The connection state machine, free of React; the hook owns one per settings key. */
class Subscription {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private connects = 0;
  private retryTimer: Timer | null = null;
  private staleTimer: Timer | null = null;
  private openedAt = 0;
  private lastMessageAt = 0;
  private lastCode = 0;
  private needFreshToken = false;
  private stopped = false;
  private disposing = false;
  private offline = false;
  private lastEventId: string | null;

  constructor(
    readonly key: string,
    private readonly settings: Settings,
    private readonly sink: Sink,
  ) {
    this.lastEventId = readStored(settings.storageKey) ?? settings.since;
  }

  start(): void {
    this.sink.setLastEventId(this.lastEventId);
    window.addEventListener('online', this.handleOnline);
    window.addEventListener('offline', this.handleOffline);
    document.addEventListener('visibilitychange', this.handleVisibility);
    this.offline = navigator.onLine === false;
    if (this.offline) this.sink.setStatus('offline');
    else this.connect();
  }

  /** Stop for good: close the socket, cancel every timer, never reconnect. */
  disconnect(): void {
    if (this.stopped) return;
    const wasOpen = this.ws !== null;
    this.shutdown();
    this.sink.setStatus('closed');
    if (wasOpen) {
      this.sink.handlers().onDisconnect?.({
        code: CloseCode.NORMAL,
        reason: 'disconnect()',
        willReconnect: false,
      });
    }
  }

  /**
   * Unmount: tear down a microtask later, unless the effect comes straight back first, as it
   * does after React StrictMode's simulated unmount: the hook never opens a second socket.
   * A promise, not a timer, so that tests with fake timers still see the teardown.
   */
  disposeSoon(): void {
    this.disposing = true;
    void Promise.resolve().then(() => {
      if (this.disposing) this.shutdown();
    });
  }

  /** Tear down now: the settings changed, the old socket must go before the new one opens. */
  dispose(): void {
    if (!this.stopped) this.shutdown();
  }

  /** Keep going: the effect ran again with the same settings. */
  revive(): boolean {
    if (!this.disposing || this.stopped) return false;
    this.disposing = false;
    return true;
  }

  private shutdown(): void {
    this.stopped = true;
    this.disposing = false;
    this.clearTimers();
    this.dropSocket(CloseCode.NORMAL, 'client closed');
    window.removeEventListener('online', this.handleOnline);
    window.removeEventListener('offline', this.handleOffline);
    document.removeEventListener('visibilitychange', this.handleVisibility);
  }

  private connect(): void {
    if (this.stopped) return;
    this.clearRetry();
    this.sink.setStatus(this.connects === 0 ? 'connecting' : 'reconnecting');
    const connectNumber = ++this.connects;
    const getToken = this.sink.handlers().getToken;
    if (!getToken) {
      this.open(null);
      return;
    }
    let token: Token | Promise<Token>;
    try {
      token = getToken({ refresh: this.needFreshToken });
    } catch (error) {
      this.tokenFailed(error);
      return;
    }
    if (!isThenable(token)) {
      this.open(token ?? null);
      return;
    }
    token.then(
      (value) => {
        // A newer connect, a disconnect or an unmount happened while the token was fetched.
        if (this.stopped || connectNumber !== this.connects) return;
        this.open(value ?? null);
      },
      (error: unknown) => {
        if (this.stopped || connectNumber !== this.connects) return;
        this.tokenFailed(error);
      },
    );
  }

  private open(token: string | null): void {
    this.needFreshToken = false;
    const { url, types, postId } = this.settings;
    let ws: WebSocket;
    try {
      const target = subscribeUrl(url, { since: this.lastEventId, types, postId });
      ws = token ? new WebSocket(target, subprotocols(token)) : new WebSocket(target);
    } catch (error) {
      // A malformed URL throws a SyntaxError: retrying it unchanged cannot help.
      console.error('[useWebSocket] cannot open', url, error);
      this.sink.handlers().onError?.(new Event('error'));
      this.shutdown();
      this.sink.setStatus('closed');
      return;
    }
    this.ws = ws;
    this.openedAt = 0;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = Date.now();
      this.touch();
      this.sink.setStatus('open');
      this.sink.handlers().onConnect?.();
    };
    ws.onmessage = (message: MessageEvent) => {
      if (this.ws !== ws) return;
      this.receive(message.data);
    };
    ws.onerror = (event: Event) => {
      if (this.ws !== ws) return;
      this.sink.handlers().onError?.(event);
    };
    ws.onclose = (event: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(event.code, event.reason);
    };
  }

  private receive(raw: unknown): void {
    this.touch();
    // Traffic proves the link works: the next drop backs off from the base again.
    this.attempt = 0;
    const parsed = parseMessage(raw);
    if (!parsed.ok) {
      console.warn(`[useWebSocket] dropped a bad frame: ${parsed.error}`);
      return;
    }
    const { message } = parsed;
    if (message.kind === 'heartbeat') return;
    if (message.kind === 'resync') {
      this.remember(message.resync.head);
      this.sink.handlers().onResync?.(message.resync);
      return;
    }
    this.remember(message.event.id);
    this.sink.handlers().onMessage?.(message.event);
  }

  private remember(id: string): void {
    this.lastEventId = id;
    writeStored(this.settings.storageKey, id);
    this.sink.setLastEventId(id);
  }

  /** A message arrived (or the socket opened): push the dead-link deadline back. */
  private touch(): void {
    this.lastMessageAt = Date.now();
    if (this.staleTimer !== null) clearTimeout(this.staleTimer);
    this.staleTimer = null;
    const { heartbeatInterval } = this.settings;
    if (heartbeatInterval <= 0) return;
    this.staleTimer = setTimeout(() => {
      this.staleTimer = null;
      console.warn('[useWebSocket] no message or heartbeat in time: reconnecting');
      this.loseLink('no heartbeat');
    }, staleAfterMs(heartbeatInterval));
  }

  /** Give up on the current socket now: a dead link may take minutes to report its close. */
  private loseLink(reason: string): void {
    if (this.ws === null) return;
    this.dropSocket(CLIENT_DROP, reason);
    this.closed(CloseCode.ABNORMAL, reason);
  }

  private dropSocket(code: number, reason: string): void {
    const ws = this.ws;
    if (ws === null) return;
    this.ws = null;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onerror = null;
    ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  private closed(code: number, reason: string): void {
    if (this.staleTimer !== null) clearTimeout(this.staleTimer);
    this.staleTimer = null;
    if (this.stopped) return;
    this.lastCode = code;
    if (this.openedAt > 0 && Date.now() - this.openedAt >= STABLE_AFTER_MS) this.attempt = 0;
    const policy = closeCodePolicy(code);
    const onDisconnect = this.sink.handlers().onDisconnect;
    const outOfAttempts = this.attempt >= this.settings.reconnectAttempts;
    if (policy === 'stop' || outOfAttempts) {
      this.shutdown();
      this.sink.setStatus('closed');
      onDisconnect?.({ code, reason, willReconnect: false });
      return;
    }
    if (policy === 'refresh-token') this.needFreshToken = true;
    const delay =
      policy === 'random-delay'
        ? restartDelay()
        : backoffDelay(this.attempt, this.settings.reconnectInterval, this.settings.maxReconnectInterval);
    this.attempt += 1;
    onDisconnect?.({ code, reason, willReconnect: true });
    this.scheduleRetry(delay);
  }

  private tokenFailed(error: unknown): void {
    console.error('[useWebSocket] getToken failed', error);
    this.sink.handlers().onError?.(new Event('error'));
    this.closed(CloseCode.UNAUTHORIZED, 'getToken failed');
  }

  private scheduleRetry(delay: number): void {
    this.clearRetry();
    if (this.offline) {
      this.sink.setStatus('offline'); // `online` reconnects
      return;
    }
    this.sink.setStatus('reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private readonly handleOffline = (): void => {
    if (this.stopped) return;
    this.offline = true;
    this.clearRetry();
    // The socket cannot survive the network going away; waiting for its close could take minutes.
    this.loseLink('offline');
    this.sink.setStatus('offline');
  };

  private readonly handleOnline = (): void => {
    this.offline = false;
    if (this.stopped || this.ws !== null) return;
    this.connect();
  };

  private readonly handleVisibility = (): void => {
    if (this.stopped || document.visibilityState !== 'visible') return;
    if (this.ws !== null) {
      // Background tabs throttle timers: check the deadline by the clock.
      const { heartbeatInterval } = this.settings;
      const silent = Date.now() - this.lastMessageAt;
      if (heartbeatInterval > 0 && silent > staleAfterMs(heartbeatInterval)) {
        this.loseLink('silent while hidden');
      }
      return;
    }
    // Waiting to retry: a reader is looking, try now, unless the server asked us to back off.
    const serverAskedToWait =
      this.lastCode === CloseCode.TRY_AGAIN_LATER || this.lastCode === CloseCode.RATE_LIMITED;
    if (this.retryTimer !== null && !serverAskedToWait) this.connect();
  };

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private clearTimers(): void {
    this.clearRetry();
    if (this.staleTimer !== null) clearTimeout(this.staleTimer);
    this.staleTimer = null;
  }
}

/** The default sessionStorage key: one position per subscribe URL and filters. */
export function lastEventIdKey(url: string, types?: readonly string[], postId?: string): string {
  return `wsbroadcast:last-event-id:${subscribeUrl(url, { types, postId })}`;
}

export function useWebSocket(options: UseWebSocketOptions): UseWebSocketResult {
  const {
    url,
    types,
    postId,
    since = null,
    reconnectAttempts = Number.POSITIVE_INFINITY,
    reconnectInterval = DEFAULT_BASE_DELAY_MS,
    maxReconnectInterval = DEFAULT_MAX_DELAY_MS,
    heartbeatInterval = DEFAULT_HEARTBEAT_INTERVAL_MS,
  } = options;
  const storageKey =
    options.storageKey === undefined ? lastEventIdKey(url, types, postId) : options.storageKey;

  const [status, setStatus] = useState<ConnectionStatus>('connecting');
  const [lastEventId, setLastEventId] = useState<string | null>(null);

  // Callbacks live in a ref: a parent passing new inline functions each render does not
  // reconnect; the socket always calls the latest ones.
  const handlersRef = useRef(options);
  useLayoutEffect(() => {
    handlersRef.current = options;
  });

  const subscriptionRef = useRef<Subscription | null>(null);
  const typesKey = types ? types.join(',') : '';
  const key = JSON.stringify([
    url,
    typesKey,
    postId ?? '',
    storageKey,
    reconnectAttempts,
    reconnectInterval,
    maxReconnectInterval,
    heartbeatInterval,
  ]);

  // Set by disconnect(): this hook never connects again, whatever its options become.
  const disconnectedRef = useRef(false);

  useEffect(() => {
    if (disconnectedRef.current) return undefined;
    const previous = subscriptionRef.current;
    if (previous !== null && previous.key === key && previous.revive()) {
      return () => previous.disposeSoon();
    }
    previous?.dispose();
    const subscription = new Subscription(
      key,
      {
        url,
        types: typesKey ? typesKey.split(',') : undefined,
        postId,
        since,
        storageKey,
        reconnectAttempts,
        reconnectInterval,
        maxReconnectInterval,
        heartbeatInterval,
      },
      { handlers: () => handlersRef.current, setStatus, setLastEventId },
    );
    subscriptionRef.current = subscription;
    subscription.start();
    return () => subscription.disposeSoon();
    // `since` only seeds the first connection; the key holds every other setting.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  const disconnect = useCallback(() => {
    disconnectedRef.current = true;
    subscriptionRef.current?.disconnect();
  }, []);

  return { status, lastEventId, disconnect };
}

export default useWebSocket;
