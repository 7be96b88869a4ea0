'use client';

/**
 * One wsbroadcast connection for the page (shared with the browser's other tabs where it
 * can be): the provider owns the only useWebSocket, and the toasts, the feed and the status
 * badge all read from it.
 */

import { useRouter } from 'next/navigation';
import {
  createContext,
  type ReactNode,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
} from 'react';

import { type ConnectionStatus, type Transport, useWebSocket } from '@/hooks/useWebSocket';
import type { ReadersInfo, ResyncInfo, WsEvent } from '@/lib/protocol';

/** What a listener hears: each event, and each resync (the page refetched; a gap was possible). */
export type RealtimeSignal = { kind: 'event'; event: WsEvent } | { kind: 'resync'; resync: ResyncInfo };
export type RealtimeListener = (signal: RealtimeSignal) => void;

export interface RealtimeContextValue {
  status: ConnectionStatus;
  transport: Transport;
  subscribe: (listener: RealtimeListener) => () => void;
  disconnect: () => void;
  reconnect: () => void;
}

const RealtimeContext = createContext<RealtimeContextValue | null>(null);
/** Apart from the rest, so that only the components that show the position re-render per event. */
const LastEventIdContext = createContext<string | null>(null);
/** The post's live reader count (`readers`), apart too: only the count re-renders when it moves. */
const ReadersContext = createContext<ReadersInfo | null>(null);

/** A resync refreshes the page after a random delay up to this: a new epoch must not refresh every reader at once. */
export const REFRESH_SPREAD_MS = 3_000;

export interface RealtimeProviderProps {
  url: string;
  /** The `/events/head` the page was rendered at. */
  since?: string | null;
  /** Only events of this post (and notices); see `useWebSocket`. */
  postId?: string;
  types?: readonly string[];
  /** Begin with the post's last N events (`rewind=N`), for a page with no server-rendered history. */
  rewind?: number;
  /** Receive the post's reader count (`readers=1`, with `postId`); read it with `useRealtimeReaders()`. */
  readers?: boolean;
  /** The heartbeat interval assumed until the server states its own (ms). */
  heartbeatInterval?: number;
  children: ReactNode;
}

export function RealtimeProvider({
  url,
  since,
  postId,
  types,
  rewind,
  readers,
  heartbeatInterval,
  children,
}: RealtimeProviderProps) {
  const router = useRouter();
  const listeners = useRef(new Set<RealtimeListener>());
  const refreshTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const [readerCount, setReaderCount] = useState<ReadersInfo | null>(null);

  const broadcast = (signal: RealtimeSignal): void => {
    for (const listener of listeners.current) {
      try {
        listener(signal);
      } catch (error) {
        // One failing component must not keep the event from the others.
        console.error('[RealtimeProvider] a listener failed', error);
      }
    }
  };

  const connection = useWebSocket({
    url,
    since,
    postId,
    types,
    rewind,
    readers,
    heartbeatInterval,
    onMessage: (event) => broadcast({ kind: 'event', event }),
    onReaders: (info) => setReaderCount(info),
    onResync: (resync) => {
      broadcast({ kind: 'resync', resync });
      // Events were missed: render the server components again from fresh data, soon, but
      // not at the same instant as every other reader.
      if (refreshTimer.current !== null) return;
      refreshTimer.current = setTimeout(() => {
        refreshTimer.current = null;
        router.refresh();
      }, Math.random() * REFRESH_SPREAD_MS);
    },
  });
  const { status, transport, disconnect, reconnect } = connection;

  useEffect(
    () => () => {
      if (refreshTimer.current !== null) clearTimeout(refreshTimer.current);
      refreshTimer.current = null;
    },
    [],
  );

  const subscribe = useCallback((listener: RealtimeListener) => {
    listeners.current.add(listener);
    return () => {
      listeners.current.delete(listener);
    };
  }, []);

  const value = useMemo(
    () => ({ status, transport, subscribe, disconnect, reconnect }),
    [status, transport, subscribe, disconnect, reconnect],
  );
  return (
    <RealtimeContext.Provider value={value}>
      <LastEventIdContext.Provider value={connection.lastEventId}>
        <ReadersContext.Provider value={readerCount}>{children}</ReadersContext.Provider>
      </LastEventIdContext.Provider>
    </RealtimeContext.Provider>
  );
}

/** The page's connection; throws without a `<RealtimeProvider>` above. */
export function useRealtime(): RealtimeContextValue {
  const value = useContext(RealtimeContext);
  if (value === null) throw new Error('useRealtime() needs a <RealtimeProvider> above it');
  return value;
}

/** The page's connection, or null when there is no provider above. */
export function useOptionalRealtime(): RealtimeContextValue | null {
  return useContext(RealtimeContext);
}

/** The position the page would resume from; the component re-renders as it moves. */
export function useRealtimeLastEventId(): string | null {
  return useContext(LastEventIdContext);
}

/** The post's live reader count, once the service has sent one (`readers` on the provider); else null. */
export function useRealtimeReaders(): ReadersInfo | null {
  return useContext(ReadersContext);
}

/** Call `listener` for every event and resync of the page's connection. */
export function useRealtimeEvents(listener: RealtimeListener): void {
  const { subscribe } = useRealtime();
  const latest = useRef(listener);
  useEffect(() => {
    latest.current = listener;
  });
  useEffect(() => subscribe((signal) => latest.current(signal)), [subscribe]);
}
