'use client';

/** The connection's state in a word, for the page header. */

import { useRealtime } from '@/components/realtime/RealtimeProvider';
import type { ConnectionStatus } from '@/hooks/useWebSocket';

const LABELS: Record<ConnectionStatus, string> = {
  idle: 'Paused',
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  unauthorized: 'Signed out',
  closed: 'Disconnected',
};

export default function ConnectionBadge() {
  const { status, transport, reconnect } = useRealtime();
  const stopped = status === 'closed' || status === 'unauthorized';
  return (
    <span className="badge__group">
      <span
        className={`badge badge--${status}`}
        role="status"
        data-status={status}
        data-transport={transport}
        title={transport === 'sse' ? 'Live over Server-Sent Events (WebSocket blocked)' : undefined}
      >
        <span className="badge__dot" aria-hidden="true" />
        {LABELS[status]}
      </span>
      {stopped ? (
        <button type="button" className="badge__retry" onClick={reconnect}>
          Try again
        </button>
      ) : null}
    </span>
  );
}
