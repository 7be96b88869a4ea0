'use client';

/** The post's heading: its id until a `blog_update` names it; says so when the post is removed. */

import { useState } from 'react';

import { useRealtimeEvents } from '@/components/realtime/RealtimeProvider';
import { isBlogUpdate } from '@/lib/protocol';

export default function PostTitle({ postId }: { postId: string }) {
  const [title, setTitle] = useState<string | null>(null);
  const [removed, setRemoved] = useState(false);

  useRealtimeEvents((signal) => {
    if (signal.kind !== 'event' || !isBlogUpdate(signal.event) || signal.event.data.post_id !== postId) return;
    const { action, title: named } = signal.event.data;
    if (typeof named === 'string' && named.trim() !== '') setTitle(named);
    setRemoved(action === 'deleted');
  });

  return (
    <>
      <h1 className="intro__title">{title ?? `Post ${postId}`}</h1>
      {removed ? <p className="intro__lede">This post has been removed.</p> : null}
    </>
  );
}
