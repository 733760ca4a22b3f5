import type { HeldBuckets } from '../backends/backend.js';
import type { ClusterSpec } from '../config/types.js';
import type { AssignEntry, ClaimEntry } from '../etcd/store.js';
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

export interface ClaimInputs {
  me: string;
  leaseId: string | null;
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
}

export interface ClaimPlan {
  kernelRemove: (BucketRef & { reason: ReleaseReason })[];
  /** Kernel entries beyond the VIP's bucket count: the backend refuses them, so they leave the model only. */
  kernelForget: BucketRef[];
  claimDelete: (BucketRef & { reason: ReleaseReason })[];
  acquire: BucketRef[];
  kernelAdd: BucketRef[];
  blocked: (BucketRef & { reason: AcquireBlock; holder?: string })[];
}

export function bucketKey(vip: string, bucket: number): string {
  return `${vip}#${bucket}`;
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
  const vips = new Map((i.spec?.vips ?? []).map((v) => [v.address, v.buckets]));

  const desired = new Set<string>();
  if (!i.releaseAll) {
    for (const [vip, a] of i.assignments) {
      const n = vips.get(vip);
      if (n === undefined) continue;
      // Owners numbered for another bucket count than our kernel rule uses: not ours to act on (new space).
      // (Values of older leaders carry no count; the leader replaces them on its first write.)
      if (a.value.buckets !== undefined && a.value.buckets !== n) continue;
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

  // Kernel entries: keep only desired buckets we hold a claim for.
  for (const [vip, set] of i.kernel) {
    for (const bucket of [...set].sort((a, b) => a - b)) {
      const k = bucketKey(vip, bucket);
      if (desired.has(k) && mine(vip, bucket)) continue;
      const reason = releaseReason(vip);
      const n = vips.get(vip);
      if (n !== undefined && bucket > n) {
        // No client hashes to it any more, so nobody can be served twice through it.
        plan.kernelForget.push({ vip, bucket });
        if (mine(vip, bucket)) plan.claimDelete.push({ vip, bucket, reason });
        continue;
      }
      plan.kernelRemove.push({ vip, bucket, reason });
      if (mine(vip, bucket) && !desired.has(k)) plan.claimDelete.push({ vip, bucket, reason });
    }
  }
  // Our claims without a kernel entry that we no longer want.
  for (const [vip, m] of i.claims) {
    for (const [bucket] of [...m].sort((a, b) => a[0] - b[0])) {
      if (!mine(vip, bucket) || desired.has(bucketKey(vip, bucket))) continue;
      if (i.kernel.get(vip)?.has(bucket)) continue; // handled above, after its kernel removal
      plan.claimDelete.push({ vip, bucket, reason: releaseReason(vip) });
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
      else plan.kernelAdd.push({ vip, bucket });
    } else if (c) {
      plan.blocked.push({ vip, bucket, reason: 'heldByOther', holder: c.owner });
    } else if (!i.live) {
      plan.blocked.push({ vip, bucket, reason: 'fenced' });
    } else if (i.backendBlocked) {
      plan.blocked.push({ vip, bucket, reason: 'backendFailed' });
    } else {
      plan.acquire.push({ vip, bucket });
    }
  }
  return plan;
}
