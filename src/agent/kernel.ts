import pRetry from 'p-retry';
import type { Backend, BucketChange, HeldBuckets } from '../backends/backend.js';
import type { ClusterSpec } from '../config/types.js';
import { BackendError } from '../errors.js';
import { hashIdentity } from '../hash/identity.js';
import type { AgentEvent } from './events.js';
import type { LeaseScope } from './leaseScope.js';

// The main thread's only door to the kernel. It serializes backend calls, never adds a bucket once the fence
// flag is up or the deadline is too close, hands every add the time left to the fence deadline (so backends
// that can expire entries do), retries transient failures with backoff, and undoes an add that raced with the
// fence worker's clear. `held` is the model of what the kernel holds, kept from read-backs and applies.

export interface KernelOptions {
  backend: Backend;
  /**
   * The session: adds go ahead only while it is live, under the lease the add was planned with (a pass may
   * outlive its lease), and never with the fence up or its deadline too close; every add and refresh holds the
   * entries until that deadline.
   */
  session: LeaseScope;
  emit: (e: AgentEvent) => void;
  /** Held entries ran out in the backend (seen at a refresh): the reconciler should re-add what it claims. */
  onExpired?: () => void;
  /** Do not add when less than this is left before the fence deadline. */
  minHoldMs?: number;
  retries?: number;
}

/**
 * Why adds were not made: fenced, too little time left before the fence deadline, the session not live (still
 * registering, or letting go at shutdown), the lease they were planned under is no longer the session's, or they
 * were planned under another hash identity than the rule the kernel runs now.
 */
export type AddRefusal = 'fenced' | 'deadlineShort' | 'notLive' | 'leaseChanged' | 'specStale';

export interface ApplyResult {
  added: BucketChange[];
  refused?: AddRefusal;
}

export class KernelGate {
  readonly held: HeldBuckets = new Map();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly minHoldMs: number;
  private readonly retries: number;
  lastError: { message: string; at: Date } | null = null;
  lastApplyAt: Date | null = null;
  /** VIP → hash identity of the rule the backend was last set up with (null: not known yet). */
  private rule: Map<string, string> | null = null;

  constructor(private readonly o: KernelOptions) {
    this.minHoldMs = o.minHoldMs ?? 25;
    this.retries = o.retries ?? 4;
  }

  get kind(): string {
    return this.o.backend.kind;
  }

  has(vip: string, bucket: number): boolean {
    return this.held.get(vip)?.has(bucket) ?? false;
  }

  heldCount(): number {
    let n = 0;
    for (const s of this.held.values()) n += s.size;
    return n;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * Set the backend up for a (new) spec. Buckets a shrinking VIP no longer has are removed first, while the
   * backend still knows the old bucket count (afterwards it would refuse them as out of range); then the model
   * is re-read, since ensure drops VIPs that left the spec. A VIP whose hash identity changes loses every bucket
   * first, confirmed, or the rule is not switched: a bucket kept across the switch would serve other clients
   * than its claim was taken for (DESIGN §12; the agent releases them before, this holds even for an add that
   * raced with that release).
   */
  ensure(spec: ClusterSpec): Promise<void> {
    return this.serial(async () => {
      const shrink: BucketChange[] = [];
      const rehashed: BucketChange[] = [];
      for (const v of spec.vips) {
        const held = [...(this.held.get(v.address) ?? [])];
        const old = this.rule?.get(v.address);
        if (old !== undefined && old !== hashIdentity(v)) {
          if (held.length > 0) rehashed.push({ vip: v.address, add: [], remove: held });
          continue;
        }
        const gone = held.filter((b) => b > v.buckets);
        if (gone.length > 0) shrink.push({ vip: v.address, add: [], remove: gone });
      }
      if (rehashed.length > 0) {
        await this.withRetry('apply', () => this.o.backend.apply(rehashed));
        for (const c of rehashed) this.forget(c.vip, c.remove);
      }
      if (shrink.length > 0) {
        await this.withRetry('apply', () => this.o.backend.apply(shrink)).catch(() => undefined);
      }
      await this.withRetry('ensure', () => this.o.backend.ensure(spec));
      this.rule = new Map(spec.vips.map((v) => [v.address, hashIdentity(v)]));
      await this.readNow().catch(() => undefined);
    });
  }

  /** Drop buckets from the model that the backend cannot be asked about any more (out of the spec's range). */
  forget(vip: string, buckets: number[]): void {
    const s = this.held.get(vip);
    if (!s) return;
    for (const b of buckets) s.delete(b);
    if (s.size === 0) this.held.delete(vip);
  }

  read(): Promise<HeldBuckets> {
    return this.serial(() => this.readNow());
  }

  private async readNow(): Promise<HeldBuckets> {
    const h = await this.withRetry('read', () => this.o.backend.read());
    this.held.clear();
    for (const [vip, s] of h) if (s.size > 0) this.held.set(vip, new Set(s));
    return h;
  }

  /**
   * Apply removes and adds. Removes always go through; adds only while unfenced with enough time left, and, given
   * the spec they were planned (claimed) under, only for VIPs the kernel's rule numbers the same way.
   * Resolves with the adds that really were applied and, when some were not, why.
   */
  apply(changes: BucketChange[], opts: { lease?: string; spec?: ClusterSpec | null } = {}): Promise<ApplyResult> {
    return this.serial(async () => {
      const removes = changes
        .filter((c) => c.remove.length > 0)
        .map((c) => ({ vip: c.vip, add: [], remove: c.remove }));
      if (removes.length > 0) {
        await this.withRetry('apply', () => this.o.backend.apply(removes));
        for (const c of removes) for (const b of c.remove) this.held.get(c.vip)?.delete(b);
        this.lastApplyAt = new Date();
      }
      const wanted = changes.filter((c) => c.add.length > 0).map((c) => ({ vip: c.vip, add: c.add, remove: [] }));
      // Serialized with ensure: the rule cannot switch between this check and the write.
      const adds = opts.spec === undefined ? wanted : wanted.filter((c) => this.sameRule(opts.spec ?? null, c.vip));
      const stale: ApplyResult = adds.length < wanted.length ? { added: [], refused: 'specStale' } : { added: [] };
      if (adds.length === 0) return stale;
      const refused = this.refusal(opts.lease);
      if (refused) return { added: [], refused };
      let tries = 0;
      try {
        await this.withRetry('apply', async () => {
          const r = this.refusal(opts.lease);
          if (r) throw new FencedDuringApply(r, tries > 0);
          tries++;
          await this.o.backend.apply(adds, { holdForMs: this.o.session.msToDeadline() });
        });
      } catch (err) {
        // Refused before the first write: nothing can have landed.
        if (err instanceof FencedDuringApply && !err.afterFailedWrite) return { added: [], refused: err.refusal };
        // Unknown what landed (a batch over several VIPs may stop half way, a CLUSTERIP "+N" may have gone
        // through before the write failed): undo VIP by VIP, so one VIP the backend refuses cannot keep another's
        // adds in place, then re-read what really is held.
        for (const c of adds) {
          await this.o.backend.apply([{ vip: c.vip, add: [], remove: c.add }]).catch(() => undefined);
        }
        // The read-back is the truth. Without it, every add counts as held so its claim is kept (never a
        // kernel bucket without its claim); a later pass removes it from the kernel first.
        const reread = await this.readNow()
          .then(() => true)
          .catch(() => false);
        if (!reread) {
          this.lastError = {
            message: `apply: ${(err as Error).message}; undo not confirmed, keeping the claims`,
            at: new Date(),
          };
          this.addToModel(adds);
        }
        if (err instanceof FencedDuringApply) return { added: [], refused: err.refusal };
        throw err;
      }
      if (this.o.session.isFenced()) {
        // The worker fenced while we wrote: our add may have landed after its clear.
        this.addToModel(adds);
        await this.clearAndConfirm();
        return { added: [], refused: 'fenced' };
      }
      if (!this.leaseOk(opts.lease)) {
        // The lease changed (or we began to let go) while we wrote: these adds have no claim under the live
        // lease. Take them back.
        const refused = this.o.session.isLive() ? 'leaseChanged' : 'notLive';
        for (const c of adds) {
          await this.o.backend.apply([{ vip: c.vip, add: [], remove: c.add }]).catch(() => undefined);
        }
        await this.readNow().catch(() => this.addToModel(adds));
        return { added: [], refused };
      }
      this.addToModel(adds);
      this.lastApplyAt = new Date();
      return { ...stale, added: adds };
    });
  }

  /** Whether `planned` numbers the VIP's buckets as the rule the backend was last set up with. */
  private sameRule(planned: ClusterSpec | null, vip: string): boolean {
    const p = planned?.vips.find((v) => v.address === vip);
    return p !== undefined && this.rule?.get(vip) === hashIdentity(p);
  }

  /**
   * The rules the kernel already runs, as a planned restart recorded them (DESIGN §13): the first ensure then
   * removes what a VIP whose identity changed meanwhile still holds, like any later one.
   */
  assumeRule(hash: Readonly<Record<string, string>>): void {
    this.rule = new Map(Object.entries(hash));
  }

  /** VIP → hash identity of the rule the backend runs, for a planned restart's record. */
  ruleIdentities(): Record<string, string> {
    return Object.fromEntries(this.rule ?? []);
  }

  /** Extend every held bucket to the current deadline (after each acknowledged keepalive). */
  refresh(): Promise<void> {
    return this.serial(async () => {
      if (this.heldCount() === 0 || this.refusal() !== undefined) return;
      // Only what our model holds (claimed and applied): a bucket the kernel lists beyond it has no claim
      // behind it and must be left to expire, never renewed.
      const only: HeldBuckets = new Map([...this.held].map(([vip, s]) => [vip, new Set(s)]));
      const renewed = await this.withRetry('refresh', () =>
        this.o.backend.refresh(this.o.session.msToDeadline(), { only }),
      );
      if (this.o.session.isFenced()) {
        await this.clearAndConfirm();
        return;
      }
      if (renewed === null) return;
      // Entries that ran out before this refresh (the loop stalled past their expiry, say): the model must drop
      // them now, or nothing re-adds them until the next resync; the reconciler re-adds under the normal gate.
      const expired: BucketChange[] = [];
      for (const [vip, s] of only) {
        const gone = [...s].filter((b) => !renewed.get(vip)?.has(b));
        if (gone.length > 0) expired.push({ vip, add: [], remove: gone });
      }
      for (const c of expired) this.forget(c.vip, c.remove);
      for (const c of expired) this.o.emit({ event: 'kernelExpired', vip: c.vip, buckets: c.remove });
      if (expired.length > 0) this.o.onExpired?.();
    });
  }

  /**
   * Drop everything (shutdown, fence follow-up) and read back. True only when the backend confirmed it empty.
   * The model loses only what the read-back shows gone: after a failed clear it keeps what the kernel (or, if
   * even the read fails, the model) still holds, so no claim is released for a bucket the kernel may hold.
   */
  clear(): Promise<boolean> {
    return this.serial(() => this.clearAndConfirm());
  }

  private async clearAndConfirm(): Promise<boolean> {
    const cleared = await this.withRetry('clear', () => this.o.backend.clear()).then(
      () => true,
      () => false,
    );
    try {
      const left = await this.readNow();
      return [...left.values()].every((s) => s.size === 0);
    } catch {
      // Unread: a confirmed clear still leaves nothing; otherwise the model stays as it was.
      if (cleared) this.held.clear();
      return false;
    }
  }

  /** The fence worker confirmed it cleared the kernel behind our back: the model may drop everything. */
  markCleared(): void {
    this.held.clear();
  }

  private addToModel(changes: BucketChange[]): void {
    for (const c of changes) {
      let s = this.held.get(c.vip);
      if (!s) this.held.set(c.vip, (s = new Set()));
      for (const b of c.add) s.add(b);
    }
  }

  /** Why an add may not be made now under `lease`, or undefined when it may. */
  private refusal(lease?: string): AddRefusal | undefined {
    const { session } = this.o;
    if (session.isFenced()) return 'fenced';
    if (!session.isLive()) return 'notLive';
    if (!this.leaseOk(lease)) return 'leaseChanged';
    if (session.msToDeadline() < this.minHoldMs) return 'deadlineShort';
    return undefined;
  }

  private leaseOk(lease: string | undefined): boolean {
    const live = this.o.session.isLive() ? this.o.session.lease() : null;
    return live !== null && (lease === undefined || lease === live.id);
  }

  private async withRetry<T>(op: 'apply' | 'refresh' | 'clear' | 'read' | 'ensure', fn: () => Promise<T>): Promise<T> {
    try {
      return await pRetry(fn, {
        retries: this.retries,
        minTimeout: 10,
        maxTimeout: 200,
        factor: 2,
        shouldRetry: ({ error }) => !(error instanceof FencedDuringApply) && isTransient(error),
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          if (error instanceof FencedDuringApply) return;
          const willRetry = retriesLeft > 0 && isTransient(error);
          this.lastError = { message: `${op}: ${error.message}`, at: new Date() };
          this.o.emit({ event: 'backendError', op, error: error.message, attempt: attemptNumber, willRetry });
        },
      });
    } catch (err) {
      if (!(err instanceof FencedDuringApply))
        this.lastError = { message: `${op}: ${(err as Error).message}`, at: new Date() };
      throw err;
    }
  }
}

class FencedDuringApply extends Error {
  constructor(
    readonly refusal: AddRefusal,
    /** An earlier attempt of this apply failed part way: some of its adds may have landed. */
    readonly afterFailedWrite: boolean,
  ) {
    super(`add refused: ${refusal}`);
  }
}

function isTransient(err: unknown): boolean {
  // Unknown errors (an fs error from the file backend, say) are worth a few retries too.
  return err instanceof BackendError ? err.recoverable : true;
}
