import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { Backend, BackendDescription } from '../backends/backend.js';
import type { NodeConfig } from '../config/types.js';
import { createEtcdClient } from '../etcd/client.js';
import { keysFor, type Keys } from '../etcd/keys.js';
import {
  watchCluster,
  watchLagFromEnv,
  type ClusterState,
  type ClusterWatch,
  type StateChange,
} from '../etcd/store.js';
import { NodeIdInUseError, BackendError } from '../errors.js';
import { HealthMonitor } from '../health/monitor.js';
import { makeBackend } from './backendFactory.js';
import { ClaimReconciler } from './claims.js';
import { monoNow, sleep } from './clock.js';
import { Election } from './election.js';
import type { AgentEvent, FenceReason, RestartReason } from './events.js';
import { FenceTimer } from './fence.js';
import { KernelGate } from './kernel.js';
import { LeaseRecord } from './leaseRecord.js';
import { startLoopDelayMonitor } from './loopDelay.js';
import { Rebalancer } from './rebalancer.js';
import { NodeSession } from './session.js';
import { SpecApplier } from './specApplier.js';
import { clearConfirmed, closeEach, releaseAndRevoke, withTimeout } from './teardown.js';
import { Registration } from './registration.js';
import { defaultFenceMarginMs } from '../config/index.js';
import { restartRecordFile, takeRestartRecord, writeRestartRecord, type RestartRecord } from './restartRecord.js';
import { EventRecorder } from './recorder.js';
import { StatusWriter } from './status.js';
import { backoffMs } from '../backoff.js';

// The agent: one session (lease + fence), one watched picture of the cluster, the election and the leader's
// rebalancer, the claim reconciler and the status writer, composed. It emits AgentEvents ('event') and never
// logs; the daemon (daemon.ts) turns events into log lines and metrics and maps signals to shutdown().

const RESYNC_MS = 5000;

export type AgentPhase =
  | { phase: 'starting' }
  /** drainRequested: draining as set through etcd (`clusterip-ha drain`) in our node key, kept across re-registrations. */
  | { phase: 'running'; drainRequested: boolean }
  /** Draining on our own stop (SIGTERM): the leader moves every bucket away. */
  | { phase: 'draining'; since: number }
  /** releaseAll: whatever the claims say, the kernel is emptied (a stop); false for a planned restart's hand-over. */
  | { phase: 'stopping'; releaseAll: boolean }
  | { phase: 'stopped' };

export interface AgentOptions {
  cfg: NodeConfig;
}

export class Agent extends EventEmitter {
  readonly keys: Keys;
  readonly nodeId: string;
  private readonly cfg: NodeConfig;
  private readonly etcd: Etcd3;
  private readonly keepaliveClients: Etcd3[];
  private backend!: Backend;

  private fence!: FenceTimer;
  private kernel!: KernelGate;
  private watch!: ClusterWatch;
  private session!: NodeSession;
  private election!: Election;
  private rebalancer!: Rebalancer;
  private recorder?: EventRecorder;
  private reconciler!: ClaimReconciler;
  private status!: StatusWriter;
  /** Service checks and the maintenance file (DESIGN §14): a failing node registers `health` and gets no buckets. */
  private health!: HealthMonitor;
  private stopLoopDelay: (() => void) | undefined;
  private resync: NodeJS.Timeout | undefined;
  private phase: AgentPhase = { phase: 'starting' };
  /** Our node key: what it says (draining, readiness, health) and when it is written. */
  private readonly registration: Registration;
  private readonly abort = new AbortController();
  private starting: Promise<void> | null = null;
  /** Why the agent must exit non-zero (kernel state unconfirmed, fence worker died); null = clean. */
  private failure: string | null = null;
  /** The kernel rules follow the spec in etcd; the reconciler plans from what they were set up for. */
  private specs!: SpecApplier;
  private leases!: LeaseRecord;
  /** The lease a planned restart left, while we adopt it. */
  private adopting: string | null = null;
  /** A foreign lease on our node key that had expired when we started (its key may linger for ~500 ms). */
  private expiredForeignLease: string | null = null;

  constructor(opts: AgentOptions) {
    super();
    this.cfg = opts.cfg;
    this.nodeId = opts.cfg.nodeId;
    this.keys = keysFor(opts.cfg.cluster);
    // The reconnect backoff is client.ts's (RECONNECT_BACKOFF_MS), like every other etcd client of ours.
    const client = (endpoints: string[]): Etcd3 => createEtcdClient({ ...opts.cfg.etcd, endpoints });
    this.etcd = client(opts.cfg.etcd.endpoints);
    const eps = opts.cfg.etcd.endpoints;
    this.keepaliveClients = eps.length > 1 ? eps.map((e) => client([e])) : [this.etcd];
    this.registration = new Registration({
      etcd: this.etcd,
      keys: this.keys,
      nodeId: this.nodeId,
      weight: this.cfg.weight,
      watch: () => this.watch,
      draining: () =>
        this.phase.phase === 'draining' ||
        this.phase.phase === 'stopping' ||
        (this.phase.phase === 'running' && this.phase.drainRequested),
      health: () => this.health?.reason ?? undefined,
      current: () => (this.phase.phase === 'running' && this.session?.isLive() ? (this.session.leaseId ?? null) : null),
      changed: () => this.status?.mark(),
      emit: (e) => this.emitEvent(e),
      signal: this.abort.signal,
    });
  }

  private emitEvent(e: AgentEvent): void {
    this.emit('event', e);
    this.registration.noteBackendHealth(e);
  }

  get state(): ClusterState {
    return this.watch.state;
  }

  get isLeader(): boolean {
    return this.election?.isLeader ?? false;
  }

  get sessionState(): NodeSession['state'] {
    return this.session.state;
  }

  /** Non-null when the daemon must exit non-zero. */
  get failureReason(): string | null {
    return this.failure;
  }

  get currentPhase(): AgentPhase {
    return this.phase;
  }

  /** The backend as it describes itself (after start: which kernel path it chose, for the start line). */
  describeBackend(): BackendDescription | null {
    return this.backend?.describe() ?? null;
  }

  /** Start everything; resolves once the first lease is held (retries until etcd answers or stop()). */
  start(): Promise<void> {
    this.starting ??= this.startInner();
    return this.starting;
  }

  private async startInner(): Promise<void> {
    this.throwIfStopping();
    const emit = (e: AgentEvent): void => this.emitEvent(e);
    this.leases = await LeaseRecord.load(this.cfg.stateDir, this.cfg.cluster, this.nodeId, (file, error) =>
      emit({ event: 'stateError', op: 'readLeaseRecord', file, error }),
    );
    this.backend = makeBackend(this.cfg.backend, this.nodeId, this.cfg.stateDir);
    this.fence = await FenceTimer.start({
      backend: this.cfg.backend,
      nodeId: this.nodeId,
      stateDir: this.cfg.stateDir,
      onFenced: (m) => this.session?.handleWorkerFenced(m),
      onWorkerError: (err) => {
        emit({ event: 'fenceWorkerDied', error: err.message });
        // Without its timer we cannot promise the deadline on a stalled loop: stop acquiring, hand the buckets
        // over through a drain (the backend's own expiry still bounds them), then exit non-zero (daemon).
        this.failure ??= `fence worker died: ${err.message}`;
        this.emit('fatal', this.failure);
      },
    });
    // The session first: the kernel gate, claims, election and status writer act under it.
    this.session = new NodeSession({
      etcd: this.etcd,
      keepaliveClients: this.keepaliveClients,
      ttlSeconds: this.cfg.leaseTtlSeconds,
      marginMs: this.cfg.fenceMarginMs > 0 ? this.cfg.fenceMarginMs : defaultFenceMarginMs(this.cfg.leaseTtlSeconds),
      fence: this.fence,
      emit,
      hooks: {
        onLease: (leaseId) => this.onLease(leaseId),
        onAck: () => {
          void this.kernel.refresh().catch(() => undefined);
        },
        onFenced: (reason, cleared) => this.onFenced(reason, cleared),
        clearKernel: () => clearConfirmed(this.kernel, 1000),
        onUnfenced: () => {
          this.reconciler.trigger();
          this.status.mark();
        },
      },
    });
    this.kernel = new KernelGate({
      backend: this.backend,
      session: this.session,
      emit,
      onExpired: () => this.reconciler?.trigger(),
    });
    this.specs = new SpecApplier({
      keys: this.keys,
      kernel: this.kernel,
      state: () => this.watch.state,
      emit,
      changed: () => this.reconciler?.trigger(),
      setUp: (error) =>
        this.registration.setNotReady(
          error === null ? null : { cause: 'ensureFailed', message: `backend not set up: ${error}`.slice(0, 500) },
        ),
      signal: this.abort.signal,
    });
    this.stopLoopDelay = startLoopDelayMonitor(emit);
    this.throwIfStopping();

    // A planned restart (DESIGN §13) left its lease, claims and kernel entries to adopt: keep the kernel as it is
    // until we know whether the lease lives. Otherwise nothing is claimed under a lease we do not have yet, so
    // whatever the backend holds is an orphan of an earlier run: release it before anything else.
    const restart = await this.takeRestartRecord();
    if (restart) await this.kernel.read().catch(() => undefined);
    // The rules the kept entries were added under: a hash changed during the restart must not inherit them.
    if (restart?.hash) this.kernel.assumeRule(restart.hash);
    else await this.releaseOrphans();
    this.watch = await this.retry('watch', () =>
      watchCluster(this.etcd, this.keys, {
        onChange: (c) => this.onChange(c),
        onError: (err) => emit({ event: 'etcdError', op: 'watch', error: err.message }),
        applyDelayMs: watchLagFromEnv(),
      }),
    );
    for (const b of this.watch.state.badValues) emit({ event: 'badValue', key: b.key, error: b.error });
    if (this.watch.state.spec) await this.specs.ensure();
    await this.endPreviousIncarnation(restart?.leaseId);
    this.throwIfStopping();

    this.election = new Election({
      etcd: this.etcd,
      keys: this.keys,
      nodeId: this.nodeId,
      session: this.session,
      emit,
    });
    const leaderDeps = {
      etcd: this.etcd,
      keys: this.keys,
      nodeId: this.nodeId,
      election: this.election,
      state: () => this.watch.state,
      emit,
    };
    this.rebalancer = new Rebalancer({
      ...leaderDeps,
      onNotLeader: () => void this.recampaign(),
      // Longer than any state the protocol passes through under one lease (a registration, an expiry).
      sweepHoldMs: this.cfg.leaseTtlSeconds * 1000 + 1000,
    });
    this.recorder = new EventRecorder(leaderDeps);
    this.reconciler = new ClaimReconciler({
      etcd: this.etcd,
      keys: this.keys,
      nodeId: this.nodeId,
      kernel: this.kernel,
      state: () => this.watch.state,
      applied: () => this.specs.applied,
      session: this.session,
      draining: () => this.phase.phase === 'draining',
      releaseAll: () => this.phase.phase === 'stopping' && this.phase.releaseAll,
      emit,
      afterPass: () => {
        this.status.mark();
        this.emit('pass');
      },
    });
    this.status = new StatusWriter({
      keys: this.keys,
      nodeId: this.nodeId,
      session: this.session,
      emit,
      snapshot: () => ({
        held: Object.fromEntries([...this.kernel.held].map(([vip, s]) => [vip, [...s].sort((a, b) => a - b)])),
        backend: backendLabel(this.backend.describe()),
        fenced: this.session.state.state === 'fenced',
        lastError: this.kernel.lastError?.message.slice(0, 2000) ?? null,
        lastErrorAt: this.kernel.lastError?.at.toISOString() ?? null,
        lastApplyAt: this.kernel.lastApplyAt?.toISOString() ?? null,
        lastAckAt: this.session.lastAckAt?.toISOString() ?? null,
        ...(this.health.enabled ? { health: this.health.snapshot() } : {}),
        leaseTtlRequested: this.cfg.leaseTtlSeconds,
        leaseTtlGranted: this.session.grantedTtlSeconds,
        ...multicastOf(this.backend.describe()),
      }),
    });
    this.health = new HealthMonitor({
      health: this.cfg.health,
      emit,
      onDrain: () => this.registration.refresh(),
      onReport: () => this.status?.mark(),
    });
    await this.health.start();
    this.throwIfStopping();
    this.adopting = restart?.leaseId ?? null;
    const adopted =
      restart !== null &&
      (await this.session.adopt({
        leaseId: restart.leaseId,
        ttlSeconds: restart.ttlSeconds,
        deadline: monoNow() + (restart.deadlineAt - Date.now()),
      }));
    this.adopting = null;
    if (!adopted) {
      // The lease died with the restart: its claims are gone, so what the kernel holds is an orphan now.
      if (restart) await this.releaseOrphans();
      await this.session.start();
    }
    this.throwIfStopping();
    this.phase = { phase: 'running', drainRequested: false };
    // Resync the kernel model now and then: entries can vanish behind our back (an expiry after failed
    // refreshes, an operator, a reboot of the table); a claim we hold without its kernel entry is re-added.
    this.resync = setInterval(() => {
      if (!this.session.isLive()) return;
      void this.kernel
        .read()
        .then(() => this.reconciler.trigger())
        .catch(() => undefined);
    }, RESYNC_MS);
    this.resync.unref();
  }

  /** A signal during start(): stop building, so nothing registers after the shutdown ran. */
  private throwIfStopping(): void {
    if (this.abort.signal.aborted) throw new Error('agent stopped during start');
  }

  private async retry<T>(op: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (this.abort.signal.aborted) throw err;
        this.emitEvent({ event: 'etcdError', op, error: (err as Error).message });
        await sleep(backoffMs(attempt, 50, 1000), this.abort.signal);
      }
    }
  }

  private async releaseOrphans(): Promise<void> {
    let held;
    try {
      held = await this.kernel.read();
    } catch {
      held = new Map<string, Set<number>>();
    }
    const t0 = monoNow();
    if (!(await this.kernel.clear()))
      throw new BackendError('transient', 'clearing the kernel at start was not confirmed by a read-back');
    for (const [vip, s] of held) {
      for (const bucket of s) {
        this.emitEvent({
          event: 'released',
          vip,
          bucket,
          reason: 'startupOrphan',
          durationMs: Math.round((monoNow() - t0) * 100) / 100,
        });
      }
    }
  }

  /**
   * A node key of ours under a lease we recorded is an earlier run of this node: end it so its claims go now.
   * Under a live lease we never held it is another agent with our id (a cloned VM): refuse to start, and never
   * revoke it — a revoke shortens a live node's lease while its kernel still holds its buckets (DESIGN §13).
   */
  private async endPreviousIncarnation(adopting?: string): Promise<void> {
    const old = this.watch.state.nodes.get(this.nodeId);
    if (!old || old.lease === '0' || old.lease === adopting) return;
    if (!this.leases.has(old.lease)) {
      const ttl = await this.retry('leaseTimeToLive', () =>
        this.etcd.leaseClient.leaseTimeToLive({ ID: old.lease, keys: false }),
      );
      if (Number(ttl.TTL) > 0) throw this.nodeIdInUse(old.lease);
      // Expired: etcd deletes its key within its revoke loop; until then the picture may still show it.
      this.expiredForeignLease = old.lease;
      return;
    }
    try {
      await this.etcd.leaseClient.leaseRevoke({ ID: old.lease });
      this.emitEvent({ event: 'previousRevoked', leaseId: old.lease });
    } catch {
      // Already expired.
    }
  }

  private nodeIdInUse(lease: string): NodeIdInUseError {
    const other = this.watch.state.nodes.get(this.nodeId)?.value;
    const who = other ? ` (address ${other.address}, started ${other.startedAt})` : '';
    return new NodeIdInUseError(
      `node id "${this.nodeId}" is held by another live agent under lease ${BigInt(lease).toString(16)}${who}: ` +
        'give each node its own id (--node-id or nodeId in the config), or stop the other agent',
    );
  }

  private async onLease(leaseId: string): Promise<void> {
    if (this.phase.phase === 'stopping' || this.phase.phase === 'stopped') return;
    this.reconciler.resetLease();
    this.rebalancer.reset();
    // Recorded before it names our node key: a later start may revoke only a lease it finds recorded.
    // Unwritable stateDir: run on (a restart then refuses to start until this lease has expired).
    await this.leases
      .add(leaseId)
      .catch((err: Error) =>
        this.emitEvent({ event: 'stateError', op: 'recordLease', file: this.leases.file ?? '', error: err.message }),
      );
    // Adopting a planned restart's lease: this process's watch is fresh and the node held its buckets all along;
    // a "catching up" put would make the leader move them away.
    if (this.adopting === leaseId) await this.registration.put(leaseId);
    else await this.registration.putCurrent(leaseId);
    await this.election.campaign();
    this.election.evaluate(this.watch.state);
    this.status.mark(true);
    this.reconciler.trigger();
    if (this.election.isLeader) this.rebalancer.trigger();
  }

  private onFenced(reason: FenceReason, cleared: boolean): void {
    const buckets = this.kernel.heldCount();
    // Only a clear the worker confirmed empties the model: a bucket it may still hold keeps its claim.
    if (cleared) this.kernel.markCleared();
    // Clear from this side too, in case a write of ours raced with the worker (the session retries an
    // unconfirmed clear until it is confirmed).
    void this.kernel.clear().catch(() => undefined);
    this.emitEvent({ event: 'fenced', reason, buckets, cleared });
    if (reason === 'leaseLost') {
      this.election.reset('leaseLost');
      this.rebalancer.reset();
      this.reconciler.resetLease();
    }
    this.status.mark();
  }

  private async recampaign(): Promise<void> {
    const leaseId = this.session.leaseId;
    if (!leaseId || this.session.state.state !== 'live') return;
    try {
      await this.election.campaign();
      this.election.evaluate(this.watch.state);
      if (this.election.isLeader) this.rebalancer.trigger();
    } catch (err) {
      this.emitEvent({ event: 'etcdError', op: 'campaign', error: (err as Error).message });
      setTimeout(() => void this.recampaign(), 200).unref();
    }
  }

  private onChange(change: StateChange): void {
    const seenAt = monoNow();
    for (const b of change.bad) this.emitEvent({ event: 'badValue', key: b.key, error: b.error });
    const state = this.watch.state;
    const touched = (k: string): boolean => change.puts.includes(k) || change.deletes.includes(k);
    if (touched(this.keys.spec) || change.puts.includes(this.keys.prefix)) void this.specs.ensure();
    if (!this.session || !this.election) return;
    // Stopping: the lease is being revoked and nothing more may be claimed or led.
    if (this.phase.phase === 'stopping' || this.phase.phase === 'stopped') return;
    // Our node key must say what we are: re-put it if it vanished or was overwritten (bad data, an operator).
    const leaseId = this.session.leaseId;
    const mine = state.nodes.get(this.nodeId);
    const mineBad = state.badValues.some((b) => b.key === this.keys.node(this.nodeId));
    if (
      mine &&
      mine.lease !== '0' &&
      mine.lease !== this.expiredForeignLease &&
      !this.leases.has(mine.lease) &&
      this.session.isLive()
    ) {
      // Another agent registered our id under its own lease: we must not both run, and writing our key back
      // over it would just make the two fight. Stop (release, revoke our own lease) and exit non-zero.
      this.failure ??= this.nodeIdInUse(mine.lease).message;
      this.emit('terminal', this.failure);
      return;
    }
    if (mine && leaseId && mine.lease === leaseId && !mineBad && this.phase.phase === 'running') {
      if (mine.value.draining && !this.phase.drainRequested) this.emitEvent({ event: 'drainRequested' });
      this.phase = { phase: 'running', drainRequested: mine.value.draining };
    }
    if (leaseId && this.session.isLive() && (!mine || mine.lease !== leaseId || mineBad))
      this.registration.restore(leaseId);
    // Not a candidate while live (a campaign write failed, or our key vanished): stand again.
    if (
      this.election.evaluate(state) === 'recampaign' ||
      (this.election.campaignKey === null && this.session.isLive())
    ) {
      void this.recampaign();
    }
    if (this.election.isLeader) this.rebalancer.trigger(seenAt);
    this.recorder?.observe();
    this.reconciler.noteChange(change, seenAt);
    this.reconciler.trigger();
  }

  /** Bucket handoff done: no claim, no kernel entry, nothing assigned to us. */
  private handedOff(): boolean {
    if (this.reconciler.heldClaimCount() > 0 || this.kernel.heldCount() > 0) return false;
    for (const a of this.watch.state.assignments.values()) {
      if (Object.values(a.value.owners).includes(this.nodeId)) return false;
    }
    return true;
  }

  /**
   * Graceful stop: mark draining, let the leader move every bucket away through the normal release → acquire
   * path, then release what is left, revoke the lease and close. `hurry` (a second signal) cuts the wait short.
   */
  async shutdown(opts: { timeoutMs: number; hurry?: AbortSignal }): Promise<void> {
    if (this.phase.phase === 'stopping' || this.phase.phase === 'stopped') return;
    const emit = (e: AgentEvent): void => this.emitEvent(e);
    if (this.phase.phase === 'running' && this.session?.isLive()) {
      this.phase = { phase: 'draining', since: Date.now() };
      emit({ event: 'shutdown', phase: 'draining' });
      const leaseId = this.session.leaseId;
      const until = Date.now() + opts.timeoutMs;
      try {
        if (leaseId) await withTimeout(this.registration.put(leaseId), Math.max(100, opts.timeoutMs));
        await new Promise<void>((resolve) => {
          const check = (): void => {
            if (this.handedOff() || Date.now() >= until || opts.hurry?.aborted) {
              clearInterval(t);
              this.off('pass', check);
              opts.hurry?.removeEventListener('abort', check);
              resolve();
            }
          };
          const t = setInterval(check, 50);
          this.on('pass', check);
          opts.hurry?.addEventListener('abort', check);
          this.reconciler.trigger();
          check();
        });
      } catch (err) {
        emit({ event: 'etcdError', op: 'drain', error: (err as Error).message });
      }
      emit({ event: 'shutdown', phase: this.handedOff() ? 'handedOff' : 'timedOut' });
    }
    this.phase = { phase: 'stopping', releaseAll: true };
    await this.stopEverything(opts.hurry?.aborted ? 300 : 1000);
  }

  /**
   * SIGHUP (DESIGN §13): exit leaving lease, claims and kernel entries in place for the next start to adopt — no
   * bucket moves. Only when the next process can be expected to ack before the fence deadline; otherwise (or
   * without a stateDir to hand over through) it drains like a SIGTERM and says why.
   */
  async restartInPlace(opts: { timeoutMs: number; hurry?: AbortSignal }): Promise<'planned' | 'drain'> {
    const emit = (e: AgentEvent): void => this.emitEvent(e);
    const headroom = (): number => {
      const d = this.fence?.currentDeadline() ?? 0;
      return d === 0 ? 0 : Math.round(d - monoNow());
    };
    // The headroom grows back to TTL − margin at each ack: wait (at most one keepalive interval) for enough.
    const waitUntil = monoNow() + (this.session?.grantedTtlSeconds ?? 0) * 1000;
    while (this.session?.isLive() && headroom() < this.cfg.restartBudgetMs && monoNow() < waitUntil) await sleep(20);
    const leaseId = this.session?.leaseId ?? null;
    let reason: RestartReason = 'requested';
    if (this.phase.phase !== 'running' || !this.session?.isLive() || !leaseId) reason = 'notLive';
    else if (!this.cfg.stateDir) reason = 'noStateDir';
    else if (headroom() < this.cfg.restartBudgetMs) reason = 'ttlTooShort';
    if (reason !== 'requested') {
      emit({ event: 'restart', mode: 'drain', reason, headroomMs: headroom() });
      await this.shutdown(opts);
      return 'drain';
    }
    const running = this.phase;
    this.phase = { phase: 'stopping', releaseAll: false };
    // Nothing more is planned or written: every loop stops, and a pass in flight finishes first.
    if (this.resync) clearInterval(this.resync);
    this.rebalancer.stop();
    this.reconciler.stop();
    this.status.stop();
    await withTimeout(this.reconciler.settle(), 1000).catch(() => undefined);
    const record = {
      v: 1 as const,
      cluster: this.cfg.cluster,
      nodeId: this.nodeId,
      leaseId: leaseId!,
      ttlSeconds: this.session.grantedTtlSeconds,
      deadlineAt: Date.now() + headroom(),
      held: Object.fromEntries([...this.kernel.held].map(([vip, b]) => [vip, [...b].sort((x, y) => x - y)])),
      hash: this.kernel.ruleIdentities(),
      writtenAt: Date.now(),
    };
    try {
      await writeRestartRecord(this.cfg.stateDir!, record);
    } catch (err) {
      emit({ event: 'stateError', op: 'recordRestart', file: this.cfg.stateDir!, error: (err as Error).message });
      emit({ event: 'restart', mode: 'drain', reason: 'recordFailed', headroomMs: headroom() });
      this.phase = running;
      await this.stopNow();
      return 'drain';
    }
    emit({ event: 'restart', mode: 'planned', reason, headroomMs: headroom() });
    this.abort.abort();
    // No fence, no clear, no revoke: the next process carries on under this lease (or, if none comes back, the
    // kernel's own timeouts and the lease's expiry end it like a crash).
    await this.session.close({ revoke: false });
    await this.closeAll(1000);
    return 'planned';
  }

  /** The record a planned restart left (consumed: a later crash is never taken for one). */
  private async takeRestartRecord(): Promise<RestartRecord | null> {
    if (!this.cfg.stateDir) return null;
    const r = await takeRestartRecord(this.cfg.stateDir, this.cfg.cluster, this.nodeId);
    if (r.ok) return r.record;
    if (r.why === 'invalid')
      this.emitEvent({
        event: 'stateError',
        op: 'readRestartRecord',
        file: restartRecordFile(this.cfg.stateDir, this.cfg.cluster, this.nodeId),
        error: r.error ?? 'invalid',
      });
    return null;
  }

  /** Release everything and stop, at once (second signal, fatal errors). */
  async stopNow(): Promise<void> {
    if (this.phase.phase === 'stopped') return;
    this.phase = { phase: 'stopping', releaseAll: true };
    await this.stopEverything(300);
  }

  private async stopEverything(stepTimeoutMs: number): Promise<void> {
    const emit = (e: AgentEvent): void => this.emitEvent(e);
    this.abort.abort();
    this.phase = { phase: 'stopping', releaseAll: true };
    this.session?.letGo();
    // A signal during start(): let start() reach its next stop check first, bounded, so whatever it built by
    // then (fence worker, backend, session) is stopped below rather than leaked running after us.
    if (this.starting) await withTimeout(this.starting, stepTimeoutMs * 3).catch(() => undefined);
    if (this.resync) clearInterval(this.resync);
    const cleared = await releaseAndRevoke(
      {
        loops: [this.rebalancer, this.recorder, this.reconciler, this.status, this.health],
        fence: this.fence,
        kernel: this.kernel,
        session: this.session,
      },
      stepTimeoutMs,
      emit,
    );
    if (!cleared) this.failure ??= 'backend clear not confirmed at shutdown';
    await this.closeAll(stepTimeoutMs);
  }

  /** Close watch, fence worker (it clears nothing when stopped), backend and clients, each bounded. */
  private async closeAll(stepTimeoutMs: number): Promise<void> {
    await closeEach([
      [this.watch && (() => this.watch.close()), stepTimeoutMs],
      [this.fence && (() => this.fence.stop()), stepTimeoutMs * 3],
      [this.backend && (() => this.backend.close()), stepTimeoutMs],
    ]);
    this.stopLoopDelay?.();
    this.etcd.close();
    for (const c of this.keepaliveClients) if (c !== this.etcd) c.close();
    this.phase = { phase: 'stopped' };
    this.emitEvent({ event: 'shutdown', phase: 'done' });
  }
}

/** The nftables backend's cluster MAC subscriptions, for the status key ("…; …" in its description). */
function multicastOf(d: BackendDescription): { multicast?: string[] } {
  const m = d.detail.multicast;
  if (typeof m !== 'string' || m === 'off') return {};
  return { multicast: m.split('; ').slice(0, 256) };
}

/** The backend as status shows it: its kind, and the nftables backend's kernel path ("nftables (libnftables)"). */
function backendLabel(d: BackendDescription): string {
  return typeof d.detail.transport === 'string' && d.detail.transport !== 'unopened'
    ? `${d.kind} (${d.detail.transport})`
    : d.kind;
}
