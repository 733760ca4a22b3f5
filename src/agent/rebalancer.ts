import type { Etcd3 } from 'etcd3';
import type { Keys } from '../etcd/keys.js';
import type { ClusterState } from '../etcd/store.js';
import { assignValueSchema } from '../etcd/values.js';
import { PanicTracker } from '../health/leader.js';
import { cmpRevision } from '../etcd/store.js';
import { NotLeaderError } from '../errors.js';
import { Coalescer } from '../coalesce.js';
import { monoNow } from './clock.js';
import type { Election } from './election.js';
import type { AgentEvent } from './events.js';
import { currentFromValue, planAssignments, type CurrentAssignment } from './assignments.js';
import { BAD_VALUE_HOLD_MS, planSweep, sweepId } from './sweep.js';

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
  /** How long a ghost claim must stay one before it is deleted (default: DEFAULT_SWEEP_HOLD_MS). */
  sweepHoldMs?: number;
}

/** The agent passes its lease TTL + 1 s. */
export const DEFAULT_SWEEP_HOLD_MS = 3000;

export class Rebalancer {
  private firstTrigger: number | null = null;
  private stopped = false;
  /** A run waits until `coalesceMs` after the first trigger it serves, so a burst of changes is one plan. */
  private readonly loop = new Coalescer(() => this.run(), {
    delayMs: () => (this.o.coalesceMs ?? 1) - (monoNow() - (this.firstTrigger ?? monoNow())),
    onError: (err) => this.o.emit({ event: 'etcdError', op: 'rebalance', error: (err as Error).message }),
  });
  private windowStart = 0;
  private readonly joinUsed = new Map<string, number>();
  private rollover: NodeJS.Timeout | undefined;
  /** Sweepable keys by `key@mod` → first seen (monotonic), and the deletes in flight. */
  private sweepSince = new Map<string, number>();
  private readonly sweeping = new Set<string>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Our last writes, until the picture catches up with them. */
  private readonly written = new Map<string, { revision: string; current: CurrentAssignment | null }>();
  private readonly panic = new PanicTracker((e) => this.o.emit(e));

  constructor(private readonly o: RebalancerOptions) {}

  /** Something changed; plan soon. `at` is when the change was seen (monotonic). */
  trigger(at = monoNow()): void {
    if (this.stopped || !this.o.election.isLeader) return;
    this.firstTrigger ??= at;
    this.loop.kick();
  }

  stop(): void {
    this.stopped = true;
    this.loop.stop();
    if (this.rollover) clearTimeout(this.rollover);
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
  }

  /** Leadership changed hands: forget what we wrote (the next leader's picture is authoritative). */
  reset(): void {
    this.written.clear();
    this.firstTrigger = null;
    this.panic.forget();
  }

  private async run(): Promise<void> {
    const trigger = this.firstTrigger ?? monoNow();
    this.firstTrigger = null;
    await this.step(trigger);
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
    // Draining, not ready and health-drained nodes take nothing, except those the panic threshold keeps serving.
    const nodes = this.panic.plannerNodes(state.nodes, spec.minHealthyNodes ?? 1);
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

  /** Delete keys that block the cluster forever (see `planSweep`), each in a fenced, Mod-guarded txn. */
  private async sweep(state: ClusterState): Promise<void> {
    const plan = planSweep({
      state,
      keys: this.o.keys,
      now: monoNow(),
      since: this.sweepSince,
      holdMs: this.o.sweepHoldMs ?? DEFAULT_SWEEP_HOLD_MS,
    });
    this.sweepSince = plan.since;
    // Judge again once the first key that is only holding has held long enough (no change may come to wake us).
    const hold = Math.min(this.o.sweepHoldMs ?? DEFAULT_SWEEP_HOLD_MS, BAD_VALUE_HOLD_MS);
    const due = plan.decisions
      .filter((d) => d.action === 'wait' && d.reason === 'holding')
      .map((d) => (plan.since.get(sweepId(d.key, d.modRevision)) ?? 0) + hold);
    if (due.length > 0 && !this.sweepTimer) {
      this.sweepTimer = setTimeout(
        () => {
          this.sweepTimer = undefined;
          this.trigger();
        },
        Math.max(10, Math.min(...due) - monoNow() + 10),
      );
      this.sweepTimer.unref();
    }
    for (const d of plan.decisions) {
      const id = sweepId(d.key, d.modRevision);
      if (d.action === 'wait' || this.sweeping.has(id)) continue;
      this.sweeping.add(id);
      try {
        if (await this.o.election.fencedDelete(d.key, d.modRevision))
          this.o.emit({ event: 'swept', key: d.key, reason: d.reason, detail: d.detail });
      } catch (err) {
        this.o.emit({ event: 'etcdError', op: 'sweep', error: (err as Error).message });
      } finally {
        this.sweeping.delete(id);
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
