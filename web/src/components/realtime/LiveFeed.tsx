'use client';

/** The last events of this visit, newest first (at most 50), with a marker where the stream was resynced. */

import { useState } from 'react';

import { useRealtimeEvents } from '@/components/realtime/RealtimeProvider';
import { describeEvent, type Tone } from '@/lib/describeEvent';

const FEED_SIZE = 50;

interface FeedItem {
  key: string;
  kind: 'event' | 'resync';
  eventId?: string;
  type?: string;
  title: string;
  description?: string;
  tone: Tone;
  at: string;
  /** ISO 8601, for `<time dateTime>`. */
  iso: string;
}

function clock(timestamp: string): string {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export default function LiveFeed() {
  const [items, setItems] = useState<FeedItem[]>([]);

  useRealtimeEvents((signal) => {
    const now = new Date().toISOString();
    const item: FeedItem =
      signal.kind === 'event'
        ? {
            key: signal.event.id,
            kind: 'event',
            eventId: signal.event.id,
            type: signal.event.type,
            ...describeEvent(signal.event),
            at: clock(signal.event.timestamp),
            iso: signal.event.timestamp,
          }
        : {
            key: `resync:${signal.resync.head}:${Date.now()}`,
            kind: 'resync',
            title: 'Back in sync',
            description: 'Some updates could not be replayed, so the page was refreshed.',
            tone: 'warning',
            at: clock(now),
            iso: now,
          };
    setItems((current) => [item, ...current].slice(0, FEED_SIZE));
  });

  if (items.length === 0) {
    return (
      <p className="feed__empty">
        Nothing yet. New posts, comments and notices will appear here the moment they happen.
      </p>
    );
  }
  return (
    <ol className="feed" aria-label="Live activity">
      {items.map((item) => (
        <li
          key={item.key}
          className={`feed__item feed__item--${item.tone}`}
          data-kind={item.kind}
          data-event-id={item.eventId}
          data-type={item.type}
        >
          <span className="feed__marker" aria-hidden="true" />
          <div className="feed__body">
            <p className="feed__title">{item.title}</p>
            {item.description ? <p className="feed__description">{item.description}</p> : null}
          </div>
          {item.at ? (
            <time className="feed__time" dateTime={item.iso}>
              {item.at}
            </time>
          ) : null}
        </li>
      ))}
    </ol>
  );
}
