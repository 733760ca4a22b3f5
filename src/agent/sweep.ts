import { parseKey, type Keys } from '../etcd/keys.js';
import { CLAIM_WITHOUT_LEASE, NODE_WITHOUT_LEASE, type ClusterState } from '../etcd/store.js';

// The leader's sweep, pure: keys that nobody else will ever remove and that block the cluster while they stay
// (a node key that counts as live forever, a claim nobody serves that nobody else may take). Each is judged by
// what it has been for a while, not at one instant: a state the protocol passes through (a node re-registering,
// a lease about to expire with everything under it) must never be swept, and a claim only once no node reports
// its bucket in the kernel (its former owner lets go first: the bucket is never served twice on the way).

/** Why the leader deletes a key. */
export type SweepReason =
  /** An election key not under the lease its name says: no candidate, but it may sort first forever. */
  | 'electionKeyInvalid'
  /** A node key outside any lease: it would count as a live node forever. */
  | 'nodeWithoutLease'
  /** A claim key whose value is not a node id, or outside any lease: nobody can claim the bucket. */
  | 'claimUnreadable'
  /** A claim naming a node that has no node key under the claim's lease: nobody serves it. */
  | 'claimGhost';

/** Why a key to be swept is left for now. */
export type SweepWait =
  /** Not yet so for `holdMs`: it may be a state the protocol passes through. */
  | 'holding'
  /** A node still reports the bucket in its kernel: it lets go first (kernel ⊆ claims), then we delete. */
  | 'heldInKernel';

export type SweepDecision = { key: string; modRevision: string; detail: string } & (
  { action: 'delete'; reason: SweepReason } | { action: 'wait'; reason: SweepWait; sweep: SweepReason }
);

export interface SweepInputs {
  state: ClusterState;
  keys: Keys;
  /** Monotonic ms now. */
  now: number;
  /** `key@modRevision` → when the leader first saw it as sweepable (from the previous call). */
  since: ReadonlyMap<string, number>;
  /**
   * How long a ghost claim must stay one before it goes: longer than a lease TTL, since a lease about to expire
   * with its node key gone first looks alike for a moment. Values no agent ever writes (garbage, a key outside
   * any lease) wait BAD_VALUE_HOLD_MS, one status interval, for the statuses to show who still holds a bucket.
   */
  holdMs: number;
}

export interface SweepPlan {
  decisions: SweepDecision[];
  /** The `since` to pass next time: only what is still sweepable. */
  since: Map<string, number>;
}

export const BAD_VALUE_HOLD_MS = 1000;

export function sweepId(key: string, modRevision: string): string {
  return `${key}@${modRevision}`;
}

export function planSweep(i: SweepInputs): SweepPlan {
  const { state, keys } = i;
  const decisions: SweepDecision[] = [];
  const since = new Map<string, number>();
  const judge = (
    key: string,
    modRevision: string,
    reason: SweepReason,
    detail: string,
    claim?: { vip: string; bucket: number },
  ): void => {
    const id = sweepId(key, modRevision);
    const first = i.since.get(id) ?? i.now;
    since.set(id, first);
    const hold = reason === 'claimGhost' ? i.holdMs : reason === 'electionKeyInvalid' ? 0 : BAD_VALUE_HOLD_MS;
    if (i.now - first < hold) {
      decisions.push({ action: 'wait', reason: 'holding', sweep: reason, key, modRevision, detail });
      return;
    }
    const holder = claim
      ? [...state.statuses].find(([, s]) => s.held[claim.vip]?.includes(claim.bucket))?.[0]
      : undefined;
    if (holder !== undefined) {
      decisions.push({
        action: 'wait',
        reason: 'heldInKernel',
        sweep: reason,
        key,
        modRevision,
        detail: `${detail}; ${holder} still holds it`,
      });
      return;
    }
    decisions.push({ action: 'delete', reason, key, modRevision, detail });
  };

  for (const b of state.badValues) {
    if (!b.modRevision) continue;
    const pk = parseKey(keys, b.key);
    if (pk.family === 'leader') judge(b.key, b.modRevision, 'electionKeyInvalid', b.error);
    else if (pk.family === 'node' && b.error === NODE_WITHOUT_LEASE)
      judge(b.key, b.modRevision, 'nodeWithoutLease', b.error);
    else if (pk.family === 'claim')
      judge(b.key, b.modRevision, 'claimUnreadable', b.error === CLAIM_WITHOUT_LEASE ? b.error : `value: ${b.error}`, {
        vip: pk.vip,
        bucket: pk.bucket,
      });
  }
  for (const [vip, m] of state.claims) {
    for (const [bucket, c] of m) {
      if (!c.modRevision) continue;
      const named = state.nodes.get(c.owner);
      if (named?.lease === c.lease) continue;
      const detail = named
        ? `claim names ${c.owner} under lease ${c.lease}, but ${c.owner} lives under lease ${named.lease}`
        : `claim names ${c.owner} under lease ${c.lease}, and ${c.owner} has no node key`;
      judge(keys.claim(vip, bucket), c.modRevision, 'claimGhost', detail, { vip, bucket });
    }
  }
  return { decisions, since };
}
