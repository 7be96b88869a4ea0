/** The service's live reader counts, `GET /readers` (see "Live readers" in docs/api.md). */

import { httpBaseFromWs, resolveSubscribeUrl } from '@/lib/protocol';

export interface PostReaders {
  post_id: string;
  readers: number;
}

export interface TopReaders {
  /** Subscribers of every instance. */
  total: number;
  /** The most-read posts, most readers first. */
  posts: PostReaders[];
}

/** `GET /readers?top=N`, beside the subscribe URL (absolute, or relative to `page`). */
export function topReadersUrl(wsUrl: string, top: number, page?: string): string {
  return `${httpBaseFromWs(resolveSubscribeUrl(wsUrl, page))}/readers?top=${top}`;
}

function isPostReaders(value: unknown): value is PostReaders {
  const item = value as { post_id?: unknown; readers?: unknown } | null;
  return typeof item?.post_id === 'string' && typeof item.readers === 'number';
}

/** Fetch and check the answer; throws on an HTTP error or an answer of another shape. */
export async function fetchTopReaders(url: string, init: RequestInit = {}): Promise<TopReaders> {
  // Cookies go along, as for /sse: a service with subscriber auth accepts the wsb_token cookie.
  const response = await fetch(url, { cache: 'no-store', credentials: 'include', ...init });
  if (!response.ok) throw new Error(`GET /readers: HTTP ${response.status}`);
  const body = (await response.json()) as { total?: unknown; posts?: unknown } | null;
  if (typeof body?.total !== 'number' || !Array.isArray(body.posts) || !body.posts.every(isPostReaders)) {
    throw new Error('GET /readers: not a {total, posts} answer');
  }
  return { total: body.total, posts: body.posts };
}
