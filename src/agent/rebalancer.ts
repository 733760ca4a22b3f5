import type { Etcd3 } from 'etcd3';
import { parseKey, type Keys } from '../etcd/keys.js';
import type { ClusterState } from '../etcd/store.js';
import { assignValueSchema, takesBuckets } from '../etcd/values.js';
import { cmpRevision, NODE_WITHOUT_LEASE } from '../etcd/store.js';
import { NotLeaderError } from '../errors.js';
import { monoNow } from './clock.js';
import type { Election } from './election.js';
import type { AgentEvent } from './events.js';
import { currentFromValue, planAssignments, type CurrentAssignment } from './assignments.js';

// The leader loop (DESIGN §6): on any change of nodes, claims, spec or assignments (coalesced for a few ms) it
// plans every VIP and writes the changed assignments in one txn fenced by the campaign key. Join moves are
// rationed to k per interval; when the budget runs out it plans again when the interval rolls over.

export interface RebalancerOptions {
  etcd: Etcd3;
  keys: Keys;
  nodeId: string;
  election: Election;
  state: () => ClusterState;
  emit: (e: AgentEvent) => void;
  /** Our fenced write failed: campaign again. */
  onNotLeader: () => void;
  coalesceMs?: number;
}

export class Rebalancer {
  private timer: NodeJS.Timeout | undefined;
  private firstTrigger: number | null = null;
  private running = false;
  private again = false;
  private stopped = false;
  private windowStart = 0;
  private readonly joinUsed = new Map<string, number>();
  private rollover: NodeJS.Timeout | undefined;
  private readonly swept = new Set<string>();
  /** Our last writes, until the picture catches up with them. */
  private readonly written = new Map<string, { revision: string; current: CurrentAssignment | null }>();

  constructor(private readonly o: RebalancerOptions) {}

  /** Something changed; plan soon. `at` is when the change was seen (monotonic). */
  trigger(at = monoNow()): void {
    if (this.stopped || !this.o.election.isLeader) return;
    this.firstTrigger ??= at;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    const wait = Math.max(0, (this.o.coalesceMs ?? 1) - (monoNow() - at));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, wait);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.rollover) clearTimeout(this.rollover);
  }

  /** Leadership changed hands: forget what we wrote (the next leader's picture is authoritative). */
  reset(): void {
    this.written.clear();
    this.firstTrigger = null;
  }

  private async run(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    const trigger = this.firstTrigger ?? monoNow();
    this.firstTrigger = null;
    this.again = false;
    try {
      await this.step(trigger);
    } finally {
      this.running = false;
      if (this.again && !this.stopped) this.trigger(this.firstTrigger ?? monoNow());
    }
  }

  private budgetLeft(vip: string, k: number, intervalMs: number): number {
    const now = monoNow();
    if (now - this.windowStart >= intervalMs) {
      this.windowStart = now;
      this.joinUsed.clear();
    }
    return Math.max(0, k - (this.joinUsed.get(vip) ?? 0));
  }

  private async step(trigger: number): Promise<void> {
    const { election, keys, etcd } = this.o;
    if (!election.isLeader) return;
    const state = this.o.state();
    const spec = state.spec?.spec;
    if (!spec) return;
    const t0 = monoNow();
    const current = new Map<string, CurrentAssignment>();
    for (const [vip, a] of state.assignments) current.set(vip, currentFromValue(a.value));
    // Until the watch shows our own last write, plan from what we wrote, not from the older picture.
    for (const [vip, w] of this.written) {
      if (cmpRevision(state.revision, w.revision) >= 0) this.written.delete(vip);
      else if (w.current) current.set(vip, w.current);
      else current.delete(vip);
    }
    void this.sweep(state);
    const nodes = [...state.nodes].map(([id, n]) => ({ id, weight: n.value.weight, draining: !takesBuckets(n.value) }));
    const { joinMovesPerInterval: k, intervalMs } = spec.rebalance;
    // An assignment key holding garbage is repaired from the last good value we still have.
    const rewrite = new Set<string>();
    for (const b of state.badValues) {
      for (const v of spec.vips)
        if (b.key === keys.assign(v.address) && !this.written.has(v.address)) rewrite.add(v.address);
    }
    const plan = planAssignments({
      rewrite,
      leader: this.o.nodeId,
      spec,
      nodes,
      current,
      joinBudgetLeft: (vip) => this.budgetLeft(vip, k, intervalMs),
      claimsLeft: (vip) => state.claims.get(vip)?.size ?? 0,
    });
    const planMs = monoNow() - t0;
    if (plan.wantsMoreJoinMoves && k > 0) this.scheduleRollover(intervalMs);
    if (plan.writes.length === 0 && plan.deletes.length === 0) return;

    // Never write what every agent would reject (a bad node id, say): that loops forever.
    const valid = plan.writes.filter((w) => {
      const r = assignValueSchema.safeParse(w.value);
      if (!r.success) this.o.emit({ event: 'assignmentRejected', vip: w.vip, reason: 'invalid' });
      return r.success;
    });
    const ops = [
      ...valid.map((w) => etcd.put(keys.assign(w.vip)).value(JSON.stringify(w.value))),
      ...plan.deletes.map((vip) => etcd.delete().key(keys.assign(vip))),
    ];
    if (ops.length === 0) return;
    let revision = '0';
    try {
      // etcd allows 128 ops per txn (the schema allows 256 VIPs): one fenced txn per chunk. Each VIP's write is
      // independent of the others', so a partial sequence is still a consistent picture per VIP.
      for (const part of chunk(ops, MAX_TXN_OPS)) revision = await election.fencedTxn(part);
    } catch (err) {
      const reason = err instanceof NotLeaderError ? 'notLeader' : 'etcdError';
      for (const w of plan.writes) this.o.emit({ event: 'assignmentRejected', vip: w.vip, reason });
      if (reason === 'notLeader') {
        this.reset();
        this.o.onNotLeader();
      } else {
        this.o.emit({ event: 'etcdError', op: 'assign', error: (err as Error).message });
        setTimeout(() => this.trigger(), 200).unref();
      }
      return;
    }
    const done = monoNow();
    for (const w of valid) {
      this.joinUsed.set(w.vip, (this.joinUsed.get(w.vip) ?? 0) + w.joinMoves);
      this.written.set(w.vip, {
        revision,
        current: currentFromValue(w.value),
      });
      this.o.emit({
        event: 'assignmentWritten',
        vip: w.vip,
        epoch: w.value.epoch,
        moves: w.moves,
        planMs: round(planMs),
        sinceTriggerMs: round(done - trigger),
        ...(w.barrier ? { barrier: 'hashChanged' as const } : {}),
      });
    }
    for (const vip of plan.deletes) this.written.set(vip, { revision, current: null });
  }

  /**
   * Delete keys that block the cluster forever (see `planSweep`). Each delete is one txn fenced by our campaign
   * key and guarded by the key's mod revision: a deposed leader deletes nothing, and a newer write is never deleted.
   */
  private async sweep(state: ClusterState): Promise<void> {
    const { etcd, keys } = this.o;
    const mine = this.o.election.campaignKey;
    const lease = mine ? leaseOfCandidateKey(keys, mine.key) : null;
    if (!mine || !lease) return;
    for (const d of planSweep(state, keys)) {
      const id = `${d.key}@${d.modRevision}`;
      if (this.swept.has(id)) continue;
      if (d.action === 'wait') continue;
      this.swept.add(id);
      try {
        const res = await etcd
          .if(mine.key, 'Create', '==', mine.createRevision)
          .and(mine.key, 'Lease', '==', lease)
          .and(d.key, 'Mod', '==', d.modRevision)
          .then(etcd.delete().key(d.key))
          .commit();
        // Not committed: we no longer lead (a later leader judges it again), or the key changed (a newer value
        // is judged on its own).
        if (res.succeeded)
          this.o.emit({ event: 'etcdError', op: 'sweep', error: `deleted ${d.key} (${d.reason}): ${d.detail}` });
        else this.swept.delete(id);
      } catch (err) {
        this.swept.delete(id);
        this.o.emit({ event: 'etcdError', op: 'sweep', error: (err as Error).message });
      }
    }
  }

  private scheduleRollover(intervalMs: number): void {
    if (this.rollover) return;
    const wait = Math.max(1, intervalMs - (monoNow() - this.windowStart));
    this.rollover = setTimeout(() => {
      this.rollover = undefined;
      this.trigger();
    }, wait);
    this.rollover.unref();
  }
}

/** Why the leader deletes a key nobody else will ever remove. */
export type SweepReason =
  /** An election key not under the lease its name says: no candidate, but it may sort first forever. */
  | 'electionKeyInvalid'
  /** A node key outside any lease: it would count as a live node forever. */
  | 'nodeWithoutLease'
  /** A claim key whose value is not a node id, or outside any lease: nobody can claim the bucket. */
  | 'claimUnreadable'
  /** A claim naming a node under a lease that is not that node's node-key lease: nobody serves it. */
  | 'claimGhost';

/** Why a key that is to be swept is left for now. */
export type SweepWait =
  /** A node still reports the bucket in its kernel: it lets go first (kernel ⊆ claims), then we delete. */
  'heldInKernel';

export type SweepDecision = { key: string; modRevision: string; detail: string } & (
  { action: 'delete'; reason: SweepReason } | { action: 'wait'; reason: SweepWait }
);

/**
 * Pure: the keys the leader deletes. A bad claim or ghost claim is deleted only once no node's status lists its
 * bucket as held: the node that held the claim before it was overwritten sees that the claim is no longer its own,
 * removes the bucket from its kernel and reports it, and only then can the assignee claim the bucket again, so
 * the bucket is never served twice on the way.
 */
export function planSweep(state: ClusterState, keys: Keys): SweepDecision[] {
  const out: SweepDecision[] = [];
  const claimDecision = (
    key: string,
    modRevision: string,
    vip: string,
    bucket: number,
    reason: SweepReason,
    detail: string,
  ): SweepDecision => {
    const holder = [...state.statuses].find(([, s]) => s.held[vip]?.includes(bucket))?.[0];
    return holder === undefined
      ? { action: 'delete', reason, key, modRevision, detail }
      : { action: 'wait', reason: 'heldInKernel', key, modRevision, detail: `${detail}; ${holder} still holds it` };
  };
  for (const b of state.badValues) {
    if (!b.modRevision) continue;
    const pk = parseKey(keys, b.key);
    if (pk.family === 'leader') {
      out.push({
        action: 'delete',
        reason: 'electionKeyInvalid',
        key: b.key,
        modRevision: b.modRevision,
        detail: b.error,
      });
    } else if (pk.family === 'node' && b.error === NODE_WITHOUT_LEASE) {
      out.push({
        action: 'delete',
        reason: 'nodeWithoutLease',
        key: b.key,
        modRevision: b.modRevision,
        detail: b.error,
      });
    } else if (pk.family === 'claim') {
      out.push(claimDecision(b.key, b.modRevision, pk.vip, pk.bucket, 'claimUnreadable', b.error));
    }
  }
  // Which node's key lives under which lease: a claim's lease must be the one of the node it names.
  const leaseHolder = new Map<string, string>();
  for (const [id, n] of state.nodes) leaseHolder.set(n.lease, id);
  for (const [vip, m] of state.claims) {
    for (const [bucket, c] of m) {
      if (!c.modRevision) continue;
      const named = state.nodes.get(c.owner);
      const holder = leaseHolder.get(c.lease);
      // Not judged: the named node has no node key and the lease carries none (a node re-registering, or one
      // whose lease is about to expire with everything under it).
      if (named ? named.lease === c.lease : holder === undefined) continue;
      const detail = named
        ? `claim names ${c.owner} under lease ${c.lease}, but ${c.owner} lives under lease ${named.lease}`
        : `claim names ${c.owner} under lease ${c.lease} of node ${holder ?? '?'}`;
      out.push(claimDecision(keys.claim(vip, bucket), c.modRevision, vip, bucket, 'claimGhost', detail));
    }
  }
  return out;
}

/** The lease of our campaign key, from its name (`<electionName>/<lease hex>`). */
function leaseOfCandidateKey(keys: Keys, key: string): string | null {
  const hex = key.slice(keys.electionName.length + 1);
  return /^[0-9a-f]{1,16}$/.test(hex) ? BigInt(`0x${hex}`).toString() : null;
}

/** Ops per fenced txn: etcd's default --max-txn-ops is 128. */
export const MAX_TXN_OPS = 127;

export function chunk<T>(items: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += n) out.push(items.slice(i, i + n));
  return out;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
