'use client';

/** A sonner toast for each event worth one: posts created, updated or deleted, new comments, notices. */

import { toast } from 'sonner';

import { useRealtimeEvents } from '@/components/realtime/RealtimeProvider';
import { describeEvent } from '@/lib/describeEvent';
import type { WsEvent } from '@/lib/protocol';

export function showEventToast(event: WsEvent): void {
  const { title, description, tone, toast: worthIt } = describeEvent(event);
  if (!worthIt) return;
  // The event id as the toast id: the same event can never stack two toasts.
  const options = { id: event.id, description };
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

export default function RealtimeNotifications() {
  useRealtimeEvents((signal) => {
    if (signal.kind === 'event') showEventToast(signal.event);
  });
  return null;
}
