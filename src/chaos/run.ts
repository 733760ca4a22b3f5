import { randomInt } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { defaultSpec, startLocalCluster } from '../localcluster/cluster.js';
import { NETNS_UNSUPPORTED, startNetnsTarget } from './netnsTarget.js';
import { changedSpec, etcdLeaderIndex } from './clusterOps.js';
import { startRaftMonitor, type RaftMonitor } from './raftMonitor.js';
import { loopDelayStats } from '../agent/loopDelay.js';
import { localTarget, type ChaosTarget } from './target.js';
import type { GapStats } from '../invariant/observer.js';
import {
  failoverLatencies,
  failoverStats,
  renderSvg,
  renderText,
  type ChaosReport,
  type FaultRecord,
} from './report.js';
import { backendFaultOf, ETCD_KINDS, planSchedule, type FaultKind, type PlannedFault } from './schedule.js';

// `clusterip-ha chaos`: a local cluster (etcd + N agents with file backends + the invariant observer), a seeded
// schedule of bounded faults that are always undone, and a report. Exit code 1 on any violation.

export interface ChaosOptions {
  agents?: number;
  durationSeconds?: number;
  faults?: number;
  seed?: number;
  etcdMembers?: 1 | 3;
  dataplane?: 'file' | 'netns';
  reportDir?: string;
  /** An existing etcd instead of local members (plain http; no etcd member faults then). */
  etcdEndpoints?: string[];
  cluster?: string;
  /** Lease TTL of every agent (s); default 2 (etcd's minimum with default flags). */
  leaseTtlSeconds?: number;
  /** etcd with `--heartbeat-interval 50 --election-timeout 500` (needed for TTL 1). */
  fastEtcd?: boolean;
  buckets?: number;
  /** Node faults in flight at once (default min(agents - 2, ceil(agents / 2))). */
  concurrency?: number;
  /** Mean gap between fault starts (ms). */
  meanGapMs?: number;
  /** Only these fault kinds (a short run of some faults); default every kind the target supports. */
  only?: readonly FaultKind[];
  /** Leave these kinds out. */
  exclude?: readonly FaultKind[];
  /** Where the cluster's data, backend dirs and agent logs go (temp dir by default, removed afterwards). */
  baseDir?: string;
  /** Summary and notable lines; default: stderr. */
  log?: (line: string) => void;
  /** The progress line; default: rewritten in place on a TTY stderr, else a line every 10 s. */
  progress?: (line: string) => void;
}

export interface ChaosResult {
  exitCode: number;
  report: ChaosReport;
  text: string;
}

/** etcd's election timeout: 1000 ms by default, 500 with the fast flags. */
const ETCD_ELECTION_MS = (fast: boolean): number => (fast ? 500 : 1000);

/** How long a clone may take to refuse to start (it waits for etcd, which another fault may have slowed). */
const CLONE_REFUSE_MS = 15_000;

/** A running node needs this long after a fault is undone before another fault may pick it. */
const SETTLE_MS = 600;
/** Never fault a node when fewer than this many healthy (running, unfaulted) nodes would remain. */
const MIN_HEALTHY = 2;

/** The netns target's probe gap figures as GapStats. */
function dataplaneResolution(x: Record<string, number>): GapStats {
  return {
    count: x.probes ?? 0,
    p50Ms: x.probeGapP50Ms ?? 0,
    p99Ms: x.probeGapP99Ms ?? 0,
    maxMs: x.probeGapMaxMs ?? 0,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

function defaultProgress(): (line: string) => void {
  if (process.stderr.isTTY) return (line) => process.stderr.write(`\r${line.padEnd(110).slice(0, 110)}`);
  let last = 0;
  return (line) => {
    if (Date.now() - last < 10_000) return;
    last = Date.now();
    process.stderr.write(line + '\n');
  };
}

export async function runChaos(opts: ChaosOptions = {}): Promise<ChaosResult> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const progress = opts.progress ?? defaultProgress();
  const netns = opts.dataplane === 'netns';
  if (netns && opts.etcdEndpoints) {
    throw new ConfigError([
      { where: '--etcd-endpoints', path: '', message: 'the netns dataplane runs its own etcd in a namespace' },
    ]);
  }
  if (netns && process.getuid?.() !== 0) {
    throw new ConfigError([{ where: '--dataplane', path: '', message: 'netns needs root (network namespaces, nft)' }]);
  }
  const agents = opts.agents ?? 5;
  if (agents < 3) throw new ConfigError([{ where: '--agents', path: '', message: 'chaos needs at least 3 agents' }]);
  // With an external etcd, or the netns dataplane's single member, members are not ours to kill.
  const etcdMembers = opts.etcdEndpoints || netns ? 1 : (opts.etcdMembers ?? 1);
  const seed = opts.seed ?? randomInt(0, 2 ** 31 - 1);
  const ttlS = opts.leaseTtlSeconds ?? 2;
  const ttlMs = ttlS * 1000;
  const boundMs = ttlMs + 200;
  const durationMs = opts.faults === undefined ? (opts.durationSeconds ?? 60) * 1000 : undefined;
  const wantFaults = opts.faults;
  log(
    `chaos: seed ${seed} (reproduce with --seed ${seed}), ${agents} agents, ${etcdMembers} etcd member(s), TTL ${ttlS}s`,
  );

  const plan: PlannedFault[] = planSchedule({
    seed,
    agents,
    etcdMembers,
    ttlMs,
    // Count mode plans extra faults: some are skipped at run time when no node is free.
    ...(wantFaults !== undefined ? { faults: wantFaults * 2 + 20 } : { durationMs: durationMs! }),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    ...(opts.meanGapMs !== undefined ? { meanGapMs: opts.meanGapMs } : {}),
    exclude: [...(netns ? NETNS_UNSUPPORTED : []), ...(opts.exclude ?? [])],
    ...(opts.only ? { only: opts.only } : {}),
    etcdElectionMs: ETCD_ELECTION_MS(opts.fastEtcd ?? false),
  });
  // Hard bound on the fault phase, whatever happens.
  const maxWallMs = durationMs !== undefined ? durationMs + 5000 : (plan[plan.length - 1]?.atMs ?? 0) + 60_000;

  const lc: ChaosTarget = netns
    ? await startNetnsTarget({
        agents,
        leaseTtlSeconds: ttlS,
        unownedBoundMs: boundMs,
        ...(opts.baseDir !== undefined ? { logDir: join(opts.baseDir, 'logs') } : {}),
      })
    : localTarget(
        await startLocalCluster({
          agents,
          etcdMembers,
          leaseTtlSeconds: ttlS,
          fastEtcd: opts.fastEtcd ?? false,
          spec: defaultSpec(opts.buckets ?? 16),
          // A fresh name in a shared etcd, so a run never meets another run's keys.
          cluster: opts.cluster ?? (opts.etcdEndpoints ? `chaos-${process.pid}-${Date.now().toString(36)}` : 'chaos'),
          ...(opts.etcdEndpoints ? { etcdEndpoints: opts.etcdEndpoints } : {}),
          unownedBoundMs: boundMs,
          ...(opts.baseDir !== undefined ? { baseDir: opts.baseDir } : {}),
        }),
        etcdMembers === 3 ? 3 : 0,
      );
  const obs = lc.observer;
  const records: FaultRecord[] = [];
  const busy = new Map<string, FaultKind>();
  let etcdBusy = false;
  let specBusy = false;
  const inFlight = new Set<Promise<void>>();
  let done = 0;
  let t0 = Date.now();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  let progressTimer: NodeJS.Timeout | undefined;
  let startupConverged = false;
  let raft: RaftMonitor | undefined;

  const healthy = (): string[] =>
    lc
      .nodes()
      .filter((n) => n.run === 'running' && !busy.has(n.id))
      .map((n) => n.id)
      .sort();

  const execute = async (f: PlannedFault, rec: FaultRecord, target: string): Promise<void> => {
    let endImpair: ((t?: number) => void) | undefined;
    const hold = () => sleep(f.holdMs);
    try {
      switch (f.kind) {
        case 'kill':
        case 'killLeader':
          endImpair = obs.impair(target, f.kind);
          rec.injectedAt = Date.now();
          await lc.kill(target, 'SIGKILL');
          await hold();
          await lc.restart(target);
          break;
        case 'stopShort':
        case 'stopLong':
          endImpair = obs.impair(target, f.kind);
          rec.injectedAt = Date.now();
          lc.freeze(target);
          await hold();
          lc.thaw(target);
          break;
        case 'partitionShort':
        case 'partitionLong':
          endImpair = obs.impair(target, f.kind);
          rec.injectedAt = Date.now();
          // Alternate a reset (peer gone) and a blackhole (cable pulled: only timeouts tell).
          await lc.partition(target, f.seq % 2 === 0 ? 'reset' : 'blackhole');
          await hold();
          await lc.heal(target);
          break;
        case 'drain':
          rec.injectedAt = Date.now();
          if (!(await lc.drain(target))) rec.error = 'node key missing or already draining';
          await hold();
          await lc.undrain(target);
          break;
        case 'terminate':
          rec.injectedAt = Date.now();
          await lc.terminate(target);
          await hold();
          await lc.restart(target);
          break;
        case 'restart':
          // The new process adopts lease, claims and kernel (DESIGN §13); the checker sees any move or double.
          rec.injectedAt = Date.now();
          await lc.kill(target, 'SIGHUP');
          await lc.restart(target);
          break;
        case 'addNode': {
          rec.injectedAt = Date.now();
          const id = await lc.addNode();
          rec.target = id;
          busy.set(id, 'addNode');
          await hold();
          await lc.terminate(id);
          busy.delete(id);
          break;
        }
        case 'etcdMember': {
          const i = Number(target.slice(1));
          endImpair = obs.impair(null, 'etcdMember');
          rec.injectedAt = Date.now();
          await lc.killMember(i);
          await hold();
          await lc.restartMember(i);
          break;
        }
        case 'etcdLeaderStop': {
          const i = await etcdLeaderIndex(lc.etcdClientUrls);
          if (i === null) {
            rec.error = 'no etcd member names a leader';
            break;
          }
          rec.target = `m${i}`;
          endImpair = obs.impair(null, 'etcdLeaderStop');
          const from = Date.now();
          rec.injectedAt = from;
          lc.freezeMember(i);
          try {
            await hold();
          } finally {
            lc.thawMember(i);
          }
          // Our own watch may sit on the frozen member: its events arrive late, not lost (it resumes).
          obs.declareBlind(from, Date.now() + 1000);
          break;
        }
        case 'specChange': {
          const before = obs.cluster().spec?.spec;
          if (!before) {
            rec.error = 'no spec to change';
            break;
          }
          const { change, spec } = changedSpec(before, f.pick);
          rec.detail = change;
          // A new hash identity goes through the empty-assignment barrier: the VIP is dark by design (DESIGN §12),
          // for as long as the slowest node takes to release (a frozen one: its lease).
          endImpair = obs.impair(null, 'specChange');
          rec.injectedAt = Date.now();
          await lc.applySpec(spec);
          await hold();
          const ended = obs.impair(null, 'specChange');
          try {
            await lc.applySpec(before);
          } finally {
            ended(Date.now());
          }
          break;
        }
        case 'duplicateId': {
          rec.injectedAt = Date.now();
          const { label, exit } = await lc.startClone(target, CLONE_REFUSE_MS);
          const took = Date.now() - rec.injectedAt;
          rec.detail = `${label} exit ${exit ? (exit.code ?? exit.signal) : 'none (killed)'} after ${took} ms`;
          // DESIGN §13: a node id held by a live foreign lease refuses to start, exit 1.
          if (!exit || exit.code !== 1) rec.checkFailed = `a second ${target} did not refuse: ${rec.detail}`;
          break;
        }
        case 'backendFault': {
          const spec = { seed: f.seq, ...backendFaultOf(f.pick) };
          rec.detail = `fail ${spec.failShare}, stall ${spec.stallShare} x ${spec.stallMs} ms`;
          endImpair = obs.impair(target, 'backendFault');
          rec.injectedAt = Date.now();
          await lc.setWriteFaults(target, spec);
          try {
            await hold();
          } finally {
            await lc.setWriteFaults(target, null);
          }
          break;
        }
      }
      rec.undoneAt = Date.now();
    } catch (err) {
      rec.error = (err as Error).message;
      rec.undoneAt = Date.now();
    } finally {
      endImpair?.(Date.now());
    }
  };

  const start = (f: PlannedFault): void => {
    const rec: FaultRecord = {
      seq: f.seq,
      kind: f.kind,
      target: '',
      plannedAtMs: f.atMs,
      outcome: 'skipped',
      holdMs: f.holdMs,
    };
    records.push(rec);
    let target: string;
    if (ETCD_KINDS.includes(f.kind)) {
      if (etcdBusy) {
        rec.skipReason = 'etcd member fault in flight';
        return;
      }
      if (lc.killableEtcdMembers === 0) {
        rec.skipReason = 'no etcd member to kill';
        return;
      }
      // etcdLeaderStop names its member (the raft leader) when it runs.
      target = f.kind === 'etcdMember' ? `m${Math.floor(f.pick * lc.killableEtcdMembers)}` : 'leader';
    } else if (f.kind === 'specChange') {
      if (specBusy) {
        rec.skipReason = 'spec change in flight';
        return;
      }
      target = 'spec';
    } else if (f.kind === 'addNode') {
      if (!lc.supportsAddNode) {
        rec.skipReason = 'this dataplane cannot add nodes';
        return;
      }
      target = '';
    } else {
      const free = healthy();
      if (free.length - 1 < MIN_HEALTHY) {
        rec.skipReason = 'no free node';
        return;
      }
      if (f.kind === 'killLeader') {
        const leader = obs.cluster().leader;
        if (!leader || !free.includes(leader)) {
          rec.skipReason = leader ? 'leader busy' : 'no leader';
          return;
        }
        target = leader;
      } else {
        target = free[Math.floor(f.pick * free.length)]!;
      }
    }
    rec.target = target;
    rec.outcome = 'done';
    done++;
    if (ETCD_KINDS.includes(f.kind)) etcdBusy = true;
    else if (f.kind === 'specChange') specBusy = true;
    else if (target) busy.set(target, f.kind);
    const p = execute(f, rec, target)
      .then(() => sleep(SETTLE_MS))
      .finally(() => {
        if (ETCD_KINDS.includes(f.kind)) etcdBusy = false;
        else if (f.kind === 'specChange') specBusy = false;
        else if (target) busy.delete(target);
        inFlight.delete(p);
      });
    inFlight.add(p);
  };

  let report: ChaosReport | undefined;
  try {
    startupConverged = await lc.waitConverged(60_000);
    if (!startupConverged) log('chaos: the cluster did not converge within 60 s of start; running anyway');
    t0 = Date.now();
    // An etcd election refreshes every lease: the checker restarts the clock of failovers waiting on one there.
    if (lc.etcdClientUrls.length > 1) {
      raft = startRaftMonitor(lc.etcdClientUrls, (c) => obs.impair(null, 'etcdLeaderChange', c.t)(c.t));
    }
    loopDelay.enable();
    const deadline = t0 + maxWallMs;
    progressTimer = setInterval(() => {
      const el = ((Date.now() - t0) / 1000).toFixed(0);
      const of = durationMs !== undefined ? `/${durationMs / 1000}s` : '';
      const c = obs.cluster();
      progress(
        `chaos ${el}s${of} faults ${done}${wantFaults ? `/${wantFaults}` : ''} in flight ${inFlight.size}` +
          ` violations ${obs.violations().length} nodes ${c.nodes.size} leader ${c.leader ?? '-'}`,
      );
    }, 1000);
    for (const f of plan) {
      if (wantFaults !== undefined && done >= wantFaults) break;
      const wait = Math.min(t0 + f.atMs, deadline) - Date.now();
      if (wait > 0) await sleep(wait);
      if (Date.now() >= deadline) break;
      start(f);
    }
    // Let every fault be undone (each is bounded by its hold plus bounded kills and restarts).
    let undoTimer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all([...inFlight]), new Promise<void>((r) => (undoTimer = setTimeout(r, 120_000)))]);
    clearTimeout(undoTimer); // a pending 120 s timer would keep the process alive after the run
    clearInterval(progressTimer);
    progressTimer = undefined;
    if (process.stderr.isTTY && !opts.progress) process.stderr.write('\n');
    log(`chaos: ${done} faults done; waiting for convergence`);
    const converged = await lc.waitConverged(60_000);
    raft?.stop();
    const inv = await lc.finish({ expectConverged: true, convergeTimeoutMs: 5000 });
    const backendHistory = obs.history().filter((s) => s.source === 'backend');
    const scopes = obs.facts().flatMap((f) => (f.type === 'scope' ? [f] : []));
    const samples = failoverLatencies(records, backendHistory, scopes);
    const faultsByKind: Record<string, number> = {};
    const skippedByKind: Record<string, number> = {};
    for (const r of records) {
      const m = r.outcome === 'done' ? faultsByKind : skippedByKind;
      m[r.kind] = (m[r.kind] ?? 0) + 1;
    }
    const { violations, maxUnownedMs, lateFacts, ...rest } = inv;
    report = {
      seed,
      options: {
        agents,
        etcdMembers,
        ttlS,
        fastEtcd: opts.fastEtcd ?? false,
        durationMs,
        faults: wantFaults,
        buckets: opts.buckets ?? 16,
      },
      startedAt: inv.startedAt,
      endedAt: inv.endedAt,
      ttlMs,
      boundMs,
      faultsByKind,
      skippedByKind,
      faults: records,
      failover: failoverStats(samples),
      failoverSamples: samples,
      maxUnownedMs,
      violations,
      converged: converged && !violations.some((v) => v.kind === 'notConverged'),
      invariant: rest,
      backendHistory,
      nodes: lc.nodes().map((n) => n.id),
      dataplane: netns ? 'netns' : 'file',
      ...(raft ? { etcdLeaderChanges: raft.changes().length } : {}),
      dataplaneCounts: lc.extras(),
      resolution: {
        backend: obs.resolution(),
        ...(netns ? { dataplane: dataplaneResolution(lc.extras()) } : {}),
      },
      lateFacts,
      // This process forwards every agent's etcd traffic (the proxies) and reads every backend: if its event loop
      // stalled, agents saw etcd late and the run measured the harness, not clusterip-ha.
      harnessLoopDelayMs: (({ p99Ms, maxMs }) => ({ p99: p99Ms, max: maxMs }))(loopDelayStats(loopDelay, 10)),
      facts: [...obs.facts()],
      impairments: [...obs.impairments()],
    };
  } finally {
    raft?.stop();
    loopDelay.disable();
    if (progressTimer) clearInterval(progressTimer);
    await lc.stop();
  }
  const text = renderText(report);
  log(text);
  if (opts.reportDir) {
    await mkdir(opts.reportDir, { recursive: true });
    await writeFile(join(opts.reportDir, 'report.json'), JSON.stringify(report, null, 1));
    await writeFile(join(opts.reportDir, 'report.txt'), text);
    await writeFile(join(opts.reportDir, 'timeline.svg'), renderSvg(report));
    log(`chaos: report written to ${opts.reportDir} (report.txt, report.json, timeline.svg)`);
  }
  const exitCode =
    report.violations.length === 0 && report.converged && !report.faults.some((f) => f.checkFailed) ? 0 : 1;
  return { exitCode, report, text };
}
