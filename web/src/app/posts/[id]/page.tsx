import type { Metadata } from 'next';
import Link from 'next/link';
import { connection } from 'next/server';

import PostActivity, { ACTIVITY_SIZE } from '@/components/posts/PostActivity';
import PostComments from '@/components/posts/PostComments';
import PostTitle from '@/components/posts/PostTitle';
import ReadersCount from '@/components/posts/ReadersCount';
import ConnectionBadge from '@/components/realtime/ConnectionBadge';
import { RealtimeProvider } from '@/components/realtime/RealtimeProvider';
import { realtimeConfig } from '@/lib/config';

interface PostPageProps {
  params: Promise<{ id: string }>;
}

export async function generateMetadata({ params }: PostPageProps): Promise<Metadata> {
  const { id } = await params;
  return { title: `Post ${id} — The Margin` };
}

/**
 * One post, live: its reader count, its comments and its recent activity, all from one
 * subscription of this tab's own (`post_id`, `readers=1`, `rewind`). Not shared with the
 * other tabs, so that each tab on the post counts as a reader; the site-wide toasts keep
 * the layout's shared connection.
 */
export default async function PostPage({ params }: PostPageProps) {
  await connection();
  const { id } = await params;
  const { wsUrl } = realtimeConfig();
  return (
    <RealtimeProvider url={wsUrl} postId={id} readers rewind={ACTIVITY_SIZE}>
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
          <p className="intro__kicker">
            <Link href="/">All activity</Link>
          </p>
          <PostTitle postId={id} />
          <ReadersCount />
        </section>
        <div className="columns">
          <section className="card" aria-labelledby="comments-heading">
            <h2 id="comments-heading" className="card__title">
              Comments
            </h2>
            <PostComments postId={id} />
          </section>
          <section className="card" aria-labelledby="post-activity-heading">
            <h2 id="post-activity-heading" className="card__title">
              Recent activity
            </h2>
            <PostActivity />
          </section>
        </div>
      </main>
      <footer className="footer">Updates delivered by wsbroadcast.</footer>
    </RealtimeProvider>
  );
}
