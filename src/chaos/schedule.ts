// The seeded fault schedule: a pure function of (seed, options). It fixes every fault's kind, start time, how
// long it lasts before it is undone, and a number that picks its target among the nodes free at run time (which
// nodes are free depends on how fast the cluster recovers, so targets are chosen then, deterministically from
// the pick). Pacing models `concurrency` fault slots so a schedule never asks for more overlap than the runner
// allows.

export const FAULT_KINDS = [
  'kill', // SIGKILL an agent, restart it after holdMs
  'killLeader', // SIGKILL the current leader, restart it after holdMs
  'stopShort', // SIGSTOP for less than the TTL, then SIGCONT
  'stopLong', // SIGSTOP for longer than the TTL, then SIGCONT
  'partitionShort', // cut the agent's etcd proxies for less than the TTL, then heal
  'partitionLong', // cut for longer than the TTL, then heal
  'drain', // set the node's draining flag (as `clusterip-ha drain`); undrain after holdMs
  'terminate', // SIGTERM: graceful drain, handoff and exit; start it again after holdMs
  'restart', // SIGHUP (systemctl reload): exit for a hitless restart (or a drain without TTL headroom), start at once
  'addNode', // start one more agent; after holdMs it leaves gracefully (SIGTERM)
  'etcdMember', // SIGKILL one etcd member (3 members only), restart after holdMs
  // SIGSTOP the etcd raft leader (3 members only) for longer than its election timeout. etcd 3.4.23 (Debian) then
  // revokes live leases: the resumed old leader's lessor still counts itself primary and its revokes are forwarded
  // to the new leader (etcd issues 12528, 15247; fixed by PR 16822, v3.4.28+): claims vanish under live kernels.
  'etcdLeaderStop',
  'specChange', // `clusterip-ha apply` a new seed, hash mode, bucket count or an added VIP; apply the old back after holdMs
  'duplicateId', // start a second agent (another machine) with a live node's id: it must refuse (exit 1)
  'backendFault', // a seeded share of the node's backend writes (clears included) fails or stalls for holdMs
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Faults after which survivors must take over the target's buckets: the failover latency is measured for these. */
export const FAILOVER_KINDS: readonly FaultKind[] = ['kill', 'killLeader', 'stopLong', 'partitionLong'];

/** Faults on etcd itself: one at a time, in the etcd slot. */
export const ETCD_KINDS: readonly FaultKind[] = ['etcdMember', 'etcdLeaderStop'];
/** Faults on the whole cluster's spec: one at a time, in their own slot. */
export const CLUSTER_KINDS: readonly FaultKind[] = ['specChange'];

/** The variants of a spec change (picked from the fault's pick). */
export const SPEC_CHANGES = ['seed', 'hashMode', 'buckets', 'addVip'] as const;
export type SpecChange = (typeof SPEC_CHANGES)[number];

/** A second number in [0, 1) from a fault's pick, for a fault's own parameters (variant, shares). */
export function subPick(pick: number, k: number): number {
  const x = pick * 7919 * (k + 1);
  return x - Math.floor(x);
}

export function specChangeOf(pick: number): SpecChange {
  return SPEC_CHANGES[Math.floor(subPick(pick, 1) * SPEC_CHANGES.length)]!;
}

/** A backend fault's shares: from a few failures to most writes failing or stalling (a stall: 50–800 ms). */
export function backendFaultOf(pick: number): { failShare: number; stallShare: number; stallMs: number } {
  const a = subPick(pick, 2);
  const b = subPick(pick, 3);
  return {
    failShare: Math.round((0.1 + 0.6 * a) * 100) / 100,
    stallShare: Math.round(0.3 * b * 100) / 100,
    stallMs: Math.round(50 + 750 * subPick(pick, 4)),
  };
}

export interface PlannedFault {
  seq: number;
  /** Offset from the start of the run. */
  atMs: number;
  kind: FaultKind;
  /** How long the fault lasts before it is undone. */
  holdMs: number;
  /** In [0, 1): picks the target among the eligible nodes (or etcd members) at run time. */
  pick: number;
}

export interface ScheduleOptions {
  seed: number;
  agents: number;
  etcdMembers: 1 | 3;
  ttlMs: number;
  /** Stop after this many faults ... */
  faults?: number;
  /** ... or when the next one would start after this offset. At least one of the two is required. */
  durationMs?: number;
  /** Node faults in flight at once; default min(agents - 2, ceil(agents / 2)), at least 1. */
  concurrency?: number;
  /** Mean gap between fault starts (ms); default 400. */
  meanGapMs?: number;
  /** Time a node needs after a fault is undone before it counts as free again (ms); default 600. */
  settleMs?: number;
  /** Kinds the target cannot do (the netns dataplane cannot add nodes). */
  exclude?: readonly FaultKind[];
  /** Only these kinds (a short run of some faults); default all. */
  only?: readonly FaultKind[];
  /** etcd's election timeout (ms); default 1000. An etcd leader stop lasts longer than it. */
  etcdElectionMs?: number;
}

/** mulberry32: a small, fast, seedable PRNG with 32-bit state. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WEIGHTS: Record<FaultKind, number> = {
  kill: 18,
  killLeader: 8,
  stopShort: 14,
  stopLong: 10,
  partitionShort: 12,
  partitionLong: 10,
  drain: 8,
  terminate: 6,
  restart: 6,
  addNode: 6,
  etcdMember: 10,
  etcdLeaderStop: 6,
  specChange: 5,
  duplicateId: 4,
  backendFault: 8,
};

/** Leave at least two nodes unfaulted, and fault at most half of them at once. */
export function defaultConcurrency(agents: number): number {
  return Math.max(1, Math.min(agents - 2, Math.ceil(agents / 2)));
}

/** How long a fault of this kind lasts, drawn from its range (ms). */
export function holdRange(kind: FaultKind, ttlMs: number, etcdElectionMs = 1000): [number, number] {
  switch (kind) {
    case 'kill':
    case 'killLeader':
      return [100, 1500];
    case 'stopShort':
      // Shorter than the TTL by a margin, so the lease survives and the node resumes with it.
      return [50, Math.max(60, ttlMs - 400)];
    case 'stopLong':
      return [ttlMs + 300, ttlMs + 1500];
    case 'partitionShort':
      return [50, Math.max(60, ttlMs - 400)];
    case 'partitionLong':
      return [ttlMs + 300, ttlMs + 1500];
    case 'drain':
      return [300, 2000];
    case 'terminate':
      return [0, 1000];
    case 'restart':
      return [0, 0];
    case 'addNode':
      return [1000, 4000];
    case 'etcdMember':
      return [300, 3000];
    case 'etcdLeaderStop':
      return [etcdElectionMs + 300, etcdElectionMs * 2 + 500];
    case 'specChange':
      return [500, 3000];
    case 'duplicateId':
      // The slot the clone takes while it starts and refuses (run.ts waits up to 15 s for its exit).
      return [2000, 2000];
    case 'backendFault':
      return [500, 4000];
  }
}

export function planSchedule(opts: ScheduleOptions): PlannedFault[] {
  if (opts.faults === undefined && opts.durationMs === undefined) throw new Error('planSchedule: faults or durationMs');
  const rnd = mulberry32(opts.seed);
  const kinds = FAULT_KINDS.filter(
    (k) =>
      (!ETCD_KINDS.includes(k) || opts.etcdMembers === 3) &&
      !(opts.exclude ?? []).includes(k) &&
      (opts.only === undefined || opts.only.includes(k)),
  );
  if (kinds.length === 0) throw new Error('planSchedule: no fault kind left');
  const total = kinds.reduce((s, k) => s + WEIGHTS[k], 0);
  const concurrency = opts.concurrency ?? defaultConcurrency(opts.agents);
  const meanGap = opts.meanGapMs ?? 400;
  const settle = opts.settleMs ?? 600;
  // When each node-fault slot and the etcd slot are free again.
  const slots = new Array<number>(concurrency).fill(0);
  let etcdFree = 0;
  let clusterFree = 0;
  const out: PlannedFault[] = [];
  let t = 1000;
  const maxFaults = opts.faults ?? Number.MAX_SAFE_INTEGER;
  while (out.length < maxFaults) {
    // Exponential gaps (a Poisson process), capped so one draw cannot stall the run.
    t += Math.min(meanGap * 5, -Math.log(1 - rnd()) * meanGap);
    let r = rnd() * total;
    let kind: FaultKind = kinds[kinds.length - 1]!;
    for (const k of kinds) {
      r -= WEIGHTS[k];
      if (r < 0) {
        kind = k;
        break;
      }
    }
    const [lo, hi] = holdRange(kind, opts.ttlMs, opts.etcdElectionMs);
    const holdMs = Math.round(lo + rnd() * (hi - lo));
    const pick = rnd();
    let at: number;
    if (ETCD_KINDS.includes(kind)) {
      at = Math.max(t, etcdFree);
      etcdFree = at + holdMs + 2000;
    } else if (CLUSTER_KINDS.includes(kind)) {
      at = Math.max(t, clusterFree);
      clusterFree = at + holdMs + 2000;
    } else {
      const i = slots.indexOf(Math.min(...slots));
      at = Math.max(t, slots[i]!);
      slots[i] = at + holdMs + settle;
    }
    if (opts.durationMs !== undefined && at > opts.durationMs) break;
    t = Math.max(t, at);
    out.push({ seq: out.length + 1, atMs: Math.round(at), kind, holdMs, pick });
  }
  return out.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq).map((f, i) => ({ ...f, seq: i + 1 }));
}
