'use client';

/** The connection's state in a word, for the page header. */

import { useRealtime } from '@/components/realtime/RealtimeProvider';
import type { ConnectionStatus } from '@/hooks/useWebSocket';

const LABELS: Record<ConnectionStatus, string> = {
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected',
};

export default function ConnectionBadge() {
  const { status } = useRealtime();
  return (
    <span className={`badge badge--${status}`} role="status" data-status={status}>
      <span className="badge__dot" aria-hidden="true" />
      {LABELS[status]}
    </span>
  );
}
