import type { Keys } from '../etcd/keys.js';
import type { StatusValue } from '../etcd/values.js';
import { Coalescer } from '../coalesce.js';
import type { AgentEvent } from './events.js';
import type { LeaseScope } from './leaseScope.js';

// Writes `status/<node>` under the node's lease when what it reports changes, at most once per `minIntervalMs`
// (trailing write, so the last change is always published). The keepalive time alone is not a change, but it is
// published again every `ackRefreshMs`, so `lastAckAt` of a live node is never older than that (plus one write).

export interface StatusWriterOptions {
  keys: Keys;
  nodeId: string;
  /** Status is written under the session's lease (it vanishes with it). */
  session: LeaseScope;
  snapshot: () => Omit<StatusValue, 'v' | 'updatedAt'>;
  emit: (e: AgentEvent) => void;
  minIntervalMs?: number;
  ackRefreshMs?: number;
}

export const ACK_REFRESH_MS = 5000;

export class StatusWriter {
  private lastKey = '';
  private lastWrite = 0;
  private lastAck: string | null = null;
  private refresh: NodeJS.Timeout | undefined;
  private stopped = false;
  /** At most one write per `minIntervalMs`; changes meanwhile merge into the next. */
  private readonly loop = new Coalescer(() => this.write(), {
    delayMs: () => this.lastWrite + (this.o.minIntervalMs ?? 500) - Date.now(),
    unref: true,
  });

  constructor(private readonly o: StatusWriterOptions) {}

  /** Something may have changed; write if it did. `force` after a new lease (the old key is gone). */
  mark(force = false): void {
    if (this.stopped) return;
    if (force) this.lastKey = '';
    this.loop.kick();
  }

  stop(): void {
    this.stopped = true;
    this.loop.stop();
    clearTimeout(this.refresh);
  }

  private async write(): Promise<void> {
    const lease = this.o.session.lease();
    if (lease === null || this.stopped) return;
    const snap = this.o.snapshot();
    const { lastAckAt: _ack, ...rest } = snap;
    const key = JSON.stringify(rest);
    const ackRefreshMs = this.o.ackRefreshMs ?? ACK_REFRESH_MS;
    const ackStale = snap.lastAckAt !== this.lastAck && Date.now() - this.lastWrite >= ackRefreshMs;
    if (key === this.lastKey && !ackStale) {
      this.armRefresh(ackRefreshMs);
      return;
    }
    try {
      const value: StatusValue = { v: 1, ...snap, updatedAt: new Date().toISOString() };
      await lease.put(this.o.keys.status(this.o.nodeId)).value(JSON.stringify(value));
      this.lastKey = key;
      this.lastAck = snap.lastAckAt;
      this.lastWrite = Date.now();
    } catch (err) {
      this.o.emit({ event: 'etcdError', op: 'status', error: (err as Error).message });
      this.lastWrite = Date.now();
      this.loop.kick(); // in a run: one more after this one, minIntervalMs on
    } finally {
      this.armRefresh(ackRefreshMs);
    }
  }

  private armRefresh(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.refresh);
    this.refresh = setTimeout(() => this.mark(), ms);
    this.refresh.unref();
  }
}
