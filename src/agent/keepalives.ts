import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { monoNow } from './clock.js';
import type { AgentEvent } from './events.js';

// Keepalives on our own streams, so each ack is matched to the time its request was SENT (the fence deadline is
// computed from it, DESIGN §5). A stream whose oldest request goes unanswered for `staleMs` is replaced by one to
// the next endpoint, but kept open for a TTL: during an etcd leader election the old stream's answers arrive late
// and still move the deadline.

export interface KeepaliveOptions {
  leaseId: string;
  ttlSeconds: number;
  intervalMs: number;
  /** One client per endpoint (or one for all); streams rotate over them. */
  clients: Etcd3[];
  /** False once the lease is no longer the session's or the session is shutting down: the streams stop. */
  alive: () => boolean;
  /** An answer to the request sent at `tSend` (monotonic ms), granting `ttl` seconds. */
  onAck: (tSend: number, ttl: number) => void;
  /** etcd answered TTL 0: the lease is gone. The streams have stopped. */
  onLost: () => void;
  emit: (e: AgentEvent) => void;
}

interface KaStream {
  stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;
  /** Send times of the requests not yet answered, oldest first (etcd answers a stream in order). */
  sent: number[];
  dead: boolean;
  abandonedAt: number | null;
}

export class KeepaliveStreams {
  private readonly staleMs: number;
  private readonly lingerMs: number;
  private host: number;
  private readonly downUntil: number[] = [];
  private readonly streams = new Set<KaStream>();
  private current: KaStream | null = null;
  private opening = false;
  private stopped = false;
  private readonly tick: NodeJS.Timeout;

  constructor(private readonly o: KeepaliveOptions) {
    this.staleMs = Math.max(Math.floor(0.8 * o.intervalMs), 200);
    this.lingerMs = o.ttlSeconds * 1000;
    this.host = Math.floor(Math.random() * o.clients.length);
    this.tick = setInterval(() => this.onTick(), o.intervalMs);
    void this.open();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.tick);
    for (const k of [...this.streams]) this.close(k);
  }

  private alive(): boolean {
    return !this.stopped && this.o.alive();
  }

  private onTick(): void {
    if (!this.alive()) return this.stop();
    const now = monoNow();
    for (const k of [...this.streams]) if (k.abandonedAt !== null && now - k.abandonedAt > this.lingerMs) this.close(k);
    if (!this.current) return void this.open();
    const oldest = this.current.sent[0];
    if (oldest !== undefined && now - oldest > this.staleMs) {
      this.o.emit({ event: 'etcdError', op: 'keepalive', error: `no keepalive answer for ${this.staleMs} ms` });
      return void this.open();
    }
    this.send(this.current);
  }

  private close(k: KaStream): void {
    if (k.dead) return;
    k.dead = true;
    this.streams.delete(k);
    if (this.current === k) this.current = null;
    try {
      k.stream.end();
    } catch {
      // already broken
    }
  }

  private send(k: KaStream): void {
    k.sent.push(monoNow());
    try {
      k.stream.write({ ID: this.o.leaseId });
    } catch {
      this.close(k);
    }
  }

  private reopenSoon(): void {
    if (this.alive() && this.current === null) setTimeout(() => void this.open(), 50).unref();
  }

  /** The next stream goes to the next endpoint not known to be down, whatever happened to this one. */
  private pickClient(): { client: Etcd3; idx: number } {
    const n = this.o.clients.length;
    const now = monoNow();
    let idx = this.host % n;
    for (let i = 0; i < n && (this.downUntil[(this.host + i) % n] ?? 0) > now; i++) idx = (this.host + i + 1) % n;
    this.host = idx + 1;
    return { client: this.o.clients[idx]!, idx };
  }

  private async open(): Promise<void> {
    if (this.opening || !this.alive()) return;
    this.opening = true;
    const { client, idx } = this.pickClient();
    try {
      const stream = await client.leaseClient.leaseKeepAlive();
      if (!this.alive()) {
        stream.on('error', () => undefined);
        stream.end();
        return;
      }
      const k: KaStream = { stream, sent: [], dead: false, abandonedAt: null };
      stream.on('data', (res: ILeaseKeepAliveResponse) => {
        const tSend = k.sent.shift();
        if (tSend === undefined || k.dead || !this.alive()) return;
        if (res.TTL === '0') {
          this.stop();
          this.o.onLost();
          return;
        }
        this.o.onAck(tSend, Number(res.TTL));
      });
      stream.on('error', (err: Error) => {
        // Refused or dropped: skip this endpoint for a second when picking the next stream's.
        if (/UNAVAILABLE/.test(err.message)) this.downUntil[idx] = monoNow() + 1000;
        if (!k.dead && this.alive() && this.current === k)
          this.o.emit({ event: 'etcdError', op: 'keepalive', error: err.message });
        this.close(k);
        this.reopenSoon();
      });
      stream.on('end', () => {
        this.close(k);
        this.reopenSoon();
      });
      if (this.current) this.current.abandonedAt = monoNow();
      this.streams.add(k);
      this.current = k;
      this.send(k);
    } catch (err) {
      this.o.emit({ event: 'etcdError', op: 'keepalive', error: (err as Error).message });
      this.reopenSoon();
    } finally {
      this.opening = false;
    }
  }
}
