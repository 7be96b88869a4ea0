'use client';

/**
 * Events as sonner toasts, never a flood: a few toasts, then one summary updated in place;
 * none while the tab is hidden, then one summary; none for old replayed events (see
 * `lib/notifier.ts`). Under a `<RealtimeProvider>` it reads the page's connection; with none
 * above, it owns one of its own.
 */

import { useEffect, useRef } from 'react';
import { toast } from 'sonner';

import { RealtimeProvider, useOptionalRealtime, useRealtimeEvents } from '@/components/realtime/RealtimeProvider';
import { DEFAULT_WS_URL } from '@/lib/defaults';
import { describeEvent } from '@/lib/describeEvent';
import { Notifier, type ToastSpec } from '@/lib/notifier';
import type { WsEvent } from '@/lib/protocol';

/** Show one toast through sonner; the same id updates the toast in place. */
export function showToast({ id, title, description, tone, duration, onClose }: ToastSpec): void {
  const options = { id, description, duration, onDismiss: onClose, onAutoClose: onClose };
  switch (tone) {
    case 'success':
      toast.success(title, options);
      break;
    case 'info':
      toast.info(title, options);
      break;
    case 'warning':
      toast.warning(title, options);
      break;
    case 'error':
      toast.error(title, options);
      break;
    case 'neutral':
      toast(title, options);
      break;
  }
}

/** One event's own toast, if it is worth one (the notifier decides when to call this). */
export function showEventToast(event: WsEvent): void {
  const { title, description, tone, toast: worthIt } = describeEvent(event);
  if (!worthIt) return;
  showToast({ id: event.id, title, description, tone, duration: tone === 'error' ? Infinity : undefined });
}

function hidden(): boolean {
  return document.visibilityState === 'hidden';
}

function Toasts() {
  const notifier = useRef<Notifier | null>(null);
  useEffect(() => {
    const current = new Notifier(showToast);
    notifier.current = current;
    const onVisibility = () => {
      if (!hidden()) current.shown();
    };
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      document.removeEventListener('visibilitychange', onVisibility);
      current.dispose();
      notifier.current = null;
    };
  }, []);
  useRealtimeEvents((signal) => {
    if (signal.kind === 'event') notifier.current?.offer(signal.event, hidden());
  });
  return null;
}

export interface RealtimeNotificationsProps {
  /** With no provider above: the subscribe URL (default `NEXT_PUBLIC_WS_URL`, as built). */
  url?: string;
  /** With no provider above: where to start (a server-rendered `/events/head`). */
  since?: string | null;
}

export default function RealtimeNotifications({ url, since }: RealtimeNotificationsProps = {}) {
  const realtime = useOptionalRealtime();
  if (realtime !== null) return <Toasts />;
  return (
    <RealtimeProvider url={url ?? process.env.NEXT_PUBLIC_WS_URL ?? DEFAULT_WS_URL} since={since}>
      <Toasts />
    </RealtimeProvider>
  );
}
