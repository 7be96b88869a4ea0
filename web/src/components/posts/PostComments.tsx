'use client';

/**
 * The post's comments as they come: the ones in the rewound history first, then each new,
 * edited or removed comment the moment it is published. The demo has no comment store of
 * its own; a blog renders its comments on the server and lets this list keep them current.
 */

import { useState } from 'react';

import { useRealtimeEvents } from '@/components/realtime/RealtimeProvider';
import { isCommentUpdate } from '@/lib/protocol';

interface Comment {
  id: string;
  author?: string;
  body?: string;
  edited: boolean;
  /** ISO 8601, of the event that added it. */
  at: string;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
}

export default function PostComments({ postId }: { postId: string }) {
  const [comments, setComments] = useState<Comment[]>([]);

  useRealtimeEvents((signal) => {
    if (signal.kind !== 'event') return;
    const { event } = signal;
    if (!isCommentUpdate(event) || event.data.post_id !== postId) return;
    const { comment_id: id, action } = event.data;
    const author = text(event.data.author);
    const body = text(event.data.body) ?? text(event.data.excerpt) ?? text(event.data.text);
    setComments((current) => {
      const index = current.findIndex((comment) => comment.id === id);
      if (action === 'deleted') return index < 0 ? current : current.filter((comment) => comment.id !== id);
      if (action === 'created' && index >= 0) return current; // rewound again after a reconnect
      if (index < 0) {
        // An edit of a comment from before the rewound history is shown as it stands now.
        return [...current, { id, author, body, edited: action === 'updated', at: event.timestamp }];
      }
      const next = [...current];
      const before = next[index]!;
      next[index] = { ...before, author: author ?? before.author, body: body ?? before.body, edited: true };
      return next;
    });
  });

  if (comments.length === 0) {
    return <p className="comments__empty">No comments yet. New ones appear here as they are posted.</p>;
  }
  return (
    <ol className="comments" aria-label="Comments">
      {comments.map((comment) => (
        <li key={comment.id} className="comments__item" data-comment-id={comment.id}>
          <p className="comments__author">
            {comment.author ?? 'A reader'}
            {comment.edited ? <span className="comments__edited"> (edited)</span> : null}
          </p>
          <p className="comments__body">{comment.body ?? `Comment ${comment.id}`}</p>
        </li>
      ))}
    </ol>
  );
}
