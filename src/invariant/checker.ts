import type { InvariantReport, OwnershipSample, Violation } from './types.js';

// The pure invariant checker. It reads a time-ordered stream of facts and never looks at a clock or a file.
//
// Model: each (source, vip, bucket) holds the holders of its latest sample until the next sample of the same key
// (piecewise constant), so splitting a constant stretch into more samples, or merging equal neighbours, never
// changes the verdict.
// - Safety: a stretch with two or more holders is one `doubleOwner` violation (one per stretch, not per sample).
// - Liveness: a stretch where the backend source shows no holder is an unowned interval. Only the part of it during
//   which at least one node had a node key ("a live node existed") counts. It may last `boundMs` (TTL + 200 ms).
//   An injected fault (chaos `impair`) that hits the bucket's assignee, the leader or etcd before or during the
//   stretch restarts the failover clock at the fault (see `allowedMs`); one after an overrun excuses nothing.
//   Without injected faults (the agent's tests) the bound is exactly `boundMs`.
// - Kernel ⊆ claims: a backend holder that is not the claim's owner for longer than `claimLagMs` is
//   `heldWithoutClaim`; one whose node had no claim of the bucket at any moment of its stretch (or within
//   `claimLagMs` after it: the watch may deliver the claim after the file write is seen) is `heldNeverClaimed`.
// - Legal transitions: claims are compared by holder and lease (incarnation). When a claim changes hands or goes
//   away, the previous holder released its kernel first (DESIGN §5), so the first complete read of every backend
//   that *started after* the change was observed (a `round` fact) must not show it: `heldAfterRelease`. This needs
//   no time allowance (the real release precedes the real claim change, which precedes its observation), so it
//   is exact to the backend read period. A node may take the bucket again while the round runs (a re-hash
//   releases and re-acquires at once): its claim of it seen by the round's end (+ claimLagMs), before any other
//   node's, excuses it, and kernel ⊆ claims covers that stretch instead.

export type Source = OwnershipSample['source'];

/** Nodes that had a `nodes/<id>` key at time t (from then until the next fact). */
export interface LivenessFact {
  t: number;
  live: readonly string[];
}

/** The leader's desired owner of one bucket from time t (null: unassigned). */
export interface AssigneeFact {
  t: number;
  vip: string;
  bucket: number;
  assignee: string | null;
}

/**
 * The observer's own view of etcd was stale during [from, to] (its watch was reconnecting): a backend holder
 * whose claim the observer could not have seen then is not held against the node.
 */
export interface BlindFact {
  /** When the stale stretch ended and became known (= to), for the stream's order. */
  t: number;
  from: number;
  to: number;
}

/**
 * Every node's backend was read completely, each read starting at or after t, and every change it showed was fed
 * before this fact.
 */
export interface RoundFact {
  t: number;
  /**
   * When the round's last read returned (default t). A read that came after the node claimed the bucket again
   * shows the new claim's entry: a re-claim seen up to `end` + claimLagMs excuses the holder.
   */
  end?: number;
}

/**
 * From time t, buckets 1..buckets of this VIP are in the spec (0: the VIP is not). A bucket out of the spec owes
 * no owner (its unowned time is not counted); it is still checked for double owners and holders without claims.
 * Before a VIP's first scope fact every bucket counts.
 */
export interface ScopeFact {
  t: number;
  vip: string;
  buckets: number;
}

/** Who led the cluster from time t (null: nobody). */
export interface LeaderFact {
  t: number;
  leader: string | null;
}

/**
 * A fault injected on purpose (chaos): the node (or, with node null, etcd itself) could not act normally during
 * [fromMs, toMs]. toMs is Infinity while the fault lasts.
 */
export interface Impairment {
  node: string | null;
  kind: string;
  fromMs: number;
  toMs: number;
}

export interface UnownedInterval {
  vip: string;
  bucket: number;
  fromMs: number;
  toMs: number;
  /** The part of [fromMs, toMs] during which a live node existed. */
  liveMs: number;
  /** liveMs may be at most this. */
  allowedMs: number;
}

interface KeyState {
  holders: readonly string[];
  /** Start of the current stretch with ≥ 2 holders, and every node seen in it. */
  doubleSince: number | null;
  doubleNodes: Set<string>;
}

interface BucketState {
  /** Start of the current unowned stretch in the backend source; null when owned, never sampled, out of spec. */
  unownedSince: number | null;
  /** Whether a backend sample of this bucket arrived. */
  sampled?: boolean;
  /** The claim's owner (null: no claim); undefined until a claims sample arrived (then kernel ⊆ claims is checked). */
  claimOwner?: string | null;
  /** The claim's lease (the owner's incarnation), when known. */
  claimLease?: string | undefined;
  backendHolders: readonly string[];
  /** Backend holders without the claim, and since when. */
  unclaimedSince: Map<string, number>;
  /**
   * Open backend stretches per holder: since when, whether that node had the claim during it, and whether the
   * bucket's claims were known at all then (before any claims sample nothing is checked, as for heldWithoutClaim).
   */
  holding: Map<string, { since: number; claimed: boolean; checked: boolean }>;
  /** Closed stretches with no claim seen yet, waiting `claimLagMs` for a late claim event. */
  unjustified: { node: string; from: number; to: number }[];
  /** Previous holders that must be gone from the next backend round that starts after `t` (raw time). */
  released: { node: string; lease: string; t: number }[];
  assignees: { t: number; assignee: string | null }[];
}

const bucketKey = (vip: string, bucket: number): string => `${vip}#${bucket}`;

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}

/** Values (or their last value before `from`) of a time-ordered history during [from, to]. */
function valuesDuring<T>(hist: readonly { t: number }[], pick: (i: number) => T, from: number, to: number): T[] {
  const out: T[] = [];
  for (let i = hist.length - 1; i >= 0; i--) {
    const h = hist[i]!;
    if (h.t > to) continue;
    out.push(pick(i));
    if (h.t <= from) break;
  }
  return out;
}

export class InvariantChecker {
  private readonly keys = new Map<string, KeyState>();
  private readonly buckets = new Map<string, BucketState>();
  /** Periods with at least one live node: [from, to), to = Infinity while ongoing. */
  private readonly livePeriods: { from: number; to: number }[] = [];
  private readonly leaders: { t: number; leader: string | null }[] = [];
  private readonly impairments: Impairment[] = [];
  private readonly blinds: BlindFact[] = [];
  private readonly scopes = new Map<string, number>();
  private readonly found: Violation[] = [];
  private readonly intervals: UnownedInterval[] = [];
  private readonly maxUnowned = new Map<string, number>();
  private lastT = -Infinity;
  /** heldAfterRelease candidates, until when a re-claim of the bucket by the same node would excuse them. */
  private suspects: { v: Extract<Violation, { kind: 'heldAfterRelease' }>; until: number }[] = [];
  private sampleCount = 0;
  private finished = false;

  /**
   * @param boundMs how long a bucket may stay unowned (TTL + 200 ms).
   * @param claimLagMs how long a backend holder may lack the claim before it is a violation (observation lag).
   * @param cascadeBoundMs how long after an injected fault in a failover's chain ownership may take
   *   (default boundMs + 500: etcd revokes expired leases in a 500 ms loop, DESIGN §10).
   * @param etcdElectionMs etcd's election timeout (1000 by default, 500 with fast election flags).
   */
  constructor(
    readonly boundMs: number,
    readonly claimLagMs = 500,
    readonly cascadeBoundMs = boundMs + 500,
    readonly etcdElectionMs = 1000,
  ) {}

  /** Clamp to the stream's order: sources read on one clock but at slightly different moments. */
  private at(t: number): number {
    if (t > this.lastT) this.lastT = t;
    if (this.suspects.length > 0) this.confirmSuspects(this.lastT);
    return this.lastT;
  }

  /** Holders seen after their release whose node did not claim the bucket again in time: violations. */
  private confirmSuspects(now: number): void {
    const keep: typeof this.suspects = [];
    for (const x of this.suspects) {
      if (x.until < now) this.found.push(x.v);
      else keep.push(x);
    }
    this.suspects = keep;
  }

  private bucket(vip: string, bucket: number): BucketState {
    const k = bucketKey(vip, bucket);
    let b = this.buckets.get(k);
    if (!b) {
      b = {
        unownedSince: null,
        assignees: [],
        backendHolders: [],
        unclaimedSince: new Map(),
        holding: new Map(),
        unjustified: [],
        released: [],
      };
      this.buckets.set(k, b);
    }
    return b;
  }

  observe(sample: OwnershipSample): void {
    const t = this.at(sample.t);
    this.sampleCount++;
    const k = `${sample.source}|${sample.vip}#${sample.bucket}`;
    const holders = [...new Set(sample.holders)];
    let st = this.keys.get(k);
    if (!st) {
      st = { holders: [], doubleSince: null, doubleNodes: new Set() };
      this.keys.set(k, st);
    }
    if (holders.length >= 2) {
      if (st.doubleSince === null) st.doubleSince = t;
      holders.forEach((h) => st.doubleNodes.add(h));
    } else if (st.doubleSince !== null) {
      this.closeDouble(sample.source, sample.vip, sample.bucket, st);
    }
    if (sample.source === 'claims' || sample.source === 'backend') {
      const b = this.bucket(sample.vip, sample.bucket);
      if (sample.source === 'claims') {
        this.claimChanged(
          sample.vip,
          sample.bucket,
          b,
          holders[0] ?? null,
          sample.lease,
          sample.t,
          t,
          sample.damaged === true,
        );
      } else this.backendChanged(b, holders, t);
      this.checkClaimed(sample.vip, sample.bucket, b, t);
    }
    if (sample.source === 'backend') {
      const b = this.bucket(sample.vip, sample.bucket);
      b.sampled = true;
      if (holders.length === 0 && b.unownedSince === null && this.inScope(sample.vip, sample.bucket)) {
        b.unownedSince = t;
      }
      if (holders.length > 0 && b.unownedSince !== null) {
        this.closeUnowned(sample.vip, sample.bucket, b.unownedSince, t);
        b.unownedSince = null;
      }
    }
    if (!sameSet(st.holders, holders)) st.holders = holders;
  }

  /** A new claim value: a transition away from a holder (or incarnation) must find its backend already clear. */
  private claimChanged(
    vip: string,
    bucket: number,
    b: BucketState,
    owner: string | null,
    lease: string | undefined,
    rawT: number,
    t: number,
    damaged: boolean,
  ): void {
    const prev = b.claimOwner;
    const prevLease = b.claimLease;
    b.claimOwner = owner;
    b.claimLease = lease;
    for (const h of b.holding.values()) h.checked = true;
    if (owner !== null) {
      // The new holder may hold it from now on; a late claim also justifies its recent stretches.
      b.released = b.released.filter((r) => r.node !== owner);
      // A re-claim by the suspect's node in time excuses it; another owner first makes it a violation: the bucket
      // changed hands while that node's kernel may still have held it.
      const keep: typeof this.suspects = [];
      for (const x of this.suspects) {
        if (x.v.vip !== vip || x.v.bucket !== bucket) keep.push(x);
        else if (x.v.node !== owner) this.found.push(x.v);
        else if (t > x.until) keep.push(x);
      }
      this.suspects = keep;
      const h = b.holding.get(owner);
      if (h) h.claimed = true;
      b.unjustified = b.unjustified.filter((u) => !(u.node === owner && u.to + this.claimLagMs >= t));
    }
    if (prev === undefined || prev === null) return;
    if (prev === owner && prevLease === lease) return;
    // Same node under a new lease: backends are known per node, so its new incarnation may hold the bucket.
    if (prev === owner) return;
    // Garbage over the claim is no release by its holder: kernel ⊆ claims (claimLagMs) bounds how long it may hold on.
    if (damaged) return;
    b.released.push({ node: prev, lease: prevLease ?? '', t: rawT });
  }

  private backendChanged(b: BucketState, holders: readonly string[], t: number): void {
    b.backendHolders = holders;
    for (const n of holders) {
      if (!b.holding.has(n)) {
        b.holding.set(n, { since: t, claimed: b.claimOwner === n, checked: b.claimOwner !== undefined });
      }
    }
    for (const [n, h] of [...b.holding]) {
      if (holders.includes(n)) continue;
      b.holding.delete(n);
      if (!h.claimed && h.checked) b.unjustified.push({ node: n, from: h.since, to: t });
    }
  }

  /** A complete backend round: every holder released before its start must be gone. */
  round(fact: RoundFact): void {
    this.at(fact.t);
    for (const [k, b] of this.buckets) {
      if (b.released.length === 0) continue;
      const [vip, bs] = k.split('#') as [string, string];
      const keep: BucketState['released'] = [];
      for (const r of b.released) {
        if (r.t >= fact.t) keep.push(r);
        else if (b.backendHolders.includes(r.node)) {
          this.suspects.push({
            v: {
              kind: 'heldAfterRelease',
              vip,
              bucket: Number(bs),
              node: r.node,
              lease: r.lease,
              claimAt: r.t,
              seenAt: fact.t,
            },
            until: (fact.end ?? fact.t) + this.claimLagMs,
          });
        }
      }
      b.released = keep;
    }
  }

  /** Per node kernel ⊆ claims: a backend holder that is not the claim's owner starts (or continues) a stretch. */
  private checkClaimed(vip: string, bucket: number, b: BucketState, t: number): void {
    if (b.claimOwner === undefined) return;
    for (const n of b.backendHolders) {
      if (n !== b.claimOwner && !b.unclaimedSince.has(n)) b.unclaimedSince.set(n, t);
    }
    for (const [n, since] of [...b.unclaimedSince]) {
      if (b.backendHolders.includes(n) && n !== b.claimOwner) continue;
      b.unclaimedSince.delete(n);
      this.closeUnclaimed(vip, bucket, n, since, t);
    }
  }

  private closeUnclaimed(vip: string, bucket: number, node: string, from: number, to: number): void {
    let blind = 0;
    for (const b of this.blinds) blind += Math.max(0, Math.min(to, b.to) - Math.max(from, b.from));
    if (to - from - blind > this.claimLagMs) {
      this.found.push({ kind: 'heldWithoutClaim', vip, bucket, node, fromMs: from, toMs: to, durationMs: to - from });
    }
  }

  private closeDouble(source: Source, vip: string, bucket: number, st: KeyState): void {
    this.found.push({
      kind: 'doubleOwner',
      source,
      vip,
      bucket,
      nodes: [...st.doubleNodes].sort(),
      at: st.doubleSince!,
    });
    st.doubleSince = null;
    st.doubleNodes = new Set();
  }

  liveness(fact: LivenessFact): void {
    const t = this.at(fact.t);
    const last = this.livePeriods[this.livePeriods.length - 1];
    const ongoing = last !== undefined && last.to === Infinity;
    if (fact.live.length > 0 && !ongoing) this.livePeriods.push({ from: t, to: Infinity });
    if (fact.live.length === 0 && ongoing) last.to = t;
  }

  assignee(fact: AssigneeFact): void {
    const t = this.at(fact.t);
    this.bucket(fact.vip, fact.bucket).assignees.push({ t, assignee: fact.assignee });
  }

  /** Stretches that had no claim of their node (checked at the end, when every blind stretch is known). */
  private closeNeverClaimed(vip: string, bucket: number, b: BucketState, end: number): void {
    for (const [n, h] of b.holding)
      if (!h.claimed && h.checked) b.unjustified.push({ node: n, from: h.since, to: end });
    b.holding.clear();
    for (const u of b.unjustified) {
      const blind = this.blinds.some((x) => x.from <= u.to + this.claimLagMs && x.to >= u.from);
      if (!blind) this.found.push({ kind: 'heldNeverClaimed', vip, bucket, node: u.node, fromMs: u.from, toMs: u.to });
    }
    b.unjustified = [];
  }

  private inScope(vip: string, bucket: number): boolean {
    const n = this.scopes.get(vip);
    return n === undefined || bucket <= n;
  }

  /** The spec's buckets of a VIP from now: unowned stretches of buckets leaving it end here, entering it start. */
  scope(fact: ScopeFact): void {
    const t = this.at(fact.t);
    this.scopes.set(fact.vip, fact.buckets);
    for (const [k, b] of this.buckets) {
      const [vip, bs] = k.split('#') as [string, string];
      if (vip !== fact.vip) continue;
      const bucket = Number(bs);
      if (!this.inScope(vip, bucket)) {
        if (b.unownedSince !== null) this.closeUnowned(vip, bucket, b.unownedSince, t);
        b.unownedSince = null;
      } else if (b.unownedSince === null && b.sampled && b.backendHolders.length === 0) {
        b.unownedSince = t;
      }
    }
  }

  blind(fact: BlindFact): void {
    this.at(fact.t);
    this.blinds.push({ ...fact });
  }

  leader(fact: LeaderFact): void {
    const t = this.at(fact.t);
    this.leaders.push({ t, leader: fact.leader });
  }

  /** Start an impairment; returns a function that ends it. */
  impair(node: string | null, kind: string, fromMs: number): (toMs: number) => void {
    const imp: Impairment = { node, kind, fromMs, toMs: Infinity };
    this.impairments.push(imp);
    return (toMs) => {
      imp.toMs = toMs;
    };
  }

  impairmentList(): Impairment[] {
    return this.impairments.map((i) => ({ ...i }));
  }

  /** Time during [from, to] with at least one live node. */
  liveOverlap(from: number, to: number): number {
    let sum = 0;
    for (const p of this.livePeriods) {
      const a = Math.max(from, p.from);
      const b = Math.min(to, p.to);
      if (b > a) sum += b - a;
    }
    return sum;
  }

  /**
   * How long (ms) an unowned stretch [from, to] of one bucket may last. Base: `boundMs` from its start. Every
   * injected fault of its chain (a node that was the bucket's assignee or the leader, or etcd itself) that began
   * before the stretch or while it was still within its allowance restarts the clock: the stretch may then last
   * until that fault's start + `cascadeBoundMs` (the TTL, etcd's lease-expiry granularity and the reaction). A fault
   * after an overrun excuses nothing.
   */
  allowedMs(vip: string, bucket: number, from: number, to: number): number {
    const b = this.buckets.get(bucketKey(vip, bucket));
    const bound = this.boundMs;
    const inChain = (node: string, lo: number, hi: number): boolean =>
      (b !== undefined && valuesDuring(b.assignees, (i) => b.assignees[i]!.assignee, lo, hi).includes(node)) ||
      valuesDuring(this.leaders, (i) => this.leaders[i]!.leader, lo, hi).includes(node);
    // An impairment matters while it lasts and for one bound after it is undone (lease expiry, fence recovery),
    // and only if its node was this bucket's assignee or the leader during that time and the stretch.
    const relevant = this.impairments.filter((imp) => {
      const lo = Math.max(imp.fromMs, from - bound);
      const hi = Math.min(imp.toMs + bound, to);
      if (hi < lo) return false;
      return imp.node === null || inChain(imp.node, Math.max(lo, from), Math.max(hi, from));
    });
    let deadline = from + bound;
    for (const imp of relevant.sort((x, y) => x.fromMs - y.fromMs)) {
      // etcd itself (a member killed, or an observed raft election): every lease is refreshed to election timeout
      // + TTL when a new raft leader takes over, so leases (and the failovers waiting on them) restart then. For
      // an observed election fromMs is when it was seen; for a kill, the election comes later and is observed too
      // where the harness watches the raft term (chaos `etcdLeaderChange`).
      const restart = imp.fromMs + (imp.node === null ? this.etcdElectionMs : 0);
      if (imp.fromMs <= deadline) deadline = Math.max(deadline, restart + this.cascadeBoundMs);
    }
    return deadline - from;
  }

  private closeUnowned(vip: string, bucket: number, from: number, to: number): void {
    const liveMs = this.liveOverlap(from, to);
    const allowedMs = this.allowedMs(vip, bucket, from, to);
    this.intervals.push({ vip, bucket, fromMs: from, toMs: to, liveMs, allowedMs });
    const k = bucketKey(vip, bucket);
    this.maxUnowned.set(k, Math.max(this.maxUnowned.get(k) ?? 0, liveMs));
    if (liveMs > allowedMs) {
      this.found.push({
        kind: 'unownedTooLong',
        vip,
        bucket,
        fromMs: from,
        toMs: to,
        durationMs: liveMs,
        boundMs: allowedMs,
      });
    }
  }

  /** Violations found so far (closed stretches only). */
  violations(): Violation[] {
    return [...this.found];
  }

  /** Unowned stretches still open at time t that already exceed their allowance (for early failure). */
  openViolations(t: number): Violation[] {
    const out: Violation[] = [];
    for (const [k, b] of this.buckets) {
      if (b.unownedSince === null) continue;
      const [vip, bs] = k.split('#') as [string, string];
      const bucket = Number(bs);
      const liveMs = this.liveOverlap(b.unownedSince, t);
      const allowed = this.allowedMs(vip, bucket, b.unownedSince, t);
      if (liveMs > allowed) {
        out.push({
          kind: 'unownedTooLong',
          vip,
          bucket,
          fromMs: b.unownedSince,
          toMs: t,
          durationMs: liveMs,
          boundMs: allowed,
        });
      }
    }
    return out;
  }

  /** Close every open stretch at `endMs` and return the verdict. Idempotent. */
  finish(endMs: number, startedAt: number): InvariantReport & { intervals: UnownedInterval[] } {
    if (!this.finished) {
      this.finished = true;
      const end = this.at(endMs);
      this.confirmSuspects(Infinity);
      for (const [k, st] of this.keys) {
        if (st.doubleSince === null) continue;
        const [source, rest] = k.split('|') as [Source, string];
        const [vip, bs] = rest.split('#') as [string, string];
        this.closeDouble(source, vip, Number(bs), st);
      }
      for (const [k, b] of this.buckets) {
        const [v, n] = k.split('#') as [string, string];
        for (const [node, since] of b.unclaimedSince) this.closeUnclaimed(v, Number(n), node, since, end);
        b.unclaimedSince.clear();
        this.closeNeverClaimed(v, Number(n), b, end);
        if (b.unownedSince === null) continue;
        const [vip, bs] = k.split('#') as [string, string];
        // An interval still open at the end is not a completed failover; it is still checked against its bound.
        const liveMs = this.liveOverlap(b.unownedSince, end);
        const allowed = this.allowedMs(vip, Number(bs), b.unownedSince, end);
        this.maxUnowned.set(k, Math.max(this.maxUnowned.get(k) ?? 0, liveMs));
        if (liveMs > allowed) {
          this.found.push({
            kind: 'unownedTooLong',
            vip,
            bucket: Number(bs),
            fromMs: b.unownedSince,
            toMs: end,
            durationMs: liveMs,
            boundMs: allowed,
          });
        }
      }
    }
    return {
      violations: [...this.found],
      maxUnownedMs: Object.fromEntries(this.maxUnowned),
      unownedIntervals: this.intervals.map(({ vip, bucket, fromMs, toMs }) => ({ vip, bucket, fromMs, toMs })),
      intervals: [...this.intervals],
      samples: this.sampleCount,
      startedAt,
      endedAt: endMs,
    };
  }
}

export type TimelineFact =
  | ({ type: 'sample' } & OwnershipSample)
  | ({ type: 'liveness' } & LivenessFact)
  | ({ type: 'assignee' } & AssigneeFact)
  | ({ type: 'leader' } & LeaderFact)
  | ({ type: 'blind' } & BlindFact)
  | ({ type: 'round' } & RoundFact)
  | ({ type: 'scope' } & ScopeFact);

/** Check a whole recorded timeline at once (facts in time order). */
export function checkTimeline(
  facts: readonly TimelineFact[],
  opts: {
    boundMs: number;
    startedAt: number;
    endMs: number;
    impairments?: readonly Impairment[];
    claimLagMs?: number;
    cascadeBoundMs?: number;
    etcdElectionMs?: number;
  },
): InvariantReport & { intervals: UnownedInterval[] } {
  const c = new InvariantChecker(opts.boundMs, opts.claimLagMs, opts.cascadeBoundMs, opts.etcdElectionMs);
  for (const imp of opts.impairments ?? []) c.impair(imp.node, imp.kind, imp.fromMs)(imp.toMs);
  for (const f of facts) applyFact(c, f);
  return c.finish(opts.endMs, opts.startedAt);
}

/** Feed one fact to the checker (the next in time order). */
export function applyFact(c: InvariantChecker, f: TimelineFact): void {
  if (f.type === 'sample') c.observe(f);
  else if (f.type === 'liveness') c.liveness(f);
  else if (f.type === 'assignee') c.assignee(f);
  else if (f.type === 'blind') c.blind(f);
  else if (f.type === 'round') c.round(f);
  else if (f.type === 'scope') c.scope(f);
  else c.leader(f);
}
