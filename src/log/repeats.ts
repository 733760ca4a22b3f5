// The same error over and over (read-only credentials: every retry PERMISSION_DENIED) drowns the log and hides
// what changed. The first of a kind is logged; identical ones within `windowMs` are counted, and the next one
// after the window is logged with how many were held back.

export interface RepeatVerdict {
  log: boolean;
  /** Identical lines held back since the last logged one (only when `log`). */
  repeated: number;
}

export class RepeatFilter {
  private readonly seen = new Map<string, { at: number; held: number }>();

  constructor(
    private readonly windowMs = 30_000,
    private readonly maxKeys = 256,
  ) {}

  check(key: string, now: number): RepeatVerdict {
    const s = this.seen.get(key);
    if (s && now - s.at < this.windowMs) {
      s.held++;
      return { log: false, repeated: 0 };
    }
    if (!s && this.seen.size >= this.maxKeys) this.seen.delete(this.seen.keys().next().value!);
    this.seen.set(key, { at: now, held: 0 });
    return { log: true, repeated: s?.held ?? 0 };
  }
}
