/**
 * One wsbroadcast subscription, free of React: connects over WebSocket (or `/sse` when the
 * WebSocket cannot open while HTTP works), resumes from the last position, reconnects by the
 * contract's close-code table with jittered backoff, and notices a dead link by its silence.
 */

import { backoffDelay, restartDelay, staleAfterMs } from '@/lib/backoff';
import {
  CloseCode,
  closeCodePolicy,
  type HeartbeatInfo,
  parseMessage,
  type ReadersInfo,
  type ResyncInfo,
  subprotocols,
  subscribeUrl,
  type WsEvent,
} from '@/lib/protocol';

/**
 * `unauthorized`: stopped after a 4401 with no `getToken`, or a `getToken` that kept failing;
 * `idle`: `enabled: false`. Both wait for `reconnect()` (or `enabled`).
 */
export type ConnectionStatus =
  | 'idle'
  | 'connecting'
  | 'open'
  | 'reconnecting'
  | 'offline'
  | 'unauthorized'
  | 'closed';

export type Transport = 'websocket' | 'sse';

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** False when the hook has stopped (4400, 4403, 4401 it cannot answer, attempts used up, `disconnect()`). */
  willReconnect: boolean;
}

export type Token = string | null | undefined;
/** Called before every connection; `refresh` is true after a 4401 (a new token is needed). */
export type TokenProvider = (context: { refresh: boolean }) => Token | Promise<Token>;

/** The callbacks a subscription calls; read afresh each time, so they may change freely. */
export interface ConnectionHandlers {
  onMessage?: (event: WsEvent) => void;
  onConnect?: () => void;
  onDisconnect?: (info: DisconnectInfo) => void;
  onError?: (error: Event) => void;
  onResync?: (info: ResyncInfo) => void;
  onReaders?: (info: ReadersInfo) => void;
  getToken?: TokenProvider;
}

export interface ConnectionSettings {
  /** Absolute `ws:`/`wss:` URL (see `resolveSubscribeUrl`). */
  url: string;
  /** The `/sse` URL to fall back to; null: no fallback. */
  sseUrl: string | null;
  types?: readonly string[];
  postId?: string;
  /** With no position yet, begin with the last N matching events (`rewind=N`). */
  rewind?: number;
  /** Ask for the post's reader counts (`readers=1`, with `postId`). */
  readers?: boolean;
  /** Where to start: the stored or server-rendered position; null: live only (or `rewind`). */
  since: string | null;
  reconnectAttempts: number;
  reconnectInterval: number;
  maxReconnectInterval: number;
  /** The heartbeat interval assumed until a heartbeat states the server's (ms); 0: no dead-link detection. */
  heartbeatInterval: number;
  connectTimeout: number;
  /** WebSocket attempts in a row that fail before opening, before trying `/sse`. */
  fallbackAfter: number;
  /** While on `/sse`, try the WebSocket again after this long (ms). */
  retryWebSocketAfter: number;
}

/** Where a subscription reports to: its owner (the hook, or a tab group's leader). */
export interface ConnectionSink {
  handlers: () => ConnectionHandlers;
  status: (status: ConnectionStatus) => void;
  transport: (transport: Transport) => void;
  /** The resume position moved (an event, a resync's head, a heartbeat's `last_id`). */
  position: (id: string) => void;
}

/** A connection open this long has proven itself: the backoff starts again from its base. */
export const STABLE_AFTER_MS = 5_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 25_000;
export const DEFAULT_FALLBACK_AFTER = 3;
export const DEFAULT_RETRY_WEBSOCKET_AFTER_MS = 5 * 60_000;
/** `getToken` failures, or 4401s, in a row before stopping as `unauthorized`. */
const AUTH_FAILURES_BEFORE_STOP = 3;
/** Our own close code when we drop a socket we gave up on (a dead link, a handshake timeout). */
const CLIENT_DROP = 4000;

type Timer = ReturnType<typeof setTimeout>;
type Phase = 'idle' | 'token' | 'handshake' | 'open' | 'waiting' | 'stopped';

function isThenable<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** The `/sse` URL with the same resume point and filters; the token rides in the query (EventSource sends no header). */
function sseTarget(url: string, since: string | null, settings: ConnectionSettings, token: string | null): string {
  const { types, postId, rewind, readers } = settings;
  const target = new URL(subscribeUrl(url, { since, types, postId, rewind, readers }));
  if (token) target.searchParams.set('token', token);
  return target.toString();
}

export class Connection {
  private ws: WebSocket | null = null;
  private es: EventSource | null = null;
  private phase: Phase = 'idle';
  private transportKind: Transport = 'websocket';
  private attempt = 0;
  private openFailures = 0;
  private authFailures = 0;
  private connects = 0;
  private retryTimer: Timer | null = null;
  private handshakeTimer: Timer | null = null;
  private staleTimer: Timer | null = null;
  private stableTimer: Timer | null = null;
  private probeTimer: Timer | null = null;
  private lastMessageAt = 0;
  /** When the server asked us to wait (1013, 4429): no `online` or tab switch retries before. */
  private waitUntil = 0;
  private needFreshToken = false;
  private serverIntervalMs: number | null = null;
  private position: string | null;
  private listening = false;

  constructor(
    private readonly settings: ConnectionSettings,
    private readonly sink: ConnectionSink,
  ) {
    this.position = settings.since;
  }

  get transport(): Transport {
    return this.transportKind;
  }

  /** Start connecting; `navigator.onLine` is only a hint, never a reason not to try. */
  start(): void {
    this.listen(true);
    this.connect();
  }

  /** Stop for good: close the socket, cancel every timer; `reconnect()` may start again. */
  disconnect(): void {
    if (this.phase === 'stopped') return;
    const wasConnected = this.ws !== null || this.es !== null;
    this.shutdown();
    this.sink.status('closed');
    if (wasConnected) {
      this.sink.handlers().onDisconnect?.({ code: CloseCode.NORMAL, reason: 'disconnect()', willReconnect: false });
    }
  }

  /** Tear down without a word to the handlers: the owner is going away. */
  dispose(): void {
    if (this.phase !== 'stopped') this.shutdown();
  }

  /** Try again now, from the last position, with a fresh backoff (after `unauthorized`, say). */
  reconnect(): void {
    this.shutdown();
    this.attempt = 0;
    this.openFailures = 0;
    this.authFailures = 0;
    this.waitUntil = 0;
    this.phase = 'idle';
    this.start();
  }

  private listen(on: boolean): void {
    if (on === this.listening) return;
    this.listening = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    window[method]('online', this.handleOnline);
    window[method]('offline', this.handleOffline);
    document[method]('visibilitychange', this.handleVisibility);
  }

  private shutdown(): void {
    this.phase = 'stopped';
    this.clearTimers();
    this.dropSocket(CloseCode.NORMAL, 'client closed');
    this.listen(false);
  }

  private setTransport(kind: Transport): void {
    if (kind === this.transportKind) return;
    this.transportKind = kind;
    this.sink.transport(kind);
  }

  private connect(): void {
    if (this.phase === 'stopped') return;
    this.clearRetry();
    this.sink.status(this.connects === 0 ? 'connecting' : 'reconnecting');
    const connectNumber = ++this.connects;
    this.phase = 'token';
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
        if (this.phase !== 'token' || connectNumber !== this.connects) return;
        this.open(value ?? null);
      },
      (error: unknown) => {
        if (this.phase !== 'token' || connectNumber !== this.connects) return;
        this.tokenFailed(error);
      },
    );
  }

  private open(token: string | null): void {
    this.needFreshToken = false;
    this.phase = 'handshake';
    try {
      if (this.transportKind === 'sse' && this.settings.sseUrl !== null) this.openSse(this.settings.sseUrl, token);
      else this.openWebSocket(token);
    } catch (error) {
      // A SecurityError (ws: from an https: page, a blocked port): retrying it unchanged cannot help.
      console.error('[useWebSocket] cannot open', this.settings.url, error);
      this.sink.handlers().onError?.(new Event('error'));
      this.stop('closed', { code: CloseCode.ABNORMAL, reason: String(error) });
      return;
    }
    // A proxy holding the Upgrade, a captive portal: a handshake that never ends is a failure.
    this.handshakeTimer = setTimeout(() => {
      this.handshakeTimer = null;
      if (this.phase !== 'handshake') return;
      console.warn('[useWebSocket] the connection did not open in time: retrying');
      this.dropSocket(CLIENT_DROP, 'connect timeout');
      this.closed(CloseCode.ABNORMAL, 'connect timeout', false);
    }, this.settings.connectTimeout);
  }

  private openWebSocket(token: string | null): void {
    const { url, types, postId, rewind, readers } = this.settings;
    const target = subscribeUrl(url, { since: this.position, types, postId, rewind, readers });
    const ws = token ? new WebSocket(target, subprotocols(token)) : new WebSocket(target);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws === ws) this.opened();
    };
    ws.onmessage = (message: MessageEvent) => {
      if (this.ws === ws) this.receive(message.data);
    };
    ws.onerror = (event: Event) => {
      if (this.ws === ws) this.sink.handlers().onError?.(event);
    };
    ws.onclose = (event: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(event.code, event.reason, this.phase === 'open');
    };
  }

  private openSse(sseUrl: string, token: string | null): void {
    // Cookies go along to another origin too (the service answers with credentials allowed).
    const es = new EventSource(sseTarget(sseUrl, this.position, this.settings, token), { withCredentials: true });
    this.es = es;
    es.onopen = () => {
      if (this.es !== es) return;
      this.opened();
      // Networks change: try the WebSocket again after a while, resuming from the position.
      this.probeTimer = setTimeout(() => {
        this.probeTimer = null;
        if (this.es !== es) return;
        this.dropSocket(CloseCode.NORMAL, 'retrying WebSocket');
        this.setTransport('websocket');
        this.openFailures = this.settings.fallbackAfter - 1; // one failure and back to /sse
        this.connect();
      }, this.settings.retryWebSocketAfter);
    };
    es.onmessage = (message: MessageEvent) => {
      if (this.es === es) this.receive(message.data);
    };
    es.onerror = (event: Event) => {
      if (this.es !== es) return;
      // EventSource would retry on its own, from its own idea of the position; we retry
      // through the same backoff as the WebSocket instead, from ours.
      this.sink.handlers().onError?.(event);
      const wasOpen = this.phase === 'open';
      this.dropSocket(CloseCode.NORMAL, 'sse error');
      this.closed(CloseCode.ABNORMAL, 'sse error', wasOpen);
    };
  }

  private opened(): void {
    this.clearHandshake();
    this.phase = 'open';
    this.openFailures = 0;
    this.touch();
    // Only a connection that stays up proves the link: a heartbeat then a 1013 must still back off.
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      this.attempt = 0;
      this.authFailures = 0;
    }, STABLE_AFTER_MS);
    this.sink.status('open');
    this.sink.handlers().onConnect?.();
  }

  private receive(raw: unknown): void {
    this.touch();
    const parsed = parseMessage(raw);
    if (!parsed.ok) {
      console.warn(`[useWebSocket] dropped a bad frame: ${parsed.error}`);
      return;
    }
    const { message } = parsed;
    switch (message.kind) {
      case 'heartbeat':
        this.heartbeat(message.heartbeat);
        return;
      case 'resync':
        this.advance(message.resync.head);
        this.sink.handlers().onResync?.(message.resync);
        return;
      case 'readers':
        this.sink.handlers().onReaders?.(message.readers);
        return;
      case 'event':
        this.advance(message.event.id);
        this.sink.handlers().onMessage?.(message.event);
        return;
    }
  }

  private heartbeat({ lastId, interval }: HeartbeatInfo): void {
    // A filtered stream moves on while nothing matches: resume from there, not from the last match.
    if (lastId !== null && lastId !== this.position) this.advance(lastId);
    if (interval !== null && interval * 1000 !== this.serverIntervalMs) {
      this.serverIntervalMs = interval * 1000;
      this.touch();
    }
  }

  private advance(id: string): void {
    this.position = id;
    this.sink.position(id);
  }

  /** The dead-link deadline: from the server's heartbeat interval once it said, else the assumed one. */
  private deadlineMs(): number | null {
    if (this.settings.heartbeatInterval <= 0) return null;
    // EventSource never shows the heartbeat comments: over /sse only the socket's close tells.
    if (this.transportKind === 'sse') return null;
    return staleAfterMs(this.serverIntervalMs ?? this.settings.heartbeatInterval);
  }

  /** A message arrived (or the socket opened): push the dead-link deadline back. */
  private touch(): void {
    this.lastMessageAt = Date.now();
    if (this.staleTimer !== null) clearTimeout(this.staleTimer);
    this.staleTimer = null;
    const deadline = this.deadlineMs();
    if (deadline === null) return;
    this.staleTimer = setTimeout(() => {
      this.staleTimer = null;
      console.warn('[useWebSocket] no message or heartbeat in time: reconnecting');
      this.loseLink('no heartbeat');
    }, deadline);
  }

  /** Give up on the current socket now: a dead link may take minutes to report its close. */
  private loseLink(reason: string): void {
    if (this.ws === null && this.es === null) return;
    this.dropSocket(CLIENT_DROP, reason);
    this.closed(CloseCode.ABNORMAL, reason, true);
  }

  private dropSocket(code: number, reason: string): void {
    const { ws, es } = this;
    this.ws = null;
    this.es = null;
    if (es !== null) {
      es.onopen = null;
      es.onmessage = null;
      es.onerror = null;
      es.close();
    }
    if (ws === null) return;
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

  private closed(code: number, reason: string, wasOpen: boolean): void {
    this.clearTimers();
    if (this.phase === 'stopped') return;
    this.phase = 'waiting';
    const onDisconnect = this.sink.handlers().onDisconnect;
    const policy = closeCodePolicy(code);
    if (policy === 'stop' || this.attempt >= this.settings.reconnectAttempts) {
      this.stop('closed', { code, reason });
      return;
    }
    if (policy === 'refresh-token') {
      this.authFailures += 1;
      // Cookie auth with an expired cookie, or a token that keeps being refused: the page must act.
      if (!this.sink.handlers().getToken || this.authFailures >= AUTH_FAILURES_BEFORE_STOP) {
        this.stop('unauthorized', { code, reason });
        return;
      }
      this.needFreshToken = true;
    }
    if (!wasOpen) this.noteOpenFailure();
    const { reconnectInterval: base, maxReconnectInterval: max } = this.settings;
    const delay = policy === 'random-delay' ? restartDelay(this.attempt, base, max) : backoffDelay(this.attempt, base, max);
    const serverAskedToWait = code === CloseCode.TRY_AGAIN_LATER || code === CloseCode.RATE_LIMITED;
    this.waitUntil = serverAskedToWait ? Date.now() + delay : 0;
    this.attempt += 1;
    onDisconnect?.({ code, reason, willReconnect: true });
    this.scheduleRetry(delay);
  }

  /** The WebSocket failed before opening: after a few in a row, try `/sse` (a proxy refusing the Upgrade). */
  private noteOpenFailure(): void {
    this.openFailures += 1;
    if (this.transportKind === 'sse') {
      // HTTP does not work either: go back to the WebSocket, which is what is wanted.
      this.setTransport('websocket');
      this.openFailures = 0;
    } else if (this.settings.sseUrl !== null && this.openFailures >= this.settings.fallbackAfter) {
      console.warn('[useWebSocket] the WebSocket does not open: reading /sse instead');
      this.setTransport('sse');
      this.openFailures = 0;
    }
  }

  private stop(status: ConnectionStatus, { code, reason }: { code: number; reason: string }): void {
    this.shutdown();
    this.sink.status(status);
    this.sink.handlers().onDisconnect?.({ code, reason, willReconnect: false });
  }

  private tokenFailed(error: unknown): void {
    console.error('[useWebSocket] getToken failed', error);
    this.sink.handlers().onError?.(new Event('error'));
    this.closed(CloseCode.UNAUTHORIZED, 'getToken failed', true);
  }

  private scheduleRetry(delay: number): void {
    this.clearRetry();
    this.sink.status(navigator.onLine === false ? 'offline' : 'reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  /** Retry now if waiting, unless the server asked for the wait; a handshake in progress is left alone. */
  private retryNow(): void {
    if (this.phase !== 'waiting' || this.retryTimer === null) return;
    if (Date.now() < this.waitUntil) return;
    this.connect();
  }

  private readonly handleOffline = (): void => {
    // A hint only: a socket to localhost lives on with the Wi-Fi off, and a dead one is found
    // by the heartbeat deadline. The status tells the reader why nothing moves.
    if (this.phase === 'waiting') this.sink.status('offline');
  };

  private readonly handleOnline = (): void => {
    if (this.phase !== 'waiting') return;
    this.sink.status('reconnecting');
    this.retryNow();
  };

  private readonly handleVisibility = (): void => {
    if (document.visibilityState !== 'visible') return;
    if (this.phase === 'open') {
      // Background tabs throttle timers: check the deadline by the clock.
      const deadline = this.deadlineMs();
      if (deadline !== null && Date.now() - this.lastMessageAt > deadline) this.loseLink('silent while hidden');
      return;
    }
    // Waiting to retry: a reader is looking, try now.
    this.retryNow();
  };

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private clearHandshake(): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  private clearTimers(): void {
    this.clearRetry();
    this.clearHandshake();
    for (const timer of [this.staleTimer, this.stableTimer, this.probeTimer]) {
      if (timer !== null) clearTimeout(timer);
    }
    this.staleTimer = null;
    this.stableTimer = null;
    this.probeTimer = null;
  }
}
