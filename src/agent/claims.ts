import type { Etcd3 } from 'etcd3';
import type { BucketChange } from '../backends/backend.js';
import type { ClusterSpec } from '../config/types.js';
import { parseKey, type Keys } from '../etcd/keys.js';
import { cmpRevision, specKeyRevision, type ClaimEntry, type ClusterState, type StateChange } from '../etcd/store.js';
import { monoNow } from './clock.js';
import { acquireRefusal, bucketKey, planClaims, type BucketRef, type ClaimPlan, type Handoff } from './claimPlan.js';
import type { AcquireBlock, AgentEvent, ReleaseReason } from './events.js';
import type { AddRefusal, KernelGate } from './kernel.js';
import type { HeldLease, LeaseScope } from './leaseScope.js';
import { assignableNodes } from '../health/leader.js';
import { backoffMs } from '../backoff.js';
import { Coalescer } from '../coalesce.js';

// Executes the claim protocol (DESIGN §5) for this node:
//   acquire = txn If(Create(claim) == 0 ∧ Mod(spec) == applied) Then Put(claim, me, lease)  →  then kernel add
//   release = kernel remove (confirmed by the backend's read-back)  →  then txn If(Value == me ∧ Lease == mine) Delete
// A claim we got but could not apply to the kernel is released again. Our own writes are overlaid on the
// watched picture until the watch catches up, so a stale picture never makes us drop what we just took.

export interface AppliedSpec {
  spec: ClusterSpec | null;
  /** null while no spec is applied. */
  modRevision: string | null;
}

export interface ReconcilerOptions {
  etcd: Etcd3;
  keys: Keys;
  nodeId: string;
  kernel: KernelGate;
  state: () => ClusterState;
  /** The spec the kernel is set up for, and the `spec` key's mod revision it was read at. */
  applied: () => AppliedSpec;
  /** The node's session: the lease claims are written and compared under, and whether we may acquire. */
  session: LeaseScope;
  draining: () => boolean;
  releaseAll: () => boolean;
  emit: (e: AgentEvent) => void;
  /** Called after each pass (status writer, shutdown waiter). */
  afterPass?: () => void;
}

const CONCURRENCY = 64;
/** Adds refused for a deadline too close are tried again this soon (a keepalive ack moves it meanwhile). */
const DEADLINE_RETRY_MS = 100;

export class ClaimReconciler {
  private stopped = false;
  private readonly loop = new Coalescer(() => this.pass());
  /** key → our write not yet visible in the picture: the claim (or null = deleted) as of `revision`. */
  private readonly overlay = new Map<
    string,
    { vip: string; bucket: number; revision: string; entry: ClaimEntry | null }
  >();
  private readonly blocked = new Map<string, AcquireBlock>();
  /** bucket → when our watch saw its claim vanish (monotonic): how long it had no owner when we take it. */
  private readonly goneAt = new Map<string, number>();
  /** The applied spec revision etcd refused an acquire under (the key moved on): acquire nothing more under it. */
  private refusedUnder: string | null = null;
  private backendFailures = 0;
  private backendBlockedUntil = 0;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ReconcilerOptions) {}

  trigger(): void {
    this.loop.kick();
  }

  /** Resolves once the pass in progress (if any) is done (for shutdown). */
  settle(): Promise<void> {
    return this.loop.settle();
  }

  stop(): void {
    this.stopped = true;
    this.loop.stop();
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  /** A watch batch arrived at `at`: note claims that vanished (a later put of the same claim forgets it). */
  noteChange(change: StateChange, at: number): void {
    for (const k of change.deletes) {
      const pk = parseKey(this.o.keys, k);
      if (pk.family === 'claim') this.goneAt.set(bucketKey(pk.vip, pk.bucket), at);
    }
    for (const k of change.puts) {
      const pk = parseKey(this.o.keys, k);
      if (pk.family === 'claim') this.goneAt.delete(bucketKey(pk.vip, pk.bucket));
    }
  }

  /** Forget overlays (new lease: every claim of the old one is gone). */
  resetLease(): void {
    this.overlay.clear();
    this.blocked.clear();
  }

  /** Claims we hold under our lease in the (overlaid) picture. */
  heldClaimCount(): number {
    const lease = this.o.session.lease()?.id ?? null;
    let n = 0;
    for (const m of this.claimsView().values())
      for (const c of m.values()) if (c.owner === this.o.nodeId && c.lease === lease) n++;
    return n;
  }

  private claimsView(): Map<string, Map<number, ClaimEntry>> {
    const state = this.o.state();
    const out = new Map<string, Map<number, ClaimEntry>>();
    for (const [vip, m] of state.claims) out.set(vip, new Map(m));
    for (const [k, ov] of this.overlay) {
      if (cmpRevision(state.revision, ov.revision) >= 0) {
        this.overlay.delete(k);
        continue;
      }
      let m = out.get(ov.vip);
      if (!m) out.set(ov.vip, (m = new Map()));
      if (ov.entry) m.set(ov.bucket, ov.entry);
      else m.delete(ov.bucket);
    }
    return out;
  }

  private async pass(): Promise<void> {
    try {
      await this.passInner();
    } catch (err) {
      this.o.emit({ event: 'etcdError', op: 'reconcile', error: (err as Error).message });
      this.retryLater(200);
    } finally {
      this.o.afterPass?.();
    }
  }

  private async passInner(): Promise<void> {
    const state = this.o.state();
    // One lease for the whole pass: every compare and put below is under it, even if the session moves on.
    const held = this.o.session.lease();
    const leaseId = held?.id ?? null;
    const applied = this.o.applied();
    // A failing node the panic threshold keeps serving is a fine handoff target (the leader assigns it).
    const ok = assignableNodes(state.nodes, state.spec?.spec.minHealthyNodes ?? 1);
    const plan = planClaims({
      me: this.o.nodeId,
      leaseId,
      peers: new Map([...state.nodes].map(([id, n]) => [id, { lease: n.lease, draining: !(ok.get(id) ?? false) }])),
      spec: applied.spec,
      assignments: state.assignments,
      claims: this.claimsView(),
      kernel: this.o.kernel.held,
      live: this.o.session.isLive() && leaseId !== null,
      releaseAll: this.o.releaseAll(),
      draining: this.o.draining(),
      backendBlocked: monoNow() < this.backendBlockedUntil,
      // A refusal tells us the key moved on before our picture does: no more txns until a newer spec is applied.
      specCurrent:
        applied.modRevision !== null &&
        applied.modRevision !== this.refusedUnder &&
        applied.modRevision === specKeyRevision(state, this.o.keys),
    });
    this.reportBlocked(plan);
    for (const r of plan.kernelForget) this.o.kernel.forget(r.vip, [r.bucket]);
    try {
      await this.release(plan, leaseId);
    } catch (err) {
      // A release that failed keeps its claims (kernel first); acquiring the rest must not wait for it.
      this.o.emit({ event: 'etcdError', op: 'release', error: (err as Error).message });
      this.retryLater(200);
    }
    if (leaseId !== null) await this.deleteOwnGarbage(leaseId);
    if (held !== null && (plan.acquire.length > 0 || plan.kernelAdd.length > 0))
      await this.acquire(plan, held, applied);
  }

  /**
   * Garbage written over a claim of ours holds nobody's claim: once our kernel let go of its bucket we delete
   * exactly that garbage (Mod-guarded), so the bucket is free again in milliseconds instead of after the leader's
   * sweep. Another node's garbage is the sweep's.
   */
  private async deleteOwnGarbage(leaseId: string): Promise<void> {
    const own = this.o.state().badValues.filter((b) => {
      if (b.overwrote?.owner !== this.o.nodeId || b.overwrote.lease !== leaseId) return false;
      const pk = parseKey(this.o.keys, b.key);
      return pk.family === 'claim' && !this.o.kernel.has(pk.vip, pk.bucket);
    });
    for (const b of own) {
      if (await this.deleteGarbageOverOurs(b.key))
        this.o.emit({
          event: 'swept',
          key: b.key,
          reason: 'claimUnreadable',
          detail: 'garbage over our own claim, after our kernel let go',
        });
    }
  }

  private async release(plan: ClaimPlan, leaseId: string | null): Promise<void> {
    if (plan.kernelRemove.length === 0 && plan.claimDelete.length === 0 && plan.kernelForget.length === 0) return;
    const t0 = monoNow();
    // Kernel first; a VIP whose removal failed keeps its claims (never a kernel bucket without its claim).
    const failedVips = new Set<string>();
    let firstError: unknown;
    if (plan.kernelRemove.length > 0) {
      const changes = group(plan.kernelRemove, 'remove');
      try {
        await this.o.kernel.apply(changes);
      } catch {
        // The batch failed: find out VIP by VIP which removals the backend takes.
        for (const c of changes) {
          try {
            await this.o.kernel.apply([c]);
          } catch (err) {
            failedVips.add(c.vip);
            firstError ??= err;
          }
        }
      }
    }
    const deleted = new Set<string>();
    if (leaseId !== null) {
      const deletable = plan.claimDelete.filter((r) => !failedVips.has(r.vip) && !this.o.kernel.has(r.vip, r.bucket));
      const view = this.claimsView();
      await inBatches(deletable, async (r) => {
        const key = this.o.keys.claim(r.vip, r.bucket);
        const { res, to } = await this.releaseTxn(key, leaseId, r.handoff);
        if (!res.succeeded && !(await this.deleteGarbageOverOurs(key))) {
          // Not ours any more (or already gone): the watch shows what is there; nothing was released.
          this.o.emit({ event: 'etcdError', op: 'release', error: `claim ${key} is not ours under our lease` });
          return;
        }
        const createRevision = view.get(r.vip)?.get(r.bucket)?.createRevision ?? res.header.revision;
        this.overlay.set(bucketKey(r.vip, r.bucket), {
          vip: r.vip,
          bucket: r.bucket,
          revision: res.header.revision,
          entry: to ? { owner: to.node, lease: to.lease, createRevision } : null,
        });
        deleted.add(bucketKey(r.vip, r.bucket));
        this.o.emit({
          event: 'released',
          vip: r.vip,
          bucket: r.bucket,
          reason: r.reason,
          durationMs: ms(monoNow() - t0),
          ...(to ? { handoff: to.node } : {}),
        });
      });
    }
    for (const r of plan.kernelRemove) {
      if (failedVips.has(r.vip) || deleted.has(bucketKey(r.vip, r.bucket))) continue;
      if (plan.claimDelete.some((d) => d.vip === r.vip && d.bucket === r.bucket)) continue;
      this.o.emit({
        event: 'released',
        vip: r.vip,
        bucket: r.bucket,
        reason: r.reason,
        durationMs: ms(monoNow() - t0),
      });
    }
    if (firstError !== undefined) throw firstError;
  }

  private async acquire(plan: ClaimPlan, lease: HeldLease, applied: AppliedSpec): Promise<void> {
    const leaseId = lease.id;
    const started = new Map<string, number>();
    const claimedAt = new Map<string, string>();
    const got: BucketRef[] = [];
    const specMod = applied.modRevision;
    // planClaims acquires only under an applied spec; without one there is nothing to compare with.
    await inBatches(specMod === null ? [] : plan.acquire, async (r) => {
      if (specMod === null) return;
      const key = this.o.keys.claim(r.vip, r.bucket);
      started.set(bucketKey(r.vip, r.bucket), monoNow());
      // The claim is ours only while the spec key still holds the spec our kernel runs: a node whose picture lags
      // (back from a partition, a slow watch) must not claim a bucket number the new hash gives other clients.
      const res = await this.o.etcd
        .if(key, 'Create', '==', 0)
        .and(this.o.keys.spec, 'Mod', '==', specMod)
        .then(lease.put(key).value(this.o.nodeId))
        .else({ request_range: { key: Buffer.from(this.o.keys.spec), keys_only: true } })
        .commit();
      if (res.succeeded) {
        claimedAt.set(bucketKey(r.vip, r.bucket), res.header.revision);
        this.overlay.set(bucketKey(r.vip, r.bucket), {
          vip: r.vip,
          bucket: r.bucket,
          revision: res.header.revision,
          entry: { owner: this.o.nodeId, lease: leaseId, createRevision: res.header.revision },
        });
        got.push(r);
      } else {
        const specKv = res.responses[0]?.response_range?.kvs[0];
        const why = acquireRefusal({ specModRevision: specKv?.mod_revision ?? null, appliedSpecModRevision: specMod });
        // heldByOther: the watch brings the holder and its delete; specStale: applying the new spec triggers a pass.
        if (why === 'specStale') this.refusedUnder = specMod;
        this.noteBlocked(r, why);
      }
    });
    const toAdd = [...got, ...plan.kernelAdd];
    if (toAdd.length === 0) return;
    let added: BucketChange[];
    let refused: AddRefusal | undefined;
    try {
      ({ added, refused } = await this.o.kernel.apply(group(toAdd, 'add'), { lease: leaseId, spec: applied.spec }));
    } catch (err) {
      // Could not apply: hold no claim for it (the kernel gate already undid the adds).
      this.backendFailures++;
      const wait = backoffMs(this.backendFailures, 100, 5000);
      this.backendBlockedUntil = monoNow() + wait;
      for (const r of toAdd) this.noteBlocked(r, 'backendFailed');
      // Release the claims of what the kernel does not hold; one it still holds keeps its claim until a later
      // pass removes it from the kernel first.
      await this.deleteClaims(
        toAdd.filter((r) => !this.o.kernel.has(r.vip, r.bucket)),
        leaseId,
      );
      this.o.emit({
        event: 'etcdError',
        op: 'acquire',
        error: `backend apply failed, claims released: ${(err as Error).message}`,
      });
      this.retryLater(wait);
      return;
    }
    this.backendFailures = 0;
    // Too close to the fence deadline: the next ack moves it, and nothing else may trigger a pass soon.
    if (refused === 'deadlineShort') this.retryLater(DEADLINE_RETRY_MS);
    const addedSet = new Set(added.flatMap((c) => c.add.map((b) => bucketKey(c.vip, b))));
    const now = monoNow();
    for (const r of toAdd) {
      const k = bucketKey(r.vip, r.bucket);
      if (!addedSet.has(k)) {
        this.noteBlocked(r, refused ?? 'fenced');
        continue;
      }
      this.blocked.delete(k);
      const gone = this.goneAt.get(k);
      const rev = claimedAt.get(k);
      this.goneAt.delete(k);
      this.o.emit({
        event: 'acquired',
        vip: r.vip,
        bucket: r.bucket,
        durationMs: ms(now - (started.get(k) ?? now)),
        ...(gone !== undefined ? { unownedMs: ms(now - gone) } : {}),
        ...(rev !== undefined ? { claimRevision: rev } : {}),
      });
    }
  }

  /** A txn guarded by "this claim is ours, under this lease" (etcd's Mutex.IsOwner): value and lease compared. */
  private ifOurs(key: string, leaseId: string): ReturnType<Etcd3['if']> {
    return this.o.etcd.if(key, 'Value', '==', this.o.nodeId).and(key, 'Lease', '==', leaseId);
  }

  /**
   * Give up our claim (kernel entry already removed): hand it to the assignee under its lease when planned, else
   * delete it. A handoff that fails (the assignee's lease just expired, or etcd) falls back to the delete, whose
   * guard also settles an ambiguous first attempt: if the handoff did commit, the claim is not ours any more.
   */
  private async releaseTxn(
    key: string,
    leaseId: string,
    handoff: Handoff | undefined,
  ): Promise<{ res: { succeeded: boolean; header: { revision: string } }; to?: Handoff }> {
    const ours = () => this.ifOurs(key, leaseId);
    if (handoff) {
      try {
        const res = await ours().then(this.o.etcd.put(key).value(handoff.node).lease(handoff.lease)).commit();
        if (res.succeeded) return { res, to: handoff };
      } catch (err) {
        this.o.emit({ event: 'etcdError', op: 'handoff', error: (err as Error).message });
      }
    }
    return { res: await ours().then(this.o.etcd.delete().key(key)).commit() };
  }

  /**
   * Garbage was written over a claim of ours (its lease detached, so it never goes away). The kernel already let
   * go of the bucket, so we may delete exactly that garbage (Mod-guarded). True when deleted.
   */
  private async deleteGarbageOverOurs(key: string): Promise<boolean> {
    const bad = this.o.state().badValues.find((b) => b.key === key);
    if (!bad?.modRevision) return false;
    const res = await this.o.etcd
      .if(key, 'Mod', '==', bad.modRevision)
      .then(this.o.etcd.delete().key(key))
      .commit()
      .catch(() => null);
    return res?.succeeded ?? false;
  }

  private async deleteClaims(refs: BucketRef[], leaseId: string): Promise<void> {
    await inBatches(refs, async (r) => {
      const key = this.o.keys.claim(r.vip, r.bucket);
      const res = await this.ifOurs(key, leaseId)
        .then(this.o.etcd.delete().key(key))
        .commit()
        .catch(() => null);
      if (res)
        this.overlay.set(bucketKey(r.vip, r.bucket), {
          vip: r.vip,
          bucket: r.bucket,
          revision: res.header.revision,
          entry: null,
        });
    });
  }

  private reportBlocked(plan: ClaimPlan): void {
    const now = new Set<string>();
    for (const b of plan.blocked) {
      now.add(bucketKey(b.vip, b.bucket));
      this.noteBlocked(b, b.reason, b.holder);
    }
    // Buckets no longer blocked nor wanted: forget, so a later block is reported again.
    for (const k of [...this.blocked.keys()]) if (!now.has(k)) this.blocked.delete(k);
  }

  private noteBlocked(r: BucketRef, reason: AcquireBlock, holder?: string): void {
    const k = bucketKey(r.vip, r.bucket);
    if (this.blocked.get(k) === reason) return;
    this.blocked.set(k, reason);
    this.o.emit({
      event: 'acquireBlocked',
      vip: r.vip,
      bucket: r.bucket,
      reason,
      ...(holder !== undefined ? { holder } : {}),
    });
  }

  private retryLater(ms: number): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.trigger();
    }, ms);
    this.retryTimer.unref();
  }
}

function group(refs: (BucketRef & { reason?: ReleaseReason })[], op: 'add' | 'remove'): BucketChange[] {
  const by = new Map<string, number[]>();
  for (const r of refs) {
    let l = by.get(r.vip);
    if (!l) by.set(r.vip, (l = []));
    l.push(r.bucket);
  }
  return [...by].map(([vip, bs]) => ({ vip, add: op === 'add' ? bs : [], remove: op === 'remove' ? bs : [] }));
}

/**
 * Run `fn` over `items`, CONCURRENCY at a time. Every txn of a batch settles (and records its overlay) before
 * the first failure is thrown: a pass that ended with txns still in flight would plan the next pass without them.
 */
export async function inBatches<T>(items: T[], fn: (t: T) => Promise<void>): Promise<void> {
  let failed: { error: unknown } | undefined;
  for (let i = 0; i < items.length; i += CONCURRENCY) {
    const results = await Promise.allSettled(items.slice(i, i + CONCURRENCY).map(fn));
    for (const r of results) if (r.status === 'rejected') failed ??= { error: r.reason };
  }
  if (failed) throw failed.error instanceof Error ? failed.error : new Error(String(failed.error));
}

function ms(x: number): number {
  return Math.round(x * 100) / 100;
}
