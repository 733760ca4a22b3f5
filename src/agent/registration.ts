import { hostname } from 'node:os';
import type { Etcd3 } from 'etcd3';
import type { Keys } from '../etcd/keys.js';
import { cmpRevision, type ClusterWatch } from '../etcd/store.js';
import type { NodeValue } from '../etcd/values.js';
import { backoffMs } from '../backoff.js';
import { packageVersion } from '../version.js';
import { monoNow, sleep } from './clock.js';
import type { AgentEvent } from './events.js';
import { heldLease } from './leaseScope.js';

/** Written into the node key, for operators. */
const AGENT_VERSION = packageVersion();
/** How long our own watch may take to deliver our registration before it is reloaded. */
const CATCH_UP_MS = 1000;
/** Consecutive apply failures (retries given up) after which a node says it is not ready. */
const APPLY_FAILURES_NOT_READY = 3;

/** Why a node takes no buckets: its set-up failed (retried on its own backoff), or its applies keep failing. */
export type NotReady = { cause: 'ensureFailed' | 'applyFailing'; message: string };

export interface RegistrationOptions {
  etcd: Etcd3;
  keys: Keys;
  nodeId: string;
  weight: number;
  watch: () => ClusterWatch;
  /** Our node key says draining: our own stop, or the operator's drain. */
  draining: () => boolean;
  /** `unhealthy:<check>` / `maintenance`, or undefined (DESIGN §14). */
  health: () => string | undefined;
  /** The lease we may write our key under now (running and live), or null. */
  current: () => string | null;
  /** What the key says changed (the status writer writes too). */
  changed: () => void;
  emit: (e: AgentEvent) => void;
  signal: AbortSignal;
}

/**
 * Our node key (`nodes/<id>`): what it says (address, weight, draining, readiness, health) and when it is written.
 * Readiness lives here: a node that cannot apply what it is given registers not ready, and the leader treats it
 * as draining, so it is handed no buckets it cannot serve.
 */
export class Registration {
  readonly startedAt = new Date().toISOString();
  /** Why the backend cannot take buckets; null = ready. Registered as `notReady` (its message). */
  private notReady: NotReady | null = null;
  /** Registered under a new lease, our picture not yet shown current: not assignable (see putCurrent). */
  private catchingUp = false;
  private restoring = false;
  private applyFailures = 0;
  private applyTrials = 0;

  constructor(private readonly o: RegistrationOptions) {}

  value(): NodeValue {
    return {
      v: 1,
      address: hostname().slice(0, 255),
      weight: this.o.weight,
      draining: this.o.draining(),
      version: AGENT_VERSION,
      startedAt: this.startedAt,
      ...(this.notReady !== null
        ? { notReady: this.notReady.message }
        : this.catchingUp
          ? { notReady: 'catching up with etcd after a new lease' }
          : {}),
      ...(this.o.health() ? { health: this.o.health() } : {}),
    };
  }

  /** Write our key under `leaseId`; the revision it was written at. */
  async put(leaseId: string): Promise<string> {
    const r = await heldLease(this.o.etcd, leaseId)
      .put(this.o.keys.node(this.o.nodeId))
      .value(JSON.stringify(this.value()));
    return r.header.revision;
  }

  /**
   * Register a new lease, assignable only once our picture of etcd is current. A node coming back from a cut
   * may still watch on the dead connection: the leader would hand it join moves, the old owners would release,
   * and it would acquire only when its stale picture caught up (seconds of black hole). So the first put says
   * "catching up" (not assignable); once our own watch has delivered that put, the picture holds everything
   * before it, and the second put makes us assignable. A watch that does not deliver it is reloaded.
   */
  async putCurrent(leaseId: string): Promise<void> {
    this.catchingUp = true;
    try {
      const revision = await this.put(leaseId);
      for (let attempt = 0; !(await this.pictureReaches(revision, CATCH_UP_MS)); attempt++) {
        const watch = this.o.watch();
        this.o.emit({
          event: 'etcdError',
          op: 'watch',
          error: `picture at revision ${watch.state.revision} did not reach ${revision} in ${CATCH_UP_MS} ms: reloading the watch`,
        });
        if (attempt >= 2) throw new Error(`picture did not catch up with revision ${revision}`);
        await watch.reload();
      }
    } finally {
      this.catchingUp = false;
    }
    await this.put(leaseId);
  }

  /** What the key says changed (readiness, health, draining): write it again while running. */
  refresh(): void {
    this.o.changed();
    const leaseId = this.o.current();
    if (!leaseId) return;
    void this.put(leaseId).catch((err: Error) =>
      this.o.emit({ event: 'etcdError', op: 'register', error: err.message }),
    );
  }

  /** Our key vanished or carries another lease (a write failed, damage): put it back, one write at a time. */
  restore(leaseId: string): void {
    if (this.restoring) return;
    this.restoring = true;
    void this.put(leaseId)
      .catch((err: Error) => this.o.emit({ event: 'etcdError', op: 'register', error: err.message }))
      .finally(() => (this.restoring = false));
  }

  /**
   * A node whose backend cannot be set up must not be given buckets it cannot apply: it registers as not ready
   * until an ensure succeeds.
   */
  setNotReady(next: NotReady | null): void {
    if (this.notReady?.message === next?.message) return;
    this.notReady = next;
    this.o.emit({ event: 'readiness', ready: next === null, ...(next ? { reason: next.message } : {}) });
    this.refresh();
  }

  /**
   * Applies that keep failing (an exec hook that always fails, a kernel that refuses) make the node not ready
   * like a failed set-up: otherwise the leader keeps handing it buckets it cannot serve. It tries again after a
   * backoff (its trial costs at most the join moves of one interval) and stays ready once an apply succeeds.
   */
  noteBackendHealth(e: AgentEvent): void {
    if (e.event === 'acquired') {
      this.applyFailures = 0;
      this.applyTrials = 0;
    } else if (e.event === 'backendError' && e.op === 'apply' && !e.willRetry) {
      // On a trial after a backoff one failure is enough: the trial is what costs clients.
      const needed = this.applyTrials > 0 ? 1 : APPLY_FAILURES_NOT_READY;
      if (++this.applyFailures < needed || this.notReady !== null) return;
      this.setNotReady({ cause: 'applyFailing', message: `backend apply failing: ${e.error}`.slice(0, 500) });
      const wait = backoffMs(this.applyTrials++, 5000, 60_000);
      setTimeout(() => {
        if (this.notReady?.cause === 'applyFailing') {
          this.applyFailures = 0;
          this.setNotReady(null);
        }
      }, wait).unref();
    }
  }

  private async pictureReaches(revision: string, timeoutMs: number): Promise<boolean> {
    const until = monoNow() + timeoutMs;
    while (cmpRevision(this.o.watch().state.revision, revision) < 0) {
      if (monoNow() >= until || this.o.signal.aborted) return false;
      await sleep(5);
    }
    return true;
  }
}
