// Node indices grouped by load level, with the lowest and highest level found in O(log levels): orphan
// placement and the join policy only ever need "the least loaded" and "the most loaded" nodes, so the
// planner never scans all nodes per bucket. Levels compare exactly: callers compute them from integers.

class LazyHeap {
  private readonly a: number[] = [];
  constructor(private readonly less: (x: number, y: number) => boolean) {}

  push(v: number): void {
    const a = this.a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }

  peek(): number | undefined {
    return this.a[0];
  }

  pop(): void {
    const a = this.a;
    const last = a.pop();
    if (a.length === 0 || last === undefined) return;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
      if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m]!, a[i]!];
      i = m;
    }
  }
}

export interface Level {
  level: number;
  /** Members in no meaningful order: callers break ties themselves. */
  ids: ReadonlySet<number>;
}

export class LoadLevels {
  private readonly members = new Map<number, Set<number>>();
  private readonly levelOf = new Map<number, number>();
  // A level key is pushed each time its level is created; keys of emptied levels are dropped lazily on peek.
  private readonly low = new LazyHeap((x, y) => x < y);
  private readonly high = new LazyHeap((x, y) => x > y);

  set(id: number, level: number): void {
    const old = this.levelOf.get(id);
    if (old === level) return;
    if (old !== undefined) {
      const s = this.members.get(old)!;
      s.delete(id);
      if (s.size === 0) this.members.delete(old);
    }
    this.levelOf.set(id, level);
    let s = this.members.get(level);
    if (!s) {
      s = new Set();
      this.members.set(level, s);
      this.low.push(level);
      this.high.push(level);
    }
    s.add(id);
  }

  lowest(): Level | undefined {
    return this.top(this.low);
  }

  highest(): Level | undefined {
    return this.top(this.high);
  }

  private top(h: LazyHeap): Level | undefined {
    for (;;) {
      const level = h.peek();
      if (level === undefined) return undefined;
      const ids = this.members.get(level);
      if (ids) return { level, ids };
      h.pop();
    }
  }
}
