'use client';

/**
 * "Reading now": the most-read posts from `GET /readers`, polled (every 10 s by default, with
 * a growing backoff while the service does not answer, none while the tab is hidden), each a
 * link to its post page. The list is not a live region: it changes on its own every few
 * seconds, and a reader who wants it reads it.
 */

import Link from 'next/link';
import { useEffect, useState } from 'react';

import { Poller } from '@/lib/poller';
import { fetchTopReaders, type TopReaders, topReadersUrl } from '@/lib/readers';

export const POLL_INTERVAL_MS = 10_000;
export const MAX_POLL_INTERVAL_MS = 120_000;
const POLL_TIMEOUT_MS = 5_000;

export interface TopPostsProps {
  /** The subscribe URL (`NEXT_PUBLIC_WS_URL`); `/readers` is beside it. */
  url: string;
  /** How many posts (1 to 100). */
  top?: number;
  /** What the server rendered, if it could reach the service. */
  initial?: TopReaders | null;
  intervalMs?: number;
  maxIntervalMs?: number;
}

export default function TopPosts({
  url,
  top = 5,
  initial = null,
  intervalMs = POLL_INTERVAL_MS,
  maxIntervalMs = MAX_POLL_INTERVAL_MS,
}: TopPostsProps) {
  const [data, setData] = useState<TopReaders | null>(initial);
  /** Failed polls in a row (0: the list is fresh). */
  const [failures, setFailures] = useState(0);
  const failing = failures > 0;
  const hasInitial = initial !== null;

  useEffect(() => {
    const target = topReadersUrl(url, top, window.location.href);
    const poller = new Poller<TopReaders>({
      load: (signal) => fetchTopReaders(target, { signal }),
      onData: (value) => {
        setData(value);
        setFailures(0);
      },
      onError: (error, count) => {
        if (count === 1) console.warn('[TopPosts] GET /readers failed; backing off', error);
        setFailures(count);
      },
      intervalMs,
      maxIntervalMs,
      timeoutMs: POLL_TIMEOUT_MS,
    });
    poller.start(hasInitial);
    return () => poller.stop();
  }, [url, top, intervalMs, maxIntervalMs, hasInitial]);

  return (
    <section
      className="card sidebar"
      aria-labelledby="top-posts-heading"
      data-state={failing ? 'stale' : 'fresh'}
      data-failures={failures}
    >
      <h2 id="top-posts-heading" className="card__title">
        Reading now
      </h2>
      {data === null ? (
        <p className="feed__empty">{failing ? 'Reader counts are unavailable right now.' : 'Counting readers…'}</p>
      ) : data.posts.length === 0 ? (
        <p className="feed__empty">No one is reading a post right now.</p>
      ) : (
        <ol className="top-posts" aria-label="Most read posts right now">
          {data.posts.map((post) => (
            <li key={post.post_id} className="top-posts__item" data-post-id={post.post_id} data-readers={post.readers}>
              <Link href={`/posts/${encodeURIComponent(post.post_id)}`}>Post {post.post_id}</Link>
              <span className="top-posts__count">{post.readers === 1 ? '1 reader' : `${post.readers} readers`}</span>
            </li>
          ))}
        </ol>
      )}
      {failing && data !== null ? <p className="top-posts__note">Counts may be out of date.</p> : null}
    </section>
  );
}
