'use client';

/**
 * One wsbroadcast connection per tab: the provider owns the only useWebSocket, and the
 * toasts, the feed and the status badge all read from it.
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
} from 'react';

import { type ConnectionStatus, useWebSocket } from '@/hooks/useWebSocket';
import type { ResyncInfo, WsEvent } from '@/lib/protocol';

/** What a listener hears: each event, and each resync (the page refetched; a gap was possible). */
export type RealtimeSignal = { kind: 'event'; event: WsEvent } | { kind: 'resync'; resync: ResyncInfo };
export type RealtimeListener = (signal: RealtimeSignal) => void;

interface RealtimeContextValue {
  status: ConnectionStatus;
  lastEventId: string | null;
  subscribe: (listener: RealtimeListener) => () => void;
  disconnect: () => void;
}

const RealtimeContext = createContext<RealtimeContextValue | null>(null);

export interface RealtimeProviderProps {
  url: string;
  /** The `/events/head` the page was rendered at. */
  since?: string | null;
  heartbeatInterval?: number;
  children: ReactNode;
}

export function RealtimeProvider({ url, since, heartbeatInterval, children }: RealtimeProviderProps) {
  const router = useRouter();
  const listeners = useRef(new Set<RealtimeListener>());

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

  const { status, lastEventId, disconnect } = useWebSocket({
    url,
    since,
    heartbeatInterval,
    onMessage: (event) => broadcast({ kind: 'event', event }),
    onResync: (resync) => {
      broadcast({ kind: 'resync', resync });
      // Events were missed: render the server components again from fresh data.
      router.refresh();
    },
  });

  const subscribe = useCallback((listener: RealtimeListener) => {
    listeners.current.add(listener);
    return () => {
      listeners.current.delete(listener);
    };
  }, []);

  const value = useMemo(
    () => ({ status, lastEventId, subscribe, disconnect }),
    [status, lastEventId, subscribe, disconnect],
  );
  return <RealtimeContext.Provider value={value}>{children}</RealtimeContext.Provider>;
}

export function useRealtime(): RealtimeContextValue {
  const value = useContext(RealtimeContext);
  if (value === null) throw new Error('useRealtime() needs a <RealtimeProvider> above it');
  return value;
}

/** Call `listener` for every event and resync of the tab's one connection. */
export function useRealtimeEvents(listener: RealtimeListener): void {
  const { subscribe } = useRealtime();
  const latest = useRef(listener);
  useEffect(() => {
    latest.current = listener;
  });
  useEffect(() => subscribe((signal) => latest.current(signal)), [subscribe]);
}
