import { cmpRevision } from '../etcd/store.js';
import { clusterEventSchema, type ClusterEvent, type MemberValue } from '../etcd/values.js';
import { NotLeaderError } from '../errors.js';
import { flushMoves, foldPicture, newChangeTracker, nextFlushInMs, type ChangeDraft } from './changeLog.js';
import type { RebalancerOptions } from './rebalancer.js';

// The leader's recorder: writes the change log (`events/<seq>`, at most MAX_EVENTS, the oldest trimmed in the
// same txn) and a lease-free `members/<id>` record for every node it sees registered, with its nodeJoined event
// (so a node joins once, whoever leads). Every agent folds every picture (changeLog.ts) and keeps what it folded
// for a while, so the agent that wins an election after the leader died records the old leader's death. Writes
// go through the election's fenced txn, like assignments, after the failover's own writes (WRITE_DELAY_MS).

export const MAX_EVENTS = 256;
/** Drafts kept by a non-leader, for the day it leads. */
const MAX_PENDING = 64;
/** Ops per txn stay well under etcd's 128. */
const MAX_WRITES = 40;
const RETRY_MS = [200, 500, 1000, 2000, 5000];
const WRITE_DELAY_MS = 250;
/** Pictures are folded at most this often: moves and failover times are measured to this granularity. */
const FOLD_EVERY_MS = 50;

/** What the rebalancer gets, less its own callbacks: both are the leader's writers. */
export type RecorderOptions = Omit<RebalancerOptions, 'onNotLeader' | 'coalesceMs'>;

export class EventRecorder {
  private readonly tracker = newChangeTracker();
  private pending: ChangeDraft[] = [];
  private writing = false;
  private again = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly timers = new Map<'fold' | 'write', NodeJS.Timeout>();
  private stopped = false;
  /** Members we wrote, until the picture shows them. */
  private readonly membersWritten = new Set<string>();
  private lastSeq = 0;

  constructor(private readonly o: RecorderOptions) {}

  /** A new picture: fold it soon (coalesced: a failover is hundreds of watch batches), and write if we lead. */
  observe(): void {
    if (this.stopped) return;
    this.once('fold', FOLD_EVERY_MS, () => this.fold());
  }

  /** Run `fn` in `ms` unless a timer of that name is already pending. */
  private once(name: 'fold' | 'write', ms: number, fn: () => void): void {
    if (this.timers.has(name)) return;
    const t = setTimeout(() => {
      this.timers.delete(name);
      fn();
    }, ms);
    t.unref();
    this.timers.set(name, t);
  }

  private fold(): void {
    if (this.stopped) return;
    const state = this.o.state();
    this.keep(foldPicture(this.tracker, state, Date.now()));
    this.keep(flushMoves(this.tracker, Date.now(), state.revision));
    this.schedule();
    // Off the failover's path: the rebalancer's assignment txn and the claims go first, a burst is one write.
    if (this.o.election.isLeader) this.once('write', WRITE_DELAY_MS, () => void this.write());
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const t of this.timers.values()) clearTimeout(t);
  }

  private keep(drafts: ChangeDraft[]): void {
    this.pending.push(...drafts);
    if (this.pending.length > MAX_PENDING) this.pending = this.pending.slice(-MAX_PENDING);
  }

  /** Come back when an open move group may be complete, or to retry a failed write. */
  private schedule(retryMs?: number): void {
    const due = retryMs ?? nextFlushInMs(this.tracker, Date.now());
    if (due === null || this.timer) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.fold();
      },
      Math.max(100, due),
    );
    this.timer.unref();
  }

  private async write(): Promise<void> {
    const { election, etcd, keys, nodeId } = this.o;
    if (!election.isLeader || this.stopped) return;
    if (this.writing) {
      this.again = true;
      return;
    }
    const state = this.o.state();
    // What an earlier leader already recorded is not recorded twice.
    let recordedRev = '0';
    let maxSeq = this.lastSeq;
    for (const [seq, e] of state.events) {
      if (cmpRevision(e.revision, recordedRev) > 0) recordedRev = e.revision;
      if (seq > maxSeq) maxSeq = seq;
    }
    this.pending = this.pending.filter((d) => cmpRevision(d.revision, recordedRev) > 0 || d.revision === '0');
    const drafts = this.pending.slice(0, MAX_WRITES);
    for (const id of this.membersWritten) if (state.members.has(id)) this.membersWritten.delete(id);
    const newMembers = [...state.nodes].filter(([id]) => !state.members.has(id) && !this.membersWritten.has(id));
    if (drafts.length === 0 && newMembers.length === 0) return;

    const now = new Date().toISOString();
    const ops = [];
    let seq = maxSeq;
    const joined: ChangeDraft[] = newMembers.slice(0, MAX_WRITES).map(([id]) => ({
      kind: 'nodeJoined',
      atMs: Date.now(),
      revision: state.revision,
      node: id,
      detail: `${id} joined the cluster`,
    }));
    for (const d of [...joined, ...drafts]) {
      const value: ClusterEvent = { v: 1, ...toEvent(d), leader: nodeId };
      if (!clusterEventSchema.safeParse(value).success) continue; // never write what readers reject
      ops.push(etcd.put(keys.event(++seq)).value(JSON.stringify(value)));
    }
    for (const [id, n] of newMembers.slice(0, MAX_WRITES)) {
      const value: MemberValue = { v: 1, firstSeenAt: now, address: n.value.address };
      ops.push(etcd.put(keys.member(id)).value(JSON.stringify(value)));
    }
    // Keep the newest MAX_EVENTS: the oldest go in the same txn.
    const seqs = [...state.events.keys()].sort((a, b) => a - b);
    const excess = seqs.length + (seq - maxSeq) - MAX_EVENTS;
    for (const s of seqs.slice(0, Math.max(0, Math.min(excess, MAX_WRITES))))
      ops.push(etcd.delete().key(keys.event(s)));

    this.writing = true;
    try {
      await election.fencedTxn(ops);
      this.lastSeq = seq;
      this.failures = 0;
      this.pending = this.pending.slice(drafts.length);
      for (const [id] of newMembers) this.membersWritten.add(id);
    } catch (err) {
      // Not leading any more: the next leader records from its own fold. Otherwise try again, backing off.
      if (!(err instanceof NotLeaderError)) {
        this.o.emit({ event: 'etcdError', op: 'events', error: (err as Error).message });
        this.schedule(RETRY_MS[Math.min(this.failures++, RETRY_MS.length - 1)]);
      }
    } finally {
      this.writing = false;
      if (this.again) {
        this.again = false;
        void this.write();
      }
    }
  }
}

function toEvent(d: ChangeDraft): Omit<ClusterEvent, 'v' | 'leader'> {
  const { atMs, ...rest } = d;
  return { ...rest, at: new Date(atMs).toISOString() };
}
