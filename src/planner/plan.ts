import type { ClusterSpec } from '../config/types.js';
import { buildPool, isBalanced, scaledDeviation, type PlannerNode, type Pool, type PoolKind } from './balance.js';
import { LoadLevels, type Level } from './levels.js';
import { bucketKey, nodeKey, pairScore } from './rendezvous.js';

/** Why the planner moved a bucket (a closed union: it flows into logs and metrics). */
export type MoveReason = 'ownerDead' | 'ownerDraining' | 'rebalanceJoin' | 'unassigned';

// The pure planner (DESIGN §6): (VIP, live nodes, current owners) → next owners + the moves, each with a
// reason. No I/O, clock or randomness: the same input gives the same output whatever the order of the node
// array or of the current map, so a new leader recomputes exactly what the old one would have.
//
// 1. Keep every bucket whose owner is live and not draining (pool member or hold-only standby, balance.ts).
// 2. Orphans — owner dead (absent from `nodes`), draining, or none — go one by one, in bucket order, to the
//    pool node with the least load for its weight (lowest D_i); ties go to the highest rendezvous score of
//    vip#bucket#node. With no pool node they stay unassigned.
// 3. Join policy, at most `joinMoveBudget` moves: one bucket from the holder with the highest D to the pool
//    node with the lowest D, but only while one of the two is outside its band (D_src ≥ W or D_dst ≤ −W).
//    Each such move lowers the fewest moves still needed to reach the band by exactly one, so the policy
//    never moves more buckets than necessary, and moves nothing once every node is within one bucket of its
//    weighted ideal. (The tempting "move while D_src − D_dst > W" can move buckets between two nodes that
//    are both already within their band when weights differ.)

export type { PlannerNode, PoolKind } from './balance.js';

export interface Move {
  bucket: number;
  /** Previous owner; null when the bucket had none. */
  from: string | null;
  /** New owner; null when no node may own it. */
  to: string | null;
  reason: MoveReason;
}

export interface VipPlanInput {
  /** VIP address (part of the rendezvous key). */
  vip: string;
  /** Bucket count N; buckets are 1..N. Entries of `current` outside 1..N are ignored. */
  buckets: number;
  /** The live nodes (a node not listed is dead). */
  nodes: readonly PlannerNode[];
  current: ReadonlyMap<number, string>;
  /** Most rebalanceJoin moves this call may make; 0 = never move buckets of eligible owners. */
  joinMoveBudget: number;
}

export interface VipPlan {
  owners: Map<number, string>;
  /** Orphan moves in bucket order, then join moves in the order made; a bucket appears at most once. */
  moves: Move[];
  /** Every eligible node is within one bucket of its weighted ideal: more calls would make no join move. */
  balanced: boolean;
  pool: PoolKind;
}

export function planVip(input: VipPlanInput): VipPlan {
  return planWithPool(input, buildPool(input.nodes));
}

function planWithPool(input: VipPlanInput, pool: Pool): VipPlan {
  const n = Number.isFinite(input.buckets) ? Math.max(0, Math.floor(input.buckets)) : 0;
  const budget = Number.isNaN(input.joinMoveBudget) ? 0 : Math.max(0, input.joinMoveBudget);
  const count = pool.ids.length;

  const ownerOf = new Int32Array(n + 1).fill(-1); // bucket → node index, -1 = none
  const loads = new Int32Array(count);
  const moved = new Uint8Array(n + 1); // a bucket moves at most once per plan
  const moves: Move[] = [];
  const orphans: { bucket: number; from: string | null; reason: MoveReason }[] = [];
  for (let b = 1; b <= n; b++) {
    const owner = input.current.get(b);
    const i = owner === undefined ? undefined : pool.index.get(owner);
    if (i !== undefined) {
      ownerOf[b] = i;
      loads[i]!++;
    } else if (owner === undefined) {
      orphans.push({ bucket: b, from: null, reason: 'unassigned' });
    } else {
      orphans.push({ bucket: b, from: owner, reason: pool.live.has(owner) ? 'ownerDraining' : 'ownerDead' });
    }
  }

  const level = (i: number): number => scaledDeviation(pool, n, i, loads[i]!);
  const receivers = new LoadLevels(); // pool members: destinations
  const holders = new LoadLevels(); // every eligible node: sources
  for (let i = 0; i < count; i++) {
    holders.set(i, level(i));
    if (pool.receives[i]) receivers.set(i, level(i));
  }
  const relevel = (i: number): void => {
    holders.set(i, level(i));
    if (pool.receives[i]) receivers.set(i, level(i));
  };
  // Both sides of the rendezvous score, hashed on first use (a death touches only a few nodes and buckets).
  const nodeKeys = new Uint32Array(count);
  const nodeKeyed = new Uint8Array(count);
  const keyOf = (i: number): number => {
    if (!nodeKeyed[i]) {
      nodeKeys[i] = nodeKey(pool.ids[i]!);
      nodeKeyed[i] = 1;
    }
    return nodeKeys[i]!;
  };
  const bucketKeys = new Uint32Array(n + 1);
  const bucketKeyed = new Uint8Array(n + 1);
  const bucketKeyOf = (b: number): number => {
    if (!bucketKeyed[b]) {
      bucketKeys[b] = bucketKey(input.vip, b);
      bucketKeyed[b] = 1;
    }
    return bucketKeys[b]!;
  };

  // 2. Orphans.
  for (const o of orphans) {
    const least = receivers.lowest();
    if (!least) {
      if (o.from !== null) moves.push({ bucket: o.bucket, from: o.from, to: null, reason: o.reason });
      continue;
    }
    const bk = bucketKeyOf(o.bucket);
    let best = -1;
    let bestScore = 0;
    for (const i of least.ids) {
      const s = pairScore(bk, keyOf(i));
      if (best < 0 || s > bestScore || (s === bestScore && i < best)) [best, bestScore] = [i, s];
    }
    ownerOf[o.bucket] = best;
    moved[o.bucket] = 1;
    loads[best]!++;
    relevel(best);
    moves.push({ bucket: o.bucket, from: o.from, to: pool.ids[best]!, reason: o.reason });
  }

  // 3. Join policy.
  for (let made = 0; made < budget; made++) {
    const top = holders.highest();
    const dst = receivers.lowest();
    if (!top || !dst) break;
    const outOfBand = top.level >= pool.total || dst.level <= -pool.total;
    if (!outOfBand || top.level <= 0 || dst.level >= 0) break;
    const src = smallest(top.ids);
    const pick = pickJoinMove(n, ownerOf, moved, src, dst, keyOf, bucketKeyOf);
    if (!pick) break;
    ownerOf[pick.bucket] = pick.to;
    moved[pick.bucket] = 1;
    loads[src]!--;
    loads[pick.to]!++;
    relevel(src);
    relevel(pick.to);
    moves.push({ bucket: pick.bucket, from: pool.ids[src]!, to: pool.ids[pick.to]!, reason: 'rebalanceJoin' });
  }

  const owners = new Map<number, string>();
  for (let b = 1; b <= n; b++) if (ownerOf[b]! >= 0) owners.set(b, pool.ids[ownerOf[b]!]!);
  return { owners, moves, balanced: isBalanced(pool, n, loads), pool: pool.kind };
}

function smallest(ids: ReadonlySet<number>): number {
  let m = Number.POSITIVE_INFINITY;
  for (const i of ids) if (i < m) m = i;
  return m;
}

// Which of the source's buckets goes to which least-loaded node: the pair with the highest rendezvous score
// (ties: smaller node, then smaller bucket), so a moved bucket lands where the hash prefers it. A bucket
// already moved in this plan stays put (an orphan just placed is never bounced on in the same call).
function pickJoinMove(
  n: number,
  ownerOf: Int32Array,
  moved: Uint8Array,
  src: number,
  dst: Level,
  keyOf: (i: number) => number,
  bucketKeyOf: (b: number) => number,
): { bucket: number; to: number } | undefined {
  const cands = [...dst.ids];
  const candKeys = cands.map(keyOf);
  let bestBucket = -1;
  let bestTo = -1;
  let bestScore = 0;
  for (let b = 1; b <= n; b++) {
    if (ownerOf[b] !== src || moved[b]) continue;
    const bk = bucketKeyOf(b);
    for (let c = 0; c < cands.length; c++) {
      const s = pairScore(bk, candKeys[c]!);
      const i = cands[c]!;
      if (bestBucket < 0 || s > bestScore || (s === bestScore && i < bestTo)) {
        bestBucket = b;
        bestTo = i;
        bestScore = s;
      }
    }
  }
  return bestBucket < 0 ? undefined : { bucket: bestBucket, to: bestTo };
}

/** Current owners of every VIP: vip address → bucket → node id. */
export type ClusterAssignment = ReadonlyMap<string, ReadonlyMap<number, string>>;

/**
 * Plans every VIP of the spec independently: each VIP is its own bucket space, so `joinMoveBudget` applies
 * per VIP. VIPs in `current` but not in the spec are not planned: the caller deletes their assignment.
 */
export function planCluster(
  spec: ClusterSpec,
  nodes: readonly PlannerNode[],
  current: ClusterAssignment,
  joinMoveBudget: number,
): Map<string, VipPlan> {
  const out = new Map<string, VipPlan>();
  const pool = buildPool(nodes); // the same nodes for every VIP: sort and index them once
  for (const v of spec.vips) {
    const plan = planWithPool(
      {
        vip: v.address,
        buckets: v.buckets,
        nodes,
        current: current.get(v.address) ?? new Map(),
        joinMoveBudget,
      },
      pool,
    );
    out.set(v.address, plan);
  }
  return out;
}
