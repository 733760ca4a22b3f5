// The one coalescing loop of the code base (rebalancer, claim reconciler, status writer): kicks while a run is
// waiting merge into it, a kick during a run schedules exactly one more after it, and runs never overlap.

export interface CoalescerOptions {
  /** How long to wait before a run, asked at each kick that schedules one (≤ 0: on the next turn of the loop). */
  delayMs?: () => number;
  /** The wait's timer does not keep the process alive. */
  unref?: boolean;
  /** A run that threw (runs handle their own errors; this only keeps one from going unseen). */
  onError?: (err: unknown) => void;
}

export class Coalescer {
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(
    private readonly run: () => Promise<void>,
    private readonly o: CoalescerOptions = {},
  ) {}

  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer || this.immediate) return;
    const wait = this.o.delayMs?.() ?? 0;
    if (wait <= 0) {
      this.immediate = setImmediate(() => void this.fire());
    } else {
      this.timer = setTimeout(() => void this.fire(), wait);
      if (this.o.unref) this.timer.unref();
    }
  }

  /** Whether a run is in progress. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Resolves once no run is in progress (a rerun a kick scheduled meanwhile may still follow). */
  async settle(): Promise<void> {
    while (this.running) await this.running;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = this.immediate = undefined;
  }

  private async fire(): Promise<void> {
    this.timer = this.immediate = undefined;
    if (this.running || this.stopped) return;
    this.again = false;
    this.running = (async () => {
      try {
        await this.run();
      } catch (err) {
        this.o.onError?.(err);
      } finally {
        this.running = null;
        if (this.again) this.kick();
      }
    })();
    await this.running;
  }
}
