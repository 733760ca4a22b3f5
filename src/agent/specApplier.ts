import type { ClusterSpec } from '../config/types.js';
import type { Keys } from '../etcd/keys.js';
import { specKeyRevision, type ClusterState } from '../etcd/store.js';
import { hashIdentity } from '../hash/identity.js';
import { backoffMs } from '../backoff.js';
import type { AppliedSpec } from './claims.js';
import { monoNow, sleep } from './clock.js';
import type { AgentEvent } from './events.js';
import type { KernelGate } from './kernel.js';

// Spec application (DESIGN §12): the kernel rules follow the spec in etcd one change at a time, in order. A new
// hash identity for a VIP is a new bucket space: every bucket of it is released first (kernel, then claims, the
// normal path) while the old rule still numbers them, and only then is the rule switched. The reconciler plans from
// `applied`, never from a newer picture, and acquires only while the spec key still holds what the kernel runs.

export interface SpecApplierOptions {
  keys: Keys;
  kernel: KernelGate;
  state: () => ClusterState;
  emit: (e: AgentEvent) => void;
  /** What the reconciler acts on changed: pass again (and, while a VIP is re-hashed, keep passing). */
  changed: () => void;
  /** The backend could not be set up (message), or is set up again (null). */
  setUp: (error: string | null) => void;
  /** Aborted at shutdown: stop waiting for a re-hashed VIP's release. */
  signal: AbortSignal;
  /** How long a re-hashed VIP's buckets may take to be released before the switch is given up (retried). */
  releaseTimeoutMs?: number;
}

export class SpecApplier {
  private spec: ClusterSpec | null = null;
  /** The `spec` key's mod revision `spec` stands for: acquire txns compare it. */
  private modRevision: string | null = null;
  private chain: Promise<void> = Promise.resolve();
  private failures = 0;

  constructor(private readonly o: SpecApplierOptions) {}

  /** The spec the kernel rules were last set up for, and the key revision it was read at. */
  get applied(): AppliedSpec {
    return { spec: this.spec, modRevision: this.modRevision };
  }

  /** Bring the kernel to the picture's spec; serialized, so changes apply one after the other, in order. */
  ensure(): Promise<void> {
    const p = this.chain.then(() => this.ensureNow());
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async ensureNow(): Promise<void> {
    const state = this.o.state();
    const entry = state.spec;
    const spec = entry?.spec ?? null;
    const keyMod = specKeyRevision(state, this.o.keys);
    if (spec === this.spec) {
      // The key moved without a new spec (garbage over it keeps the last good one, which the kernel runs).
      if (spec && keyMod !== this.modRevision) {
        this.modRevision = keyMod;
        this.o.changed();
      }
      return;
    }
    if (!spec || !entry) {
      this.spec = null;
      this.modRevision = null;
      this.o.changed();
      return;
    }
    const prev = this.spec;
    const rehashed = spec.vips
      .filter((v) => {
        const o = prev?.vips.find((x) => x.address === v.address);
        return o !== undefined && hashIdentity(o) !== hashIdentity(v);
      })
      .map((v) => v.address);
    if (prev && rehashed.length > 0) {
      // Until the switch the VIP is out of the applied spec, so no assignment of it is acted on.
      this.spec = { ...prev, vips: prev.vips.filter((v) => !rehashed.includes(v.address)) };
      this.o.changed();
      if (!(await this.kernelReleased(rehashed, this.o.releaseTimeoutMs ?? 10_000))) {
        this.failed(`buckets of re-hashed VIP(s) ${rehashed.join(', ')} not released; keeping the old rule`);
        return;
      }
    }
    try {
      await this.o.kernel.ensure(spec);
      this.spec = spec;
      this.modRevision = keyMod;
      this.o.emit({ event: 'specApplied', generation: entry.generation, modRevision: keyMod ?? '0' });
      this.failures = 0;
      this.o.setUp(null);
    } catch (err) {
      this.failed((err as Error).message);
    }
    this.o.changed();
  }

  private failed(error: string): void {
    this.o.emit({ event: 'backendError', op: 'ensure', error, attempt: this.failures + 1, willRetry: true });
    this.o.setUp(error);
    // Backs off to 30 s: a backend that cannot set up (an unsupported kernel) must not flood the log.
    const wait = backoffMs(this.failures++, 1000, 30_000);
    setTimeout(() => void this.ensure(), wait).unref();
  }

  private async kernelReleased(vips: string[], timeoutMs: number): Promise<boolean> {
    const until = monoNow() + timeoutMs;
    while (monoNow() < until && !this.o.signal.aborted) {
      if (vips.every((v) => (this.o.kernel.held.get(v)?.size ?? 0) === 0)) return true;
      await sleep(20);
      this.o.changed();
    }
    return false;
  }
}
