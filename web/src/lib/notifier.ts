/**
 * Which events become toasts, so that a burst never floods the page: a few toasts, then one
 * summary toast (a fixed id, updated in place); nothing while the tab is hidden, then one
 * summary when it is shown; nothing for a replayed event older than a minute. Free of React
 * and of sonner: the caller hands in how to show a toast.
 */

import { describeEvent, type EventDescription, type Tone } from '@/lib/describeEvent';
import { isBlogUpdate, isCommentUpdate, isSystemNotification, type WsEvent } from '@/lib/protocol';

export interface ToastSpec {
  id: string;
  title: string;
  description?: string;
  tone: Tone;
  /** Milliseconds; `Infinity` stays until dismissed (error-level notices). */
  duration?: number;
  /** Called when the toast goes (dismissed or timed out). */
  onClose?: () => void;
}

export interface NotifierOptions {
  /** The window a burst is counted over (ms). */
  windowMs: number;
  /** Toasts of their own within one window; past them, the summary. */
  maxIndividual: number;
  /** A replayed event older than this is not toasted (ms). */
  maxAgeMs: number;
  /** The summary is redrawn at most this often (ms): one render and one announcement, not one per event. */
  summaryEveryMs: number;
}

export const DEFAULT_NOTIFIER_OPTIONS: NotifierOptions = {
  windowMs: 1_000,
  maxIndividual: 3,
  maxAgeMs: 60_000,
  summaryEveryMs: 1_000,
};

/** The summary toast's id: always the same, so it is updated in place, never stacked. */
export const SUMMARY_TOAST_ID = 'wsbroadcast-summary';

type Kind = 'post' | 'comment' | 'notice' | 'update';

const NOUNS: Record<Kind, [string, string]> = {
  post: ['post update', 'post updates'],
  comment: ['new comment', 'new comments'],
  notice: ['notice', 'notices'],
  update: ['update', 'updates'],
};

function kindOf(event: WsEvent): Kind {
  if (isCommentUpdate(event)) return 'comment';
  if (isBlogUpdate(event)) return 'post';
  if (isSystemNotification(event)) return 'notice';
  return 'update';
}

function counted(kind: Kind, n: number): string {
  return `${n} ${NOUNS[kind][n === 1 ? 0 : 1]}`;
}

/** "12 new comments"; mixed kinds: "15 new updates" with "12 new comments, 3 post updates". */
export function summarize(counts: Map<Kind, number>, away: boolean): { title: string; description?: string } {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const parts = [...counts.entries()].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  const title = parts.length === 1 ? counted(parts[0]![0], total) : `${total} new updates`;
  const detail = parts.length > 1 ? parts.map(([kind, n]) => counted(kind, n)).join(', ') : undefined;
  const when = away ? 'While you were away' : undefined;
  const description = [when, detail].filter(Boolean).join(': ') || undefined;
  return { title, description };
}

export class Notifier {
  /** When the last toast-worthy events came, within the window. */
  private recent: number[] = [];
  private counts = new Map<Kind, number>();
  private summaryOpen = false;
  private summaryAway = false;
  private summaryError = false;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly options: NotifierOptions;

  constructor(
    private readonly show: (toast: ToastSpec) => void,
    options: Partial<NotifierOptions> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.options = { ...DEFAULT_NOTIFIER_OPTIONS, ...options };
  }

  /** An event arrived; `hidden`: the tab is not in view (the feed has it, the toast waits). */
  offer(event: WsEvent, hidden: boolean): void {
    const description = describeEvent(event);
    if (!description.toast) return;
    const at = Date.parse(event.timestamp);
    // A reconnect replaying old history: the feed shows it, a toast would be old news.
    if (Number.isFinite(at) && this.now() - at > this.options.maxAgeMs) return;
    const sticky = description.tone === 'error';
    if (hidden) {
      this.count(event, sticky);
      this.summaryAway = true;
      return;
    }
    const now = this.now();
    this.recent = this.recent.filter((t) => now - t < this.options.windowMs);
    this.recent.push(now);
    // A toast of its own unless a burst is on: past a few in the window, or a summary waiting to be drawn.
    // Once the burst is over, the next event gets its own toast again, even with the summary still up.
    if (this.flushTimer === null && this.recent.length <= this.options.maxIndividual) {
      this.show(this.single(event, description));
      return;
    }
    this.count(event, sticky);
    this.scheduleSummary();
  }

  /** The tab came into view: greet the reader with one summary of what came meanwhile. */
  shown(): void {
    if (this.counts.size > 0) this.flush();
  }

  dispose(): void {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
  }

  private single(event: WsEvent, { title, description, tone }: EventDescription): ToastSpec {
    // The event id as the toast id: the same event can never stack two toasts.
    return { id: event.id, title, description, tone, duration: tone === 'error' ? Infinity : undefined };
  }

  private count(event: WsEvent, sticky: boolean): void {
    const kind = kindOf(event);
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    if (sticky) this.summaryError = true;
  }

  private scheduleSummary(): void {
    if (this.flushTimer !== null) return;
    // The first summary at once; later redraws at most every summaryEveryMs.
    const delay = this.summaryOpen ? this.options.summaryEveryMs : 0;
    this.flushTimer = setTimeout(() => this.flush(), delay);
  }

  private flush(): void {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const { title, description } = summarize(this.counts, this.summaryAway);
    const error = this.summaryError;
    this.summaryOpen = true;
    this.show({
      id: SUMMARY_TOAST_ID,
      title,
      description,
      tone: error ? 'error' : 'info',
      // An error folded into the summary must not slip away unread.
      duration: error ? Infinity : undefined,
      onClose: () => {
        this.summaryOpen = false;
        this.summaryAway = false;
        this.summaryError = false;
        this.counts = new Map();
      },
    });
  }
}
