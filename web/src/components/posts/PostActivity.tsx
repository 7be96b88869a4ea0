'use client';

/**
 * The post's recent activity, newest first: the last events the subscription rewound
 * (`rewind`), then the live ones. Notices with no `post_id` pass the post filter and show
 * here too, as the contract's filter lets them.
 */

import { useState } from 'react';

import { useRealtimeEvents } from '@/components/realtime/RealtimeProvider';
import { describeEvent, type Tone } from '@/lib/describeEvent';

/** As many as the page rewinds: the list keeps its length when live events come. */
export const ACTIVITY_SIZE = 20;

interface Item {
  id: string;
  type: string;
  title: string;
  description?: string;
  tone: Tone;
  iso: string;
}

function clock(timestamp: string): string {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export default function PostActivity({ size = ACTIVITY_SIZE }: { size?: number }) {
  const [items, setItems] = useState<Item[]>([]);

  useRealtimeEvents((signal) => {
    if (signal.kind !== 'event') return;
    const { event } = signal;
    const { title, description, tone } = describeEvent(event);
    const item: Item = { id: event.id, type: event.type, title, description, tone, iso: event.timestamp };
    // A reconnect that had no position yet rewinds again: an id already shown is not shown twice.
    setItems((current) => (current.some((old) => old.id === item.id) ? current : [item, ...current].slice(0, size)));
  });

  if (items.length === 0) {
    return <p className="feed__empty">Nothing has happened on this post lately.</p>;
  }
  return (
    <ol className="feed" aria-label="Recent activity on this post">
      {items.map((item) => (
        <li
          key={item.id}
          className={`feed__item feed__item--${item.tone}`}
          data-kind="event"
          data-event-id={item.id}
          data-type={item.type}
        >
          <span className="feed__marker" aria-hidden="true" />
          <div className="feed__body">
            <p className="feed__title">{item.title}</p>
            {item.description ? <p className="feed__description">{item.description}</p> : null}
          </div>
          <time className="feed__time" dateTime={item.iso}>
            {clock(item.iso)}
          </time>
        </li>
      ))}
    </ol>
  );
}
