import Link from 'next/link';
import { connection } from 'next/server';

import TopPosts from '@/components/posts/TopPosts';
import ConnectionBadge from '@/components/realtime/ConnectionBadge';
import LiveFeed from '@/components/realtime/LiveFeed';
import { realtimeConfig } from '@/lib/config';
import { fetchTopReaders, type TopReaders } from '@/lib/readers';

const TOP_POSTS = 5;
const READERS_TIMEOUT_MS = 2_000;

/** The sidebar's first list, read by this server; null (the browser asks) when it cannot. */
async function initialTopPosts(httpUrl: string | null): Promise<TopReaders | null> {
  if (httpUrl === null) return null;
  try {
    return await fetchTopReaders(`${httpUrl}/readers?top=${TOP_POSTS}`, {
      credentials: 'omit',
      signal: AbortSignal.timeout(READERS_TIMEOUT_MS),
    });
  } catch (error) {
    console.warn(`[wsbroadcast] GET ${httpUrl}/readers failed:`, error);
    return null;
  }
}

export default async function HomePage() {
  await connection(); // rendered per request: the counts are of now, never of the build
  const config = realtimeConfig();
  const top = await initialTopPosts(config.httpUrl);
  return (
    <>
      <header className="masthead">
        <div className="masthead__inner">
          <Link className="masthead__brand" href="/">
            The Margin
          </Link>
          <ConnectionBadge />
        </div>
      </header>
      <main className="page page--wide">
        <section className="intro">
          <p className="intro__kicker">Live</p>
          <h1 className="intro__title">What&rsquo;s happening on the blog</h1>
          <p className="intro__lede">
            New posts, edits and comments show up here the moment they are published. Keep the
            tab open; if your connection drops, you will catch up on everything you missed.
          </p>
        </section>
        <div className="columns columns--sidebar">
          <section className="card" aria-labelledby="activity-heading">
            <h2 id="activity-heading" className="card__title">
              Recent activity
            </h2>
            <LiveFeed />
          </section>
          <aside>
            <TopPosts url={config.wsUrl} top={TOP_POSTS} initial={top} />
          </aside>
        </div>
      </main>
      <footer className="footer">Updates delivered by wsbroadcast.</footer>
    </>
  );
}
