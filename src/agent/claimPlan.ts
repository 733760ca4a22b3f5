import type { HeldBuckets } from '../backends/backend.js';
import type { ClusterSpec } from '../config/types.js';
import type { AssignEntry, ClaimEntry } from '../etcd/store.js';
import { sameHashIdentity } from '../hash/identity.js';
import type { AcquireBlock, ReleaseReason } from './events.js';

// The per-node reconciler's pure step (DESIGN §5). Inputs: what the assignment wants of this node, the claims as
// this node knows them, and what the kernel holds. Output: what to remove from the kernel, which claims to
// delete (only after their kernel removal), which buckets to claim (then add), and which to add for claims we
// already hold. Invariant kept by construction: nothing is added to the kernel without a claim under our lease,
// and no claim of ours is deleted while the kernel still holds its bucket.

export interface BucketRef {
  vip: string;
  bucket: number;
}

/** A node with a node key, as this node sees it: the lease its key lives under and whether it drains. */
export interface Peer {
  lease: string;
  draining: boolean;
}

/** Hand a released claim straight to its assignee: one txn replaces our claim by theirs (see `handoffTo`). */
export interface Handoff {
  node: string;
  lease: string;
}

export type NoHandoff = 'shutdown' | 'unassigned' | 'assigneeNotLive' | 'assigneeDraining';

export interface ClaimInputs {
  me: string;
  leaseId: string | null;
  /** Nodes with a node key (us included), for handoffs. */
  peers: ReadonlyMap<string, Peer>;
  spec: ClusterSpec | null;
  assignments: ReadonlyMap<string, AssignEntry>;
  claims: ReadonlyMap<string, ReadonlyMap<number, ClaimEntry>>;
  kernel: HeldBuckets;
  /** Session live (not fenced, not replacing its lease): acquiring allowed. */
  live: boolean;
  /** Shutting down past the handoff: release everything. */
  releaseAll: boolean;
  /** This node is draining: releases are handoffs away from it. */
  draining: boolean;
  /** Backend failures back off: no acquire until then. */
  backendBlocked: boolean;
  /**
   * The spec our kernel runs is the `spec` key's current value in our picture (same mod revision). Otherwise a
   * newer spec is on its way to the kernel and nothing is added until it is there (DESIGN §12): the acquire txn
   * would fail its spec compare anyway, and a bucket handed to us may mean other clients under the new hash.
   */
  specCurrent: boolean;
}

export interface ClaimPlan {
  kernelRemove: (BucketRef & { reason: ReleaseReason })[];
  /** Kernel entries beyond the VIP's bucket count: the backend refuses them, so they leave the model only. */
  kernelForget: BucketRef[];
  /** With `handoff`, the claim is not deleted but replaced by the assignee's in the same txn. */
  claimDelete: (BucketRef & { reason: ReleaseReason; handoff?: Handoff })[];
  acquire: BucketRef[];
  kernelAdd: BucketRef[];
  blocked: (BucketRef & { reason: AcquireBlock; holder?: string })[];
}

export function bucketKey(vip: string, bucket: number): string {
  return `${vip}#${bucket}`;
}

/**
 * Who a claim we give up may go to directly. Safe because the txn that does it compares our value and lease (only
 * the owner can hand over, atomically: the key never has two owners), runs only after our kernel removal was
 * confirmed, and binds the claim to the assignee's live lease (a dead one fails the whole txn); the assignee adds
 * the bucket to its kernel only for a claim of its own under its current lease, as after its own acquire. It
 * saves the assignee's acquire txn: one etcd commit less in every planned move.
 */
export function handoffTo(i: ClaimInputs, vip: string, bucket: number): Handoff | NoHandoff {
  if (i.releaseAll) return 'shutdown';
  const a = i.assignments.get(vip);
  const spec = i.spec?.vips.find((v) => v.address === vip);
  if (!a || spec === undefined || !sameHashIdentity(a.value, spec)) return 'unassigned';
  const to = a.value.owners[String(bucket)];
  if (to === undefined || to === i.me) return 'unassigned';
  const peer = i.peers.get(to);
  // A node key without a lease (written by hand) is no live node, and a claim put under lease 0 has none either.
  if (!peer || peer.lease === '0') return 'assigneeNotLive';
  if (peer.draining) return 'assigneeDraining';
  return { node: to, lease: peer.lease };
}

/**
 * Why our acquire txn `If(Create(claim) == 0 ∧ Mod(spec) == applied) Then Put` failed, from what its else branch
 * read in the same revision: the spec moved on past the one our kernel runs (retry once it is applied; a claim
 * taken now would number clients by our old hash while others use the new one, DESIGN §12), else somebody holds
 * the claim (the watch brings its delete).
 */
export function acquireRefusal(r: {
  /** The spec key's mod revision as the failed txn read it (null: no spec key). */
  specModRevision: string | null;
  appliedSpecModRevision: string;
}): 'specStale' | 'heldByOther' {
  return r.specModRevision === r.appliedSpecModRevision ? 'heldByOther' : 'specStale';
}

export function planClaims(i: ClaimInputs): ClaimPlan {
  const plan: ClaimPlan = {
    kernelRemove: [],
    kernelForget: [],
    claimDelete: [],
    acquire: [],
    kernelAdd: [],
    blocked: [],
  };
  const vips = new Map((i.spec?.vips ?? []).map((v) => [v.address, v]));

  const desired = new Set<string>();
  if (!i.releaseAll) {
    for (const [vip, a] of i.assignments) {
      const spec = vips.get(vip);
      if (spec === undefined) continue;
      // Owners numbered under another hash identity than our kernel rule's: not ours to act on (DESIGN §12).
      if (!sameHashIdentity(a.value, spec)) continue;
      const n = spec.buckets;
      for (const [b, owner] of Object.entries(a.value.owners)) {
        const bucket = Number(b);
        if (owner === i.me && bucket >= 1 && bucket <= n) desired.add(bucketKey(vip, bucket));
      }
    }
  }
  const mine = (vip: string, bucket: number): boolean => {
    const c = i.claims.get(vip)?.get(bucket);
    return c !== undefined && c.owner === i.me && i.leaseId !== null && c.lease === i.leaseId;
  };
  const releaseReason = (vip: string): ReleaseReason =>
    i.releaseAll ? 'shutdown' : !vips.has(vip) ? 'vipRemoved' : i.draining ? 'draining' : 'notAssigned';
  const release = (vip: string, bucket: number, reason: ReleaseReason): ClaimPlan['claimDelete'][number] => {
    const h = handoffTo(i, vip, bucket);
    return typeof h === 'string' ? { vip, bucket, reason } : { vip, bucket, reason, handoff: h };
  };

  // Kernel entries: keep only desired buckets we hold a claim for.
  for (const [vip, set] of i.kernel) {
    for (const bucket of [...set].sort((a, b) => a - b)) {
      const k = bucketKey(vip, bucket);
      if (desired.has(k) && mine(vip, bucket)) continue;
      const reason = releaseReason(vip);
      const n = vips.get(vip)?.buckets;
      if (n !== undefined && bucket > n) {
        // No client hashes to it any more, so nobody can be served twice through it.
        plan.kernelForget.push({ vip, bucket });
        if (mine(vip, bucket)) plan.claimDelete.push({ vip, bucket, reason });
        continue;
      }
      plan.kernelRemove.push({ vip, bucket, reason });
      if (mine(vip, bucket) && !desired.has(k)) plan.claimDelete.push(release(vip, bucket, reason));
    }
  }
  // Our claims without a kernel entry that we no longer want.
  for (const [vip, m] of i.claims) {
    for (const [bucket] of [...m].sort((a, b) => a[0] - b[0])) {
      if (!mine(vip, bucket) || desired.has(bucketKey(vip, bucket))) continue;
      if (i.kernel.get(vip)?.has(bucket)) continue; // handled above, after its kernel removal
      plan.claimDelete.push(release(vip, bucket, releaseReason(vip)));
    }
  }
  // Desired buckets.
  for (const k of [...desired].sort()) {
    const [vip, b] = k.split('#') as [string, string];
    const bucket = Number(b);
    const inKernel = i.kernel.get(vip)?.has(bucket) ?? false;
    const c = i.claims.get(vip)?.get(bucket);
    if (mine(vip, bucket)) {
      if (inKernel) continue;
      if (!i.live) plan.blocked.push({ vip, bucket, reason: 'fenced' });
      else if (i.backendBlocked) plan.blocked.push({ vip, bucket, reason: 'backendFailed' });
      else if (!i.specCurrent) plan.blocked.push({ vip, bucket, reason: 'specStale' });
      else plan.kernelAdd.push({ vip, bucket });
    } else if (c) {
      plan.blocked.push({ vip, bucket, reason: 'heldByOther', holder: c.owner });
    } else if (!i.live) {
      plan.blocked.push({ vip, bucket, reason: 'fenced' });
    } else if (i.backendBlocked) {
      plan.blocked.push({ vip, bucket, reason: 'backendFailed' });
    } else if (!i.specCurrent) {
      plan.blocked.push({ vip, bucket, reason: 'specStale' });
    } else {
      plan.acquire.push({ vip, bucket });
    }
  }
  return plan;
}
