import type { Metadata } from 'next';
import { connection } from 'next/server';
import type { ReactNode } from 'react';
import { Toaster } from 'sonner';

import RealtimeNotifications from '@/components/common/RealtimeNotifications';
import { RealtimeProvider } from '@/components/realtime/RealtimeProvider';
import { fetchHead, realtimeConfig } from '@/lib/config';

import './globals.css';

export const metadata: Metadata = {
  title: 'The Margin — a blog, live',
  description: 'Posts, comments and notices as they happen.',
};

export default async function RootLayout({ children }: { children: ReactNode }) {
  // Rendered per request: the service's URLs come from this server's environment, and the
  // page subscribes from the head as of this render, so nothing published meanwhile is lost.
  await connection();
  const config = realtimeConfig();
  const head = await fetchHead(config.httpUrl);
  return (
    <html lang="en">
      <body>
        <RealtimeProvider url={config.wsUrl} since={head}>
          <RealtimeNotifications />
          {children}
        </RealtimeProvider>
        <Toaster position="bottom-right" richColors closeButton visibleToasts={5} />
      </body>
    </html>
  );
}
