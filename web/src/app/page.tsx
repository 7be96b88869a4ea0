import Link from 'next/link';

import ConnectionBadge from '@/components/realtime/ConnectionBadge';
import LiveFeed from '@/components/realtime/LiveFeed';

export default function HomePage() {
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
      <main className="page">
        <section className="intro">
          <p className="intro__kicker">Live</p>
          <h1 className="intro__title">What&rsquo;s happening on the blog</h1>
          <p className="intro__lede">
            New posts, edits and comments show up here the moment they are published. Keep the
            tab open; if your connection drops, you will catch up on everything you missed.
          </p>
        </section>
        <section className="card" aria-labelledby="activity-heading">
          <h2 id="activity-heading" className="card__title">
            Recent activity
          </h2>
          <LiveFeed />
        </section>
      </main>
      <footer className="footer">Updates delivered by wsbroadcast.</footer>
    </>
  );
}
