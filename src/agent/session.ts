import type { Etcd3 } from 'etcd3';
import { monoNow, sleep } from './clock.js';
import type { AgentEvent, FenceReason } from './events.js';
import type { FencedMessage } from './fence.js';
import { KeepaliveStreams } from './keepalives.js';
import { heldLease, type HeldLease, type LeaseScope } from './leaseScope.js';
import { backoffMs } from '../backoff.js';

// The node's one lease (DESIGN §5), like etcd's concurrency.Session but with a fence: keepalives run on our own
// stream so we know when each acknowledged keepalive was SENT (monotonic); the lease cannot expire on the server
// before t_send + TTL, so the fence deadline is t_send(last ack) + TTL − margin. The deadline is handed to the
// fence worker, which drops every bucket when it passes. Recovery: an ack for the same lease after a fence
// resumes it; a lease etcd says is gone is replaced by a new one and the agent re-registers (onLease).

export type SessionState =
  | { state: 'starting' }
  | { state: 'live'; leaseId: string; ttlSeconds: number }
  | { state: 'fenced'; reason: FenceReason; leaseId: string | null }
  | { state: 'closed' };

/** What the session needs from the fence worker (FenceTimer). */
export interface FenceControl {
  setDeadline(mono: number): void;
  rearm(mono: number): void;
  fenceNow(reason: 'leaseLost' | 'shutdown'): Promise<FencedMessage>;
  isFenced(): boolean;
  /** The armed deadline (monotonic ms), 0 when none. */
  currentDeadline(): number;
}

export interface SessionHooks {
  /** A lease was granted (first or after loss): register node key, campaign, status under it. */
  onLease(leaseId: string): Promise<void> | void;
  /** Each acknowledged keepalive while live (refresh kernel expiries). */
  onAck(): void;
  /** Fenced: stop acquiring. `cleared`: the worker confirmed the kernel empty (else the session retries). */
  onFenced(reason: FenceReason, cleared: boolean): void;
  /** Live again. */
  onUnfenced(sameLease: boolean): void;
  /** Clear the backend from the main thread; true only when a read-back confirmed it empty. */
  clearKernel(): Promise<boolean>;
}

export interface SessionOptions {
  etcd: Etcd3;
  /**
   * One client per etcd endpoint for the keepalive stream. etcd3 picks a random host per stream and, without
   * its circuit breaker, keeps picking a dead member; rotating through single-host clients skips it at once.
   * Default: [etcd].
   */
  keepaliveClients?: Etcd3[];
  ttlSeconds: number;
  marginMs: number;
  fence: FenceControl;
  emit: (e: AgentEvent) => void;
  hooks: SessionHooks;
}

/** What a planned restart left behind (restartRecord.ts), with its deadline on this process's monotonic clock. */
export interface AdoptLease {
  leaseId: string;
  ttlSeconds: number;
  deadline: number;
}

/** Keep at least this much time before the deadline when (re)arming, or stay fenced. */
const MIN_HEADROOM_MS = 50;

/** Deadline arithmetic, pure: margin is clamped so a short TTL still leaves half of it usable. */
export function fenceDeadline(tSend: number, ttlSeconds: number, marginMs: number): number {
  const ttlMs = ttlSeconds * 1000;
  return tSend + ttlMs - Math.min(marginMs, ttlMs / 2);
}

export class NodeSession implements LeaseScope {
  private st: SessionState = { state: 'starting' };
  private readonly abort = new AbortController();
  private cur: { id: string; ttl: number } | null = null;
  private held: HeldLease | null = null;
  private lettingGo = false;
  private lastAck: { tSend: number; wall: Date; deadline: number; leaseId: string } | null = null;
  private stopKeepalives: (() => void) | undefined;
  private replacing = false;

  constructor(private readonly o: SessionOptions) {}

  get state(): SessionState {
    return this.st;
  }

  /** Aborted when the session closes. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get leaseId(): string | null {
    return this.cur?.id ?? null;
  }

  get grantedTtlSeconds(): number {
    return this.cur?.ttl ?? this.o.ttlSeconds;
  }

  get lastAckAt(): Date | null {
    return this.lastAck?.wall ?? null;
  }

  get deadline(): number {
    return this.lastAck?.deadline ?? 0;
  }

  isLive(): boolean {
    return this.st.state === 'live' && !this.o.fence.isFenced() && !this.lettingGo;
  }

  isFenced(): boolean {
    return this.o.fence.isFenced();
  }

  lease(): HeldLease | null {
    const cur = this.cur;
    if (!cur) return null;
    if (this.held?.id !== cur.id) this.held = heldLease(this.o.etcd, cur.id);
    return this.held;
  }

  msToDeadline(): number {
    const d = this.o.fence.currentDeadline();
    return d === 0 ? 0 : d - monoNow();
  }

  /**
   * From now on nothing new is acquired or added under this session (shutdown: every claim is being released).
   * The lease itself lives on until close(), so releases and handoffs still compare it.
   */
  letGo(): void {
    this.lettingGo = true;
  }

  /** Grant the first lease (retrying until etcd answers or the session closes) and start keepalives. */
  async start(): Promise<void> {
    await this.grantAndRegister();
  }

  /**
   * Instead of start() after a planned restart (DESIGN §13): carry on under the lease the previous process left.
   * Ask etcd how long the recorded lease has left. It cannot expire before t_send + remaining, so that (less the
   * margin) bounds our deadline like an ack would; keepalives then take over. Not live (or not answered before the
   * recorded deadline): false, and the normal fresh start follows.
   */
  async adopt(a: AdoptLease): Promise<boolean> {
    // Until etcd answers, the previous process's deadline is the bound the fence worker keeps.
    this.o.fence.rearm(a.deadline);
    for (let attempt = 0; !this.abort.signal.aborted && monoNow() < a.deadline; attempt++) {
      const tSend = monoNow();
      try {
        const res = await this.o.etcd.leaseClient.leaseTimeToLive({ ID: a.leaseId, keys: false });
        const left = Number(res.TTL);
        if (!(left > 0)) break;
        const ttl = Number(res.grantedTTL) || a.ttlSeconds;
        const deadline = Math.max(a.deadline, fenceDeadline(tSend, left, this.o.marginMs));
        this.cur = { id: a.leaseId, ttl };
        this.lastAck = { tSend, wall: new Date(), deadline, leaseId: a.leaseId };
        this.o.fence.rearm(deadline);
        this.o.emit({ event: 'sessionStarted', leaseId: a.leaseId, ttlSeconds: ttl, adopted: true });
        this.startKeepalives(a.leaseId, ttl);
        const reg = await this.registerUntilDone(a.leaseId);
        if (reg !== 'registered' || this.cur?.id !== a.leaseId) {
          this.cur = null;
          this.stopKeepalives?.();
          return false;
        }
        if (this.o.fence.isFenced()) {
          this.st = { state: 'fenced', reason: 'deadlinePassed', leaseId: a.leaseId };
          this.tryResume();
        } else {
          this.st = { state: 'live', leaseId: a.leaseId, ttlSeconds: ttl };
          // The kernel entries still expire at the last refresh of the previous process: extend them now.
          this.o.hooks.onAck();
        }
        return true;
      } catch (err) {
        this.o.emit({ event: 'etcdError', op: 'adoptLease', error: (err as Error).message });
        await sleep(backoffMs(attempt), this.abort.signal).catch(() => undefined);
      }
    }
    this.o.emit({ event: 'adoptFailed', leaseId: a.leaseId });
    return false;
  }

  private keepaliveIntervalMs(ttl: number): number {
    // Three keepalives fit between an ack and its deadline, so one lost keepalive never fences.
    const usable = ttl * 1000 - Math.min(this.o.marginMs, (ttl * 1000) / 2);
    return Math.max(50, Math.floor(usable / 3));
  }

  private async grantAndRegister(): Promise<void> {
    for (let attempt = 0; !this.abort.signal.aborted; attempt++) {
      const tSend = monoNow();
      try {
        const res = await this.o.etcd.leaseClient.leaseGrant({ TTL: this.o.ttlSeconds });
        const ttl = Number(res.TTL);
        const id = res.ID;
        this.cur = { id, ttl };
        const deadline = fenceDeadline(tSend, ttl, this.o.marginMs);
        this.lastAck = { tSend, wall: new Date(), deadline, leaseId: id };
        this.o.fence.rearm(deadline);
        this.o.emit({ event: 'sessionStarted', leaseId: id, ttlSeconds: ttl });
        this.startKeepalives(id, ttl);
        const reg = await this.registerUntilDone(id);
        if (reg === 'leaseGone') {
          // The lease died before we registered under it (nothing was claimed under it): grant a new one, still
          // not live. Dropping it first makes a concurrent TTL=0 keepalive answer a no-op.
          this.cur = null;
          this.stopKeepalives?.();
          continue;
        }
        // 'superseded': onLeaseLost owns the replacement now.
        if (reg !== 'registered') return;
        const afterLeaseLoss = this.st.state === 'fenced' && this.st.reason === 'leaseLost';
        if (this.cur?.id === id && !this.abort.signal.aborted) {
          if (this.o.fence.isFenced()) {
            // The deadline passed while we registered (etcd slow): stay fenced until a fresh ack.
            this.st = { state: 'fenced', reason: 'deadlinePassed', leaseId: id };
            this.tryResume();
          } else {
            this.st = { state: 'live', leaseId: id, ttlSeconds: ttl };
            if (afterLeaseLoss) {
              this.o.emit({ event: 'unfenced', sameLease: false });
              this.o.hooks.onUnfenced(false);
            }
          }
        }
        return;
      } catch (err) {
        this.o.emit({ event: 'etcdError', op: 'leaseGrant', error: (err as Error).message });
        // The agent closed the client (shutdown raced start-up): retrying can never succeed.
        if (/client was already closed/.test((err as Error).message)) return;
        await sleep(backoffMs(attempt), this.abort.signal);
      }
    }
  }

  /**
   * Register under the lease (node key, campaign, status), retried with bounded backoff while the lease lives:
   * a node that is not registered must not count as live, or it stays assigned buckets it never claims.
   */
  private async registerUntilDone(id: string): Promise<RegisterOutcome> {
    for (let attempt = 0; ; attempt++) {
      if (this.abort.signal.aborted) return 'aborted';
      if (this.cur?.id !== id) return 'superseded';
      try {
        await this.o.hooks.onLease(id);
        return 'registered';
      } catch (err) {
        const msg = (err as Error).message;
        this.o.emit({ event: 'etcdError', op: 'register', error: msg });
        // The lease-loss path may have replaced the lease while we waited: it owns the replacement then, and
        // granting another here would clobber its lease and stop its keepalives.
        if (this.cur?.id !== id) return 'superseded';
        if (isLeaseNotFound(msg)) return 'leaseGone';
        await sleep(backoffMs(attempt), this.abort.signal);
      }
    }
  }

  private startKeepalives(leaseId: string, ttl: number): void {
    const ka = new KeepaliveStreams({
      leaseId,
      ttlSeconds: ttl,
      intervalMs: this.keepaliveIntervalMs(ttl),
      clients: this.o.keepaliveClients?.length ? this.o.keepaliveClients : [this.o.etcd],
      alive: () => !this.abort.signal.aborted && this.cur?.id === leaseId,
      onAck: (tSend, granted) => this.onAck(leaseId, tSend, granted),
      onLost: () => void this.onLeaseLost(leaseId),
      emit: this.o.emit,
    });
    this.stopKeepalives = () => ka.stop();
  }

  private onAck(leaseId: string, tSend: number, ttl: number): void {
    if (this.cur?.id !== leaseId) return;
    const now = monoNow();
    const deadline = fenceDeadline(tSend, ttl, this.o.marginMs);
    // Acks can arrive out of order only across streams; never move the deadline back.
    if (this.lastAck && this.lastAck.leaseId === leaseId && deadline <= this.lastAck.deadline) return;
    this.lastAck = { tSend, wall: new Date(), deadline, leaseId };
    this.o.emit({ event: 'keepaliveAck', rttMs: round(now - tSend), headroomMs: round(deadline - now) });
    if (this.st.state === 'fenced') {
      // Registering the lease that replaces a lost one: its acks must move the deadline, or the fence fires
      // again, spuriously, when the registration takes longer than the first deadline.
      if (this.st.reason === 'leaseLost' && this.st.leaseId !== leaseId) this.o.fence.setDeadline(deadline);
      else this.tryResume();
      return;
    }
    // Live, or still registering its first lease: the deadline moves either way.
    this.o.fence.setDeadline(deadline);
    if (this.st.state === 'live' && !this.o.fence.isFenced()) this.o.hooks.onAck();
  }

  /** The fence worker fired (its backend is already clear). */
  handleWorkerFenced(m: FencedMessage): void {
    // fenceNow() callers (lease loss, shutdown) handle their own fences.
    if (this.st.state === 'closed' || m.reason !== 'deadlinePassed') return;
    if (this.st.state === 'fenced' && this.st.reason !== 'deadlinePassed') return;
    this.st = { state: 'fenced', reason: 'deadlinePassed', leaseId: this.cur?.id ?? null };
    this.o.hooks.onFenced('deadlinePassed', m.error === undefined);
    if (m.error !== undefined) {
      this.reportUnconfirmedClear(m);
      // Reads and clears need no etcd: keep at it while fenced (a resume re-adds under its claims anyway).
      void this.clearUntilConfirmed(() => this.st.state === 'fenced');
    }
    this.tryResume();
  }

  private reportUnconfirmedClear(m: FencedMessage): void {
    this.o.emit({
      event: 'backendError',
      op: 'fenceClear',
      error: m.error ?? '',
      attempt: m.attempts,
      willRetry: true,
    });
  }

  /** Same lease, and an ack newer than the fence leaves room: resume. */
  private tryResume(): void {
    if (this.st.state !== 'fenced' || this.st.reason !== 'deadlinePassed' || this.replacing) return;
    const a = this.lastAck;
    if (!a || a.leaseId !== this.cur?.id || a.deadline - monoNow() < MIN_HEADROOM_MS) return;
    this.o.fence.rearm(a.deadline);
    this.st = { state: 'live', leaseId: a.leaseId, ttlSeconds: this.cur.ttl };
    this.o.emit({ event: 'unfenced', sameLease: true });
    this.o.hooks.onUnfenced(true);
  }

  private async onLeaseLost(leaseId: string): Promise<void> {
    if (this.cur?.id !== leaseId || this.replacing || this.abort.signal.aborted) return;
    this.replacing = true;
    // At once: a registration still retrying under this lease sees it gone and leaves the replacement to us.
    this.cur = null;
    try {
      this.o.emit({ event: 'leaseLost' });
      this.st = { state: 'fenced', reason: 'leaseLost', leaseId };
      // The kernel must be empty before anything is claimed under a new lease.
      const m = await this.o.fence.fenceNow('leaseLost');
      this.o.hooks.onFenced('leaseLost', m.error === undefined);
      if (m.error !== undefined) {
        this.reportUnconfirmedClear(m);
        // Unconfirmed clear: a new lease would let us claim again while the kernel may still hold buckets. Retry
        // the clear (main thread) until it is confirmed; only then grant.
        if (!(await this.clearUntilConfirmed(() => true))) return;
      }
      await this.grantAndRegister();
    } finally {
      this.replacing = false;
    }
  }

  /** Clear from the main thread until a read-back confirms it, while `still()` holds. */
  private async clearUntilConfirmed(still: () => boolean): Promise<boolean> {
    for (let attempt = 0; !this.abort.signal.aborted && still(); attempt++) {
      if (await this.o.hooks.clearKernel().catch(() => false)) return true;
      await sleep(backoffMs(attempt), this.abort.signal).catch(() => undefined);
    }
    return false;
  }

  /** Stop keepalives; revoke the lease (node key, claims, status, campaign key vanish at once) when asked. */
  async close(opts: { revoke: boolean; timeoutMs?: number }): Promise<void> {
    if (this.st.state === 'closed') return;
    const lease = this.cur;
    this.st = { state: 'closed' };
    this.abort.abort();
    this.stopKeepalives?.();
    if (opts.revoke && lease) {
      await Promise.race([
        this.o.etcd.leaseClient.leaseRevoke({ ID: lease.id }).catch(() => undefined),
        sleep(opts.timeoutMs ?? 1000),
      ]);
    }
    this.cur = null;
  }
}

export type RegisterOutcome = 'registered' | 'leaseGone' | 'superseded' | 'aborted';

/** etcd's answer when a put names a lease that expired or was revoked. */
export function isLeaseNotFound(message: string): boolean {
  return /lease not found/i.test(message);
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
