/**
 * One socket for all the tabs of a browser: the tabs of an origin that subscribe to the same
 * URL and filters elect a leader with the Web Locks API; the leader holds the connection and
 * passes every event, status and position to the others over a BroadcastChannel. When the
 * leader tab goes, the browser releases its lock and the next tab in line takes over,
 * resuming from the last id it saw; each tab drops an id it already showed.
 */

import {
  Connection,
  type ConnectionHandlers,
  type ConnectionSettings,
  type ConnectionSink,
  type ConnectionStatus,
  type DisconnectInfo,
  type Transport,
} from '@/lib/connection';
import type { ReadersInfo, ResyncInfo, WsEvent } from '@/lib/protocol';

/** What the hook drives: a connection of this tab's own, or a share of the leader's. */
export interface Source {
  start(): void;
  /** Stop for good and tell the handlers; `reconnect()` may start again. */
  disconnect(): void;
  /** Tear down quietly: the owner is going away. */
  dispose(): void;
  /** Try again now with a fresh backoff (after `unauthorized`, say). */
  reconnect(): void;
}

type TabMessage =
  | { t: 'hello'; from: string; position: string | null }
  | { t: 'state'; to?: string; status: ConnectionStatus; transport: Transport }
  | { t: 'event'; event: WsEvent }
  | { t: 'position'; id: string }
  | { t: 'resync'; resync: ResyncInfo }
  | { t: 'readers'; readers: ReadersInfo }
  | { t: 'connect' }
  | { t: 'disconnect'; info: DisconnectInfo }
  | { t: 'replay'; to: string; events: WsEvent[] }
  | { t: 'reconnect' };

/** Events the leader keeps, to catch up a tab that joins a little behind it. */
const REPLAY_SIZE = 200;
/** Ids each tab remembers, so an event seen before a hand-over is not shown again after it. */
const SEEN_SIZE = 1_000;

/** Web Locks and BroadcastChannel are both there (not in jsdom, nor in older browsers). */
export function canShareAcrossTabs(): boolean {
  return (
    typeof navigator !== 'undefined' &&
    typeof navigator.locks?.request === 'function' &&
    typeof BroadcastChannel === 'function'
  );
}

function tabId(): string {
  return typeof crypto !== 'undefined' && typeof crypto.randomUUID === 'function'
    ? crypto.randomUUID()
    : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

export class TabGroup implements Source {
  private readonly id = tabId();
  private channel: BroadcastChannel | null = null;
  private abort: AbortController | null = null;
  private release: (() => void) | null = null;
  private connection: Connection | null = null;
  private position: string | null;
  private status: ConnectionStatus = 'connecting';
  private transport: Transport = 'websocket';
  private readonly seen = new Set<string>();
  private readonly seenOrder: string[] = [];
  private readonly recent: WsEvent[] = [];
  private active = false;
  /** Set while the leader leaves: its last words (a `closed` status) are its own, not the group's. */
  private leaving = false;

  constructor(
    /** Lock and channel name: one group per subscribe URL and filters. */
    private readonly name: string,
    private readonly settings: ConnectionSettings,
    private readonly sink: ConnectionSink,
  ) {
    this.position = settings.since;
  }

  get isLeader(): boolean {
    return this.connection !== null;
  }

  start(): void {
    this.active = true;
    this.leaving = false;
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = (message: MessageEvent<TabMessage>) => this.receive(message.data);
    const abort = new AbortController();
    this.abort = abort;
    navigator.locks
      .request(this.name, { signal: abort.signal }, () => this.lead())
      .catch((error: unknown) => {
        if (!abort.signal.aborted) console.warn('[useWebSocket] cannot take the tab lock', error);
      });
    this.sink.status('connecting');
    // Ask the leader, if there is one, where things stand and for what this tab missed.
    this.post({ t: 'hello', from: this.id, position: this.position });
  }

  disconnect(): void {
    if (!this.active) return;
    const connection = this.connection;
    this.leaving = true;
    this.teardown();
    if (connection !== null) connection.disconnect();
    else this.sink.status('closed');
  }

  dispose(): void {
    if (!this.active) return;
    this.leaving = true;
    const connection = this.connection;
    this.teardown();
    connection?.dispose();
  }

  reconnect(): void {
    if (!this.active) this.start();
    else if (this.connection !== null) this.connection.reconnect();
    else this.post({ t: 'reconnect' });
  }

  /** The lock is ours: hold the connection until this tab goes (the browser then frees the lock). */
  private lead(): Promise<void> {
    if (!this.active) return Promise.resolve();
    this.abort = null;
    return new Promise<void>((resolve) => {
      this.release = resolve;
      this.connection = new Connection({ ...this.settings, since: this.position }, this.leaderSink);
      this.connection.start();
    });
  }

  private teardown(): void {
    this.active = false;
    this.connection = null;
    this.abort?.abort();
    this.abort = null;
    this.release?.();
    this.release = null;
    this.channel?.close();
    this.channel = null;
  }

  private post(message: TabMessage): void {
    if (this.leaving) return;
    this.channel?.postMessage(message);
  }

  private handlers(): ConnectionHandlers {
    return this.sink.handlers();
  }

  /** The leader's connection reports here: to this tab, and to every other tab of the group. */
  private readonly leaderSink: ConnectionSink = {
    handlers: () => {
      const local = this.handlers();
      return {
        getToken: local.getToken,
        onError: local.onError,
        onMessage: (event) => {
          this.post({ t: 'event', event });
          this.recent.push(event);
          if (this.recent.length > REPLAY_SIZE) this.recent.shift();
          this.deliver(event);
        },
        onResync: (resync) => {
          this.post({ t: 'resync', resync });
          this.handlers().onResync?.(resync);
        },
        onReaders: (readers) => {
          this.post({ t: 'readers', readers });
          this.handlers().onReaders?.(readers);
        },
        onConnect: () => {
          this.post({ t: 'connect' });
          this.handlers().onConnect?.();
        },
        onDisconnect: (info) => {
          this.post({ t: 'disconnect', info });
          this.handlers().onDisconnect?.(info);
        },
      };
    },
    status: (status) => {
      this.status = status;
      this.post({ t: 'state', status, transport: this.transport });
      this.sink.status(status);
    },
    transport: (transport) => {
      this.transport = transport;
      this.post({ t: 'state', status: this.status, transport });
      this.sink.transport(transport);
    },
    position: (id) => {
      this.post({ t: 'position', id });
      this.advance(id);
    },
  };

  private advance(id: string): void {
    this.position = id;
    this.sink.position(id);
  }

  /** Hand an event to this tab's handlers, once: a hand-over replays from the last id, and may overlap. */
  private deliver(event: WsEvent): void {
    if (this.seen.has(event.id)) return;
    this.seen.add(event.id);
    this.seenOrder.push(event.id);
    if (this.seenOrder.length > SEEN_SIZE) this.seen.delete(this.seenOrder.shift()!);
    this.advance(event.id);
    this.handlers().onMessage?.(event);
  }

  private receive(message: TabMessage): void {
    if (!this.active) return;
    const leader = this.isLeader;
    switch (message.t) {
      case 'hello':
        if (!leader) return;
        this.post({ t: 'state', to: message.from, status: this.status, transport: this.transport });
        this.replay(message.from, message.position);
        return;
      case 'reconnect':
        if (leader) this.connection?.reconnect();
        return;
      default:
        break;
    }
    if (leader) return; // the rest is what a leader says
    switch (message.t) {
      case 'state':
        if (message.to !== undefined && message.to !== this.id) return;
        this.status = message.status;
        this.transport = message.transport;
        this.sink.status(message.status);
        this.sink.transport(message.transport);
        return;
      case 'event':
        this.deliver(message.event);
        return;
      case 'replay':
        if (message.to === this.id) for (const event of message.events) this.deliver(event);
        return;
      case 'position':
        if (!this.seen.has(message.id)) this.advance(message.id);
        return;
      case 'resync':
        this.advance(message.resync.head);
        this.handlers().onResync?.(message.resync);
        return;
      case 'readers':
        this.handlers().onReaders?.(message.readers);
        return;
      case 'connect':
        this.handlers().onConnect?.();
        return;
      case 'disconnect':
        this.handlers().onDisconnect?.(message.info);
        return;
    }
  }

  /** A tab rendered at `position` joined: send what the leader got after it, if it still has it. */
  private replay(to: string, position: string | null): void {
    if (position === null || position === this.position) return;
    const index = this.recent.findIndex((event) => event.id === position);
    if (index >= 0 && index < this.recent.length - 1) {
      this.post({ t: 'replay', to, events: this.recent.slice(index + 1) });
    }
  }
}
