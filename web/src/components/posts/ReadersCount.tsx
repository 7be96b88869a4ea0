'use client';

/**
 * "N reading now" for the post of the provider above (`readers`). The visible count follows
 * every update the service sends (at most one a second); a screen reader hears it through a
 * polite live region paced by `AnnounceThrottle`: at most once every few seconds, and only
 * when the count changed.
 */

import { useEffect, useRef, useState } from 'react';

import { useRealtime, useRealtimeReaders } from '@/components/realtime/RealtimeProvider';
import { ANNOUNCE_INTERVAL_MS, AnnounceThrottle } from '@/lib/announce';

export function readersText(readers: number): string {
  return `${readers} reading now`;
}

export interface ReadersCountProps {
  /** How often the live region may speak (ms). */
  announceInterval?: number;
}

export default function ReadersCount({ announceInterval = ANNOUNCE_INTERVAL_MS }: ReadersCountProps) {
  const info = useRealtimeReaders();
  // Off the line, the last count is all there is: drawn faded, as of when the link was up.
  const stale = useRealtime().status !== 'open' && info !== null;
  const [announced, setAnnounced] = useState('');
  const throttle = useRef<AnnounceThrottle | null>(null);

  useEffect(() => {
    const paced = new AnnounceThrottle(setAnnounced, announceInterval);
    throttle.current = paced;
    return () => {
      paced.dispose();
      if (throttle.current === paced) throttle.current = null;
    };
  }, [announceInterval]);

  const text = info === null ? null : readersText(info.readers);
  useEffect(() => {
    if (text !== null) throttle.current?.update(text);
  }, [text]);

  return (
    <p
      className={stale ? 'readers readers--stale' : 'readers'}
      data-readers={info?.readers}
      data-stale={stale || undefined}
    >
      <span className="readers__dot" aria-hidden="true" />
      {/* Seen at once; heard through the paced region below, so it is hidden from screen readers. */}
      <span className="readers__count" aria-hidden="true">
        {text ?? 'Counting readers…'}
      </span>
      <span className="visually-hidden" role="status" aria-live="polite" aria-atomic="true">
        {announced}
      </span>
    </p>
  );
}
