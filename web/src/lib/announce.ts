/**
 * Paces what a polite live region says: a value that changes every second must not keep a
 * screen reader talking. The first value is said at once; after that, at most one
 * announcement per interval, only when the value differs from the last one said, and the
 * newest value is always said in the end (a count going 3, 4, 5 within the interval is
 * heard as 3, then 5).
 */

/** How often the reader count may be announced. */
export const ANNOUNCE_INTERVAL_MS = 5_000;

export class AnnounceThrottle {
  private said: string | null = null;
  private saidAt = Number.NEGATIVE_INFINITY;
  private pending: string | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    /** Put the text in the live region. */
    private readonly say: (text: string) => void,
    private readonly intervalMs: number = ANNOUNCE_INTERVAL_MS,
  ) {}

  /** The value changed (the visible text follows at once; the announcement may wait). */
  update(text: string): void {
    this.pending = text;
    if (this.timer !== null) return; // the waiting announcement will say the newest value
    const wait = this.saidAt + this.intervalMs - Date.now();
    if (wait <= 0) this.flush();
    else this.timer = setTimeout(() => this.flush(), wait);
  }

  dispose(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending = null;
  }

  private flush(): void {
    this.timer = null;
    const text = this.pending;
    this.pending = null;
    if (text === null || text === this.said) return; // back where it was: nothing new to say
    this.said = text;
    this.saidAt = Date.now();
    this.say(text);
  }
}
