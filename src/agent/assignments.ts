import type { ClusterSpec } from '../config/types.js';
import type { AssignValue } from '../etcd/values.js';
import { hashIdentity, sameHashIdentity } from '../hash/identity.js';
import { planVip, type Move, type PlannerNode } from '../planner/index.js';

// The leader's pure step: from the picture (spec, live nodes, current assignments) and the join budget left in
// this interval, which `assign/<vip>` values to write and which to delete. Writes happen only when the owners
// really change, so the leader's own write coming back through the watch plans to "nothing to do".

export interface CurrentAssignment {
  epoch: number;
  owners: ReadonlyMap<number, string>;
  /** The bucket count the owners are numbered for (see bucketSpaceOf). */
  buckets?: number;
  /** The hash identity the owners are numbered for (DESIGN §12); absent in values of older leaders. */
  hash?: string;
}

/** The parts of a stored value the leader plans from. */
export function currentFromValue(v: AssignValue): CurrentAssignment {
  return {
    epoch: v.epoch,
    owners: ownersFromValue(v),
    ...(v.buckets !== undefined ? { buckets: v.buckets } : {}),
    ...(v.hash !== undefined ? { hash: v.hash } : {}),
  };
}

/**
 * The bucket count an assignment is for: its `buckets` field, else (values of older leaders) the highest
 * assigned bucket; undefined when it cannot tell (no owners).
 */
export function bucketSpaceOf(a: {
  buckets?: number | undefined;
  owners: ReadonlyMap<number, string>;
}): number | undefined {
  if (a.buckets !== undefined) return a.buckets;
  let max = 0;
  for (const b of a.owners.keys()) if (b > max) max = b;
  return max === 0 ? undefined : max;
}

export interface AssignmentInput {
  leader: string;
  spec: ClusterSpec;
  nodes: readonly PlannerNode[];
  current: ReadonlyMap<string, CurrentAssignment>;
  /** rebalanceJoin moves still allowed per VIP in this interval (missing = the policy's full k). */
  joinBudgetLeft: (vip: string) => number;
  /** VIPs whose stored assignment is unreadable (bad value): rewrite even when the owners did not change. */
  rewrite?: ReadonlySet<string>;
  /** Claims that exist for a VIP (any owner). A VIP whose hash identity changed is assigned only at 0. */
  claimsLeft?: (vip: string) => number;
}

export interface AssignmentWrite {
  vip: string;
  value: AssignValue;
  moves: Move[];
  joinMoves: number;
  /** The write empties the VIP for a change of hash identity (DESIGN §12). */
  barrier: boolean;
}

export interface AssignmentPlan {
  writes: AssignmentWrite[];
  /** VIPs with an assignment but no longer in the spec. */
  deletes: string[];
  /** Some VIP would make more join moves with more budget (re-plan when the interval rolls over). */
  wantsMoreJoinMoves: boolean;
}

export function ownersFromValue(v: AssignValue): Map<number, string> {
  const m = new Map<number, string>();
  for (const [b, n] of Object.entries(v.owners)) m.set(Number(b), n);
  return m;
}

function sameOwners(a: ReadonlyMap<number, string>, b: ReadonlyMap<number, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

export function planAssignments(input: AssignmentInput): AssignmentPlan {
  const writes: AssignmentWrite[] = [];
  let wantsMore = false;
  const inSpec = new Set<string>();
  for (const vip of input.spec.vips) {
    inSpec.add(vip.address);
    const cur = input.current.get(vip.address);
    // A new hash identity (bucket count, hash mode, seed) is a new bucket space: the same number means other
    // clients, and nodes switch rules at different moments. Empty the assignment first; assign under the new
    // identity once no claim is left (DESIGN §12).
    const hash = hashIdentity(vip);
    if (cur && !sameHashIdentity({ hash: cur.hash, buckets: bucketSpaceOf(cur) }, vip)) {
      writes.push({
        vip: vip.address,
        value: { v: 1, epoch: cur.epoch + 1, leader: input.leader, owners: {}, buckets: vip.buckets, hash },
        moves: [],
        joinMoves: 0,
        barrier: true,
      });
      continue;
    }
    if (cur && cur.owners.size === 0 && (input.claimsLeft?.(vip.address) ?? 0) > 0) continue;
    const currentOwners = cur?.owners ?? new Map<number, string>();
    const budget = Math.max(0, input.joinBudgetLeft(vip.address));
    const plan = planVip({
      vip: vip.address,
      buckets: vip.buckets,
      nodes: input.nodes,
      current: currentOwners,
      joinMoveBudget: budget,
    });
    const joinMoves = plan.moves.filter((m) => m.reason === 'rebalanceJoin').length;
    if (!plan.balanced && joinMoves >= budget) wantsMore = true;
    if (
      cur &&
      sameOwners(plan.owners, currentOwners) &&
      cur.buckets === vip.buckets &&
      cur.hash === hash &&
      !input.rewrite?.has(vip.address)
    )
      continue;
    const owners: Record<string, string> = {};
    for (const [b, n] of [...plan.owners].sort((x, y) => x[0] - y[0])) owners[String(b)] = n;
    writes.push({
      vip: vip.address,
      value: { v: 1, epoch: (cur?.epoch ?? 0) + 1, leader: input.leader, owners, buckets: vip.buckets, hash },
      moves: plan.moves,
      joinMoves,
      barrier: false,
    });
  }
  const deletes = [...input.current.keys()].filter((v) => !inSpec.has(v));
  return { writes, deletes, wantsMoreJoinMoves: wantsMore };
}
