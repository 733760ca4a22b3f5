// Who may own buckets, and what "balanced" means — the precise definitions the planner and its tests share.
//
// Pool. Eligible owners are live nodes that are not draining. Among them, nodes with weight > 0 form the
// "weighted" pool; weight-0 nodes are standby and receive buckets only when no weighted node is eligible
// (then the "standby" pool shares them equally, as if each had weight 1). While the pool is weighted, a
// standby node is "hold-only": it keeps buckets it already holds until the join policy moves them (ideal 0).
// A weight that is not a finite number >= 0 counts as 0. Draining nodes never receive buckets, even when
// nobody else could: drain means hand off everything, and a drained last node leaves its buckets unowned.
//
// Weighted ideal. With N buckets and pool weights w_i summing to W, node i's ideal share is q_i = N·w_i/W
// (hold-only nodes: 0). Its deviation is d_i = L_i − q_i, L_i its bucket count. The planner works with
// D_i = d_i·W = L_i·W − N·w_i, an exact integer for integer weights, so levels compare exactly.
//
// "Within one bucket of the weighted ideal" means |d_i| < 1 for every holder, i.e. L_i ∈ {⌊q_i⌋, ⌈q_i⌉}
// (exactly q_i when q_i is an integer, 0 for hold-only nodes), i.e. |D_i| < W. Such an assignment always
// exists because Σ⌊q_i⌋ ≤ N ≤ Σ⌈q_i⌉, and the join policy (plan.ts) reaches it with the fewest moves.

export interface PlannerNode {
  id: string;
  /** Relative share; 0 = standby. */
  weight: number;
  draining: boolean;
}

export type PoolKind = 'weighted' | 'standby' | 'none';

/** Eligible nodes in a compact, order-independent form: index = rank of the id in ascending order. */
export interface Pool {
  kind: PoolKind;
  /** Live, non-draining node ids, sorted ascending. */
  ids: string[];
  index: Map<string, number>;
  /** Effective weight per index: the pool weight, or 0 for a hold-only node. */
  weight: Float64Array;
  /** 1 when the node may receive buckets (pool member), 0 when hold-only. */
  receives: Uint8Array;
  /** W, the sum of pool weights. */
  total: number;
  /** Every live node (draining or not) by id, merged. */
  live: Map<string, PlannerNode>;
}

function effectiveWeight(w: number): number {
  return Number.isFinite(w) && w > 0 ? w : 0;
}

/**
 * One entry per id, independent of array order: a node listed twice is draining if any entry says so, with
 * the largest weight.
 */
export function mergeNodes(nodes: readonly PlannerNode[]): Map<string, PlannerNode> {
  const out = new Map<string, PlannerNode>();
  for (const n of nodes) {
    const prev = out.get(n.id);
    const weight = effectiveWeight(n.weight);
    out.set(
      n.id,
      prev
        ? { id: n.id, weight: Math.max(prev.weight, weight), draining: prev.draining || n.draining }
        : { id: n.id, weight, draining: n.draining },
    );
  }
  return out;
}

export function buildPool(nodes: readonly PlannerNode[]): Pool {
  const live = mergeNodes(nodes);
  const ids: string[] = [];
  let anyWeighted = false;
  for (const n of live.values()) {
    if (n.draining) continue;
    ids.push(n.id);
    if (n.weight > 0) anyWeighted = true;
  }
  ids.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const index = new Map<string, number>();
  const weight = new Float64Array(ids.length);
  const receives = new Uint8Array(ids.length);
  let total = 0;
  ids.forEach((id, i) => {
    index.set(id, i);
    const w = anyWeighted ? live.get(id)!.weight : 1;
    weight[i] = w;
    receives[i] = w > 0 ? 1 : 0;
    total += w;
  });
  const kind: PoolKind = ids.length === 0 ? 'none' : anyWeighted ? 'weighted' : 'standby';
  return { kind, ids, index, weight, receives, total, live };
}

/** D_i = L_i·W − N·w_i. */
export function scaledDeviation(pool: Pool, buckets: number, i: number, load: number): number {
  return load * pool.total - buckets * pool.weight[i]!;
}

/** True when every eligible node is within one bucket of its weighted ideal (|D_i| < W). */
export function isBalanced(pool: Pool, buckets: number, loads: ArrayLike<number>): boolean {
  for (let i = 0; i < pool.ids.length; i++) {
    if (Math.abs(scaledDeviation(pool, buckets, i, loads[i]!)) >= pool.total) return false;
  }
  return true;
}
