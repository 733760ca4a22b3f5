// The checker reads facts in time order, but the observer learns them out of it: a kernel read is stamped when it
// started and arrives when its slowest `nft` returned, while a claim change is stamped when the watch delivered it.
// A claim handed on during the read would be fed before the holding it justified, and the holding would look
// unclaimed. The buffer holds every fact for `windowMs` and releases them sorted by stamp (ties: arrival order).

export class ReorderBuffer<F extends { t: number }> {
  private readonly pending: F[] = [];
  /** The stamp of the last fact released: a later arrival stamped before it cannot be put in order any more. */
  private releasedUpTo = -Infinity;
  /** Facts that arrived after the window of their stamp had closed (released at once, out of order). */
  late = 0;

  constructor(readonly windowMs: number) {}

  push(fact: F): void {
    if (fact.t < this.releasedUpTo) this.late++;
    // Nearly always in order: scan from the end.
    let i = this.pending.length;
    while (i > 0 && this.pending[i - 1]!.t > fact.t) i--;
    this.pending.splice(i, 0, fact);
  }

  /** The facts whose window has closed at `now` (all of them with Infinity), in stamp order. */
  release(now: number): F[] {
    const upTo = now - this.windowMs;
    let n = 0;
    while (n < this.pending.length && this.pending[n]!.t <= upTo) n++;
    const out = this.pending.splice(0, n);
    const last = out[out.length - 1];
    if (last && last.t > this.releasedUpTo) this.releasedUpTo = last.t;
    return out;
  }

  get size(): number {
    return this.pending.length;
  }
}
