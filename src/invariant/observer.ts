import { startFilePoll, type FilePoll, type PollResult, type PollVip } from './filePoll.js';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../etcd/client.js';
import { keysFor, parseKey, type Keys } from '../etcd/keys.js';
import {
  emptyClusterState,
  watchCluster,
  type ClusterState,
  type ClusterWatch,
  type StateChange,
} from '../etcd/store.js';
import { applyFact, InvariantChecker, type Impairment, type TimelineFact, type UnownedInterval } from './checker.js';
import { ReorderBuffer } from './reorder.js';
import type { InvariantReport, Observer, ObserverOptions, OwnershipSample, Violation } from './types.js';

// The invariant observer: the store's prefix watch on the cluster's keys (claims, nodes, leader, assignments, spec),
// plus a poll of every node's file-backend state (expiry applied at read time), fed in time order
// into the pure checker. It also keeps the ownership changes, for the chaos report's time line.

/**
 * Whether a claim naming `owner` under `lease` can be an agent's write: agents acquire (and hand off to an
 * assignee) only under the holder's registered node-key lease, registered before any claim. Any other claim — a
 * ghost node id, a foreign lease — is damage in etcd, not a release its previous holder made.
 */
export function writtenByAgent(nodes: ReadonlyMap<string, { lease: string }>, owner: string, lease: string): boolean {
  return nodes.get(owner)?.lease === lease;
}

export interface ObserverExtras {
  /**
   * Declare a fault on `node` (null: etcd itself) from now; returns a function that ends it. Unowned stretches
   * whose failover chain includes impaired nodes get one more bound per such node (see checker.ts).
   */
  impair(node: string | null, kind: string, fromMs?: number): (toMs?: number) => void;
  /** Our own view of etcd may have been stale during [from, to] (a fault that freezes the member we watch). */
  declareBlind(from: number, to: number): void;
  /** backendFromRecord: every backend was read completely since `t` and the changes were recorded. */
  round(t: number): void;
  /** Gaps between the starts of complete backend rounds: a holder present longer than maxMs is always seen. */
  resolution(): GapStats;
  /**
   * Resolves once every fact that arrived before the call is in the checker (the reorder window has passed over
   * it): violations() then covers everything seen until the call.
   */
  caughtUp(): Promise<void>;
  /** The decoded cluster as the watch sees it now. */
  cluster(): ClusterState;
  /** What each node's backend held at the last poll: vip → bucket → holders. */
  backendHolders(): Map<string, Map<number, string[]>>;
  /** Every change of holders seen (claims, backend, dataplane), in time order. */
  history(): readonly OwnershipSample[];
  /** Every fact fed to the checker, in order: `checkTimeline(facts(), {impairments: impairments()})` gives the
   *  same verdict offline (for a report that must be re-checked or reproduced). */
  facts(): readonly TimelineFact[];
  impairments(): readonly Impairment[];
  /** Whether claims == assignment == backend for every bucket of the spec right now; the reasons when not. */
  convergence(): { converged: boolean; problems: Violation[] };
}

export type FullObserver = Omit<Observer, 'stop'> &
  ObserverExtras & {
    stop(opts?: { expectConverged?: boolean; convergeTimeoutMs?: number }): Promise<FullReport>;
  };

export interface FullReport extends InvariantReport {
  intervals: UnownedInterval[];
  /** The observer's own etcd watch failures (last 20), each followed by a reload: facts may have arrived late. */
  watchErrors: string[];
  /** Facts that arrived after the reorder window of their stamp: checked out of time order (should be 0). */
  lateFacts: number;
}

const sampleKey = (vip: string, bucket: number): string => `${vip}#${bucket}`;

/** Longer than any backend read takes to come back (an `nft` per node under load: a few hundred ms). */
const REORDER_MS = 2000;

export interface GapStats {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Percentiles of the gaps between successive observations. */
export function gapStats(gaps: readonly number[]): GapStats {
  const s = [...gaps].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
  return { count: s.length, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: s[s.length - 1] ?? 0 };
}

export async function startObserver(opts: ObserverOptions): Promise<FullObserver> {
  const pollMs = opts.pollMs ?? 10;
  const keys: Keys = keysFor(opts.cluster);
  const etcd: Etcd3 = createEtcdClient({ endpoints: opts.endpoints, requestTimeoutMs: 2000 });
  const checker = new InvariantChecker(opts.unownedBoundMs, opts.claimLagMs);
  const startedAt = Date.now();
  const dirs = new Map(Object.entries(opts.backendDirs));
  let filePoll: FilePoll | undefined;
  const hist: OwnershipSample[] = [];
  const facts: TimelineFact[] = [];
  const lastClaims = new Map<string, string>();
  const lastBackend = new Map<string, string[]>();
  const lastAssignee = new Map<string, string | null>();
  const claimsKnown = new Set<string>();
  /** Buckets per VIP as the checker was last told; every bucket any spec had (polled after it left the spec). */
  const lastScope = new Map<string, number>();
  const pollBuckets = new Map<string, number>();
  let lastLeader: string | null = null;
  let lastLive = '';
  let state: ClusterState = emptyClusterState();
  let observations = 0;
  const errors: string[] = [];

  // Every fact goes to the checker through the reorder buffer, in stamp order (see reorder.ts).
  const queue = new ReorderBuffer<TimelineFact>(opts.reorderMs ?? REORDER_MS);
  const release = (now: number): void => {
    for (const f of queue.release(now)) {
      applyFact(checker, f);
      facts.push(f);
      if (f.type === 'sample') hist.push(f);
    }
  };
  const feed = (s: OwnershipSample): void => queue.push({ type: 'sample', ...s });

  // Derived facts after every watch batch: liveness, leader, assignees.
  const refreshDerived = (t: number): void => {
    const live = [...state.nodes.keys()].sort();
    if (live.join(',') !== lastLive) {
      lastLive = live.join(',');
      queue.push({ type: 'liveness', t, live });
    }
    if (state.leader !== lastLeader) {
      lastLeader = state.leader;
      queue.push({ type: 'leader', t, leader: state.leader });
    }
    // The spec's buckets per VIP: the checker owes no owner to a bucket (or VIP) the spec no longer has.
    const inSpec = new Map((state.spec?.spec.vips ?? []).map((v) => [v.address, v.buckets]));
    for (const vip of new Set([...inSpec.keys(), ...lastScope.keys()])) {
      const n = inSpec.get(vip) ?? 0;
      if (lastScope.get(vip) === n) continue;
      lastScope.set(vip, n);
      pollBuckets.set(vip, Math.max(pollBuckets.get(vip) ?? 0, n));
      filePoll?.setVips(pollVips());
      queue.push({ type: 'scope', t, vip, buckets: n });
    }
    for (const vip of state.spec?.spec.vips ?? []) {
      const owners = state.assignments.get(vip.address)?.value.owners ?? {};
      for (let b = 1; b <= vip.buckets; b++) {
        const a = owners[String(b)] ?? null;
        const k = sampleKey(vip.address, b);
        // A bucket nobody has claimed yet: its claims are known (empty), so its backend holders are checked.
        if (!claimsKnown.has(k)) {
          claimsKnown.add(k);
          if (!lastClaims.has(k)) feed({ t, source: 'claims', vip: vip.address, bucket: b, holders: [] });
        }
        if (lastAssignee.get(k) !== a || !lastAssignee.has(k)) {
          lastAssignee.set(k, a);
          queue.push({ type: 'assignee', t, vip: vip.address, bucket: b, assignee: a });
        }
      }
    }
  };

  // Claims as the watch's picture shows them after a batch: every bucket whose (holder, lease) changed is one sample.
  // Only `touched` claim keys are compared (all of them after a reload).
  const syncClaims = (t: number, touched: Set<string> | 'all', damaged: ReadonlySet<string> = new Set()): void => {
    const seen = new Set<string>();
    for (const [vip, m] of state.claims) {
      for (const [bucket, c] of m) {
        const k = sampleKey(vip, bucket);
        seen.add(k);
        if (touched !== 'all' && !touched.has(k)) continue;
        // A put over another node's claim is the agent's handoff txn (the old owner ends its claim and writes the
        // new owner's in one txn, after its kernel let go), not two owners: the checker checks that transition.
        const id = `${c.owner}@${c.lease}`;
        claimsKnown.add(k);
        if (lastClaims.get(k) === id) continue;
        lastClaims.set(k, id);
        const foreign = !writtenByAgent(state.nodes, c.owner, c.lease);
        feed({
          t,
          source: 'claims',
          vip,
          bucket,
          holders: [c.owner],
          lease: c.lease,
          ...(foreign ? { damaged: true } : {}),
        });
      }
    }
    for (const k of [...lastClaims.keys()]) {
      if (seen.has(k) || (touched !== 'all' && !touched.has(k))) continue;
      lastClaims.delete(k);
      const [vip, b] = k.split('#') as [string, string];
      feed({ t, source: 'claims', vip, bucket: Number(b), holders: [], ...(damaged.has(k) ? { damaged: true } : {}) });
    }
  };

  // Claim keys this batch overwrote with a value that is no claim (the store keeps them out of the picture).
  const damagedOf = (change: StateChange): Set<string> => {
    const out = new Set<string>();
    for (const bad of change.bad) {
      const pk = parseKey(keys, bad.key);
      if (pk.family === 'claim') out.add(sampleKey(pk.vip, pk.bucket));
    }
    return out;
  };

  const claimKeysOf = (change: StateChange): Set<string> | 'all' => {
    const out = new Set<string>();
    for (const key of [...change.puts, ...change.deletes]) {
      if (key === keys.prefix) return 'all'; // a reload
      const pk = parseKey(keys, key);
      if (pk.family === 'claim') out.add(sampleKey(pk.vip, pk.bucket));
    }
    return out;
  };

  const markBlind = (from: number, to: number): void => {
    queue.push({ type: 'blind', t: Date.now(), from, to });
  };

  // One watch implementation for everyone (store.ts): resumes after the last applied event, reloads on failure.
  // The handle, for onChange (which may in principle run before watchCluster returns).
  const ref: { watch?: ClusterWatch } = {};
  const watch = await watchCluster(etcd, keys, {
    // A claim that lived for one revision of a batched response is a fact too: its holder's kernel may show it.
    everyRevision: true,
    onChange: (change) => {
      const t = Date.now();
      if (ref.watch) state = ref.watch.state;
      syncClaims(t, claimKeysOf(change), damagedOf(change));
      refreshDerived(t);
    },
    onError: (err) => {
      errors.push(err.message);
      if (errors.length > 100) errors.splice(0, errors.length - 20);
    },
    // While the watch reconnected our claims view was stale: say so to the checker.
    onStale: (from, to) => markBlind(from, to),
  }).catch((err: unknown) => {
    etcd.close();
    throw err;
  });
  ref.watch = watch;
  state = watch.state;
  const releaser = setInterval(() => release(Date.now()), 100);
  releaser.unref();
  syncClaims(Date.now(), 'all');
  refreshDerived(Date.now());

  // A complete read of every backend, each read starting at or after `t`: the checker's transition check.
  const roundGaps: number[] = [];
  let lastRoundAt: number | undefined;
  const endRound = (t: number): void => {
    if (lastRoundAt !== undefined) roundGaps.push(t - lastRoundAt);
    lastRoundAt = t;
    // Its end is now, when we learn of it: late rather than early, so a re-claim is never missed.
    queue.push({ type: 'round', t, end: Date.now() });
  };

  // Backend poll (file backends): FilePoller rounds, on a worker thread, fed in order.
  const holdersNow = new Map<string, Map<number, string[]>>();
  let unreadable: [string, string][] = [];
  const onPoll = (r: PollResult): void => {
    observations++;
    for (const s of r.samples) {
      lastBackend.set(sampleKey(s.vip, s.bucket), s.holders);
      feed(s);
    }
    for (const [vip, m] of r.holders) holdersNow.set(vip, new Map(m));
    unreadable = r.unreadable;
    endRound(r.roundT);
  };
  const pollVips = (): PollVip[] => [...pollBuckets].map(([address, buckets]) => ({ address, buckets }));

  const convergence = (): { converged: boolean; problems: Violation[] } => {
    const problems: Violation[] = [];
    const spec = state.spec?.spec;
    if (!spec)
      return { converged: false, problems: [{ kind: 'notConverged', vip: '*', bucket: 0, detail: 'no spec' }] };
    for (const vip of spec.vips) {
      const owners = state.assignments.get(vip.address)?.value.owners ?? {};
      const backend = holdersNow.get(vip.address);
      for (let b = 1; b <= vip.buckets; b++) {
        const want = owners[String(b)];
        const claim = state.claims.get(vip.address)?.get(b)?.owner;
        const held = backend?.get(b) ?? [];
        let detail: string | null = null;
        if (want === undefined) detail = 'no assignee';
        else if (!state.nodes.has(want)) detail = `assigned to ${want}, which has no node key`;
        else if (state.nodes.get(want)!.value.draining) detail = `assigned to draining node ${want}`;
        else if (claim !== want) detail = `assigned to ${want}, claimed by ${claim ?? 'nobody'}`;
        else if (held.length !== 1 || held[0] !== want)
          detail = `assigned to ${want}, backend holders [${held.join(',')}]`;
        if (detail) problems.push({ kind: 'notConverged', vip: vip.address, bucket: b, detail });
      }
    }
    return { converged: problems.length === 0, problems };
  };

  if (!opts.backendFromRecord) {
    filePoll = startFilePoll(pollMs, onPoll);
    filePoll.setDirs(dirs);
    filePoll.setVips(pollVips());
  }

  return {
    addNode(id, backendDir) {
      dirs.set(id, backendDir);
      filePoll?.setDirs(dirs);
    },
    record(sample) {
      if (sample.source !== 'backend') return feed(sample);
      if (!opts.backendFromRecord) throw new Error('backend samples come from file polling unless backendFromRecord');
      observations++;
      const holders = [...sample.holders].sort();
      let m = holdersNow.get(sample.vip);
      if (!m) holdersNow.set(sample.vip, (m = new Map()));
      m.set(sample.bucket, holders);
      const k = sampleKey(sample.vip, sample.bucket);
      const prev = lastBackend.get(k);
      if (prev !== undefined && prev.join(',') === holders.join(',')) return;
      lastBackend.set(k, holders);
      feed({ ...sample, holders });
    },
    round: endRound,
    declareBlind: (from, to) => markBlind(from, to),
    resolution: () => gapStats(roundGaps),
    violations() {
      // Facts younger than the reorder window are not in the checker yet: judge open stretches as of then.
      return [...checker.violations(), ...checker.openViolations(Date.now() - queue.windowMs)];
    },
    impair(node, kind, fromMs) {
      const end = checker.impair(node, kind, fromMs ?? Date.now());
      return (toMs) => end(toMs ?? Date.now());
    },
    cluster: () => state,
    backendHolders: () => holdersNow,
    history: () => hist,
    facts: () => facts,
    impairments: () => checker.impairmentList(),
    convergence,
    async caughtUp(): Promise<void> {
      // Everything stamped before now leaves the buffer once its window has passed.
      const now = Date.now();
      await new Promise((r) => setTimeout(r, queue.windowMs + 50));
      release(now + queue.windowMs);
    },
    async stop(stopOpts): Promise<FullReport> {
      clearInterval(releaser);
      let notConverged: Violation[] = [];
      if (stopOpts?.expectConverged) {
        const until = Date.now() + (stopOpts.convergeTimeoutMs ?? 20_000);
        for (;;) {
          const c = convergence();
          if (c.converged) break;
          if (Date.now() > until) {
            notConverged = c.problems;
            break;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await filePoll?.stop();
      await watch.close();
      etcd.close();
      release(Infinity);
      const endedAt = Date.now();
      const r = checker.finish(endedAt, startedAt);
      const violations = [...r.violations, ...notConverged];
      for (const [path, msg] of unreadable) {
        violations.push({
          kind: 'notConverged',
          vip: '*',
          bucket: 0,
          detail: `backend file ${path} unreadable: ${msg}`,
        });
      }
      return {
        ...r,
        violations,
        samples: r.samples + observations,
        watchErrors: errors.slice(-20),
        lateFacts: queue.late,
      };
    },
  };
}
