import { mkdir } from 'node:fs/promises';
import type { OwnershipSample } from '../invariant/types.js';
import { gapStats, startObserver, type FullObserver, type FullReport } from '../invariant/observer.js';
import { setDraining, type NodeRunState } from '../localcluster/cluster.js';
import { buildDataplane, type Dataplane } from '../netns/dataplane.js';
import type { ProbeResult, StreamReport } from '../netns/prober.js';
import { waitObserverConverged } from '../invariant/converge.js';
import type { ChaosTarget } from './target.js';
import { applyWithCli } from './clusterOps.js';
import type { FaultKind } from './schedule.js';

// `chaos --dataplane netns`: the real nftables dataplane of src/netns (a namespace per node, agents with the
// nftables backend, etcd on a control network, a prober sending UDP from every client source). The observer
// gets the kernel sets as its backend source and every probe as dataplane samples; a packet answered by two
// nodes is a double owner at that instant.

export interface NetnsTargetOptions {
  agents: number;
  leaseTtlSeconds: number;
  unownedBoundMs: number;
  /** Agent logs go to `<logDir>/<node>.log`. */
  logDir?: string;
  /** Kernel set sampling interval (ms); default 100. */
  kernelSampleMs?: number;
  /** Every source sends a request this often (ms), on the prober's own clock; default 5. */
  probePeriodMs?: number;
}

/**
 * Dataplane samples of one probe, per bucket: a source answered by two or more nodes is a double owner (one
 * packet accepted twice); sources that all got the same single answer name that owner; sources of one bucket
 * answered by different single nodes are a handoff between two probe packets, not one packet twice: no sample.
 */
export function probeSamples(r: ProbeResult, vip: string, bucketOf: (source: string) => number): OwnershipSample[] {
  const per = new Map<number, { doubles: Set<string>; singles: Set<string> }>();
  for (const a of r.answers) {
    const b = bucketOf(a.source);
    let e = per.get(b);
    if (!e) per.set(b, (e = { doubles: new Set(), singles: new Set() }));
    const distinct = new Set(a.udp);
    if (distinct.size >= 2) distinct.forEach((n) => e.doubles.add(n));
    else if (distinct.size === 1) distinct.forEach((n) => e.singles.add(n));
  }
  const out: OwnershipSample[] = [];
  for (const [bucket, e] of [...per].sort(([x], [y]) => x - y)) {
    if (e.doubles.size > 0) out.push({ t: r.t0, source: 'dataplane', vip, bucket, holders: [...e.doubles].sort() });
    else if (e.singles.size === 1) out.push({ t: r.t0, source: 'dataplane', vip, bucket, holders: [...e.singles] });
    else if (e.singles.size === 0) out.push({ t: r.t0, source: 'dataplane', vip, bucket, holders: [] });
  }
  return out;
}

/** One etcd member; clones and write faults would need the namespaces' nft wrapped (not done here). */
export const NETNS_UNSUPPORTED: readonly FaultKind[] = [
  'addNode',
  'etcdMember',
  'etcdLeaderStop',
  'duplicateId',
  'backendFault',
];

/**
 * Dataplane samples of one stream report: every request answered twice is a double at its send time; per bucket,
 * the sources' single answers name the owner when they agree, nobody when no send of any of its sources was
 * answered; sources of one bucket answered by different single nodes are a handoff within the window: no sample.
 */
export function streamSamples(
  r: StreamReport,
  sources: readonly string[],
  vip: string,
  bucketOf: (source: string) => number,
): OwnershipSample[] {
  const out: OwnershipSample[] = [];
  for (const d of r.doubles) {
    out.push({ t: d.t, source: 'dataplane', vip, bucket: bucketOf(sources[d.i]!), holders: [...d.nodes].sort() });
  }
  if (r.sends === 0) return out;
  const per = new Map<number, Set<string>>();
  sources.forEach((src, i) => {
    const b = bucketOf(src);
    let e = per.get(b);
    if (!e) per.set(b, (e = new Set()));
    for (const n of r.owners[i] ?? []) e.add(n);
  });
  for (const [bucket, singles] of [...per].sort(([x], [y]) => x - y)) {
    if (singles.size === 1) out.push({ t: r.to, source: 'dataplane', vip, bucket, holders: [...singles] });
    else if (singles.size === 0) out.push({ t: r.to, source: 'dataplane', vip, bucket, holders: [] });
  }
  return out;
}

export async function startNetnsTarget(opts: NetnsTargetOptions): Promise<ChaosTarget> {
  const names = Array.from({ length: opts.agents }, (_, i) => `n${i + 1}`);
  const spawnedAt = new Map(names.map((n) => [n, Date.now()]));
  if (opts.logDir) await mkdir(opts.logDir, { recursive: true });
  const dp: Dataplane = await buildDataplane({
    nodes: names,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    ...(opts.logDir ? { logDir: opts.logDir } : {}),
  });
  const run = new Map<string, NodeRunState>(names.map((n) => [n, 'running']));
  let obs: FullObserver;
  try {
    obs = await startObserver({
      endpoints: [dp.etcdEndpoint],
      cluster: dp.cluster,
      backendDirs: {},
      unownedBoundMs: opts.unownedBoundMs,
      backendFromRecord: true,
    });
  } catch (err) {
    await dp.destroy();
    throw err;
  }
  const sampler = dp.startKernelSampler(
    (s) => obs.record(s),
    opts.kernelSampleMs ?? 100,
    (t) => obs.round(t),
  );
  // Probe only once every agent has installed its rules and owns its share: before that, a node without the
  // ruleset answers every source (the harness puts the VIP on eth0 at setup), which says nothing about the protocol.
  try {
    await dp.waitSettled({ timeoutMs: 60_000 });
  } catch (err) {
    await sampler.stop().catch(() => undefined);
    await obs.stop().catch(() => undefined);
    await dp.destroy();
    throw err;
  }
  const counts = { probes: 0, sourcesProbed: 0, doubleReplies: 0, unanswered: 0, reports: 0 };
  const probeGaps: number[] = [];
  // The prober sends from every source every probePeriodMs on its own clock (it runs in the client namespace, so
  // this process's busy loop cannot stretch the gaps); its reports come here.
  const probeStream = dp.probeStream({ periodMs: opts.probePeriodMs ?? 5, reportMs: 50, settleMs: 20 }, (r) => {
    counts.reports++;
    counts.probes += r.sends;
    counts.sourcesProbed += r.sends * r.owners.length;
    counts.doubleReplies += r.doubles.length;
    counts.unanswered += r.silent.reduce((a, b) => a + b, 0);
    probeGaps.push(...r.gaps);
    for (const x of streamSamples(r, dp.sources, dp.vip.address, (src) => dp.bucketOfSource(src))) {
      obs.record(x);
    }
  });
  let report: FullReport | undefined;
  let probesStopped = false;
  const stopProbes = async (): Promise<void> => {
    if (probesStopped) return;
    probesStopped = true;
    probeStream.stop();
    // The last report (the prober sends one when it stops).
    await new Promise((r) => setTimeout(r, 200));
  };
  const agent = (id: string) => {
    const a = dp.agents.get(id);
    if (!a) throw new Error(`no agent ${id}`);
    return a;
  };

  const target: ChaosTarget = {
    observer: obs,
    killableEtcdMembers: 0,
    etcdClientUrls: [],
    supportsAddNode: false,
    unsupported: NETNS_UNSUPPORTED,
    nodes: () => names.map((id) => ({ id, run: run.get(id)! })),
    async kill(id, sig = 'SIGKILL') {
      if (run.get(id) === 'stopped') agent(id).signal('SIGCONT');
      await dp.stopAgent(id, sig).catch(() => undefined);
      run.set(id, 'exited');
    },
    freeze(id) {
      if (run.get(id) !== 'running') return;
      agent(id).signal('SIGSTOP');
      run.set(id, 'stopped');
    },
    thaw(id) {
      if (run.get(id) !== 'stopped') return;
      agent(id).signal('SIGCONT');
      run.set(id, 'running');
    },
    async restart(id) {
      if (run.get(id) !== 'exited') await target.kill(id, 'SIGKILL');
      spawnedAt.set(id, Date.now());
      dp.startAgent(id);
      run.set(id, 'running');
    },
    addNode: async () => {
      throw new Error('the netns dataplane has a fixed set of nodes');
    },
    partition: (id, mode) => dp.cutControl(id, mode === 'reset' ? 'linkDown' : 'blackhole'),
    heal: (id) => dp.healControl(id),
    drain: (id) => setDraining(dp.etcd, dp.keys, id, true),
    undrain: (id) => setDraining(dp.etcd, dp.keys, id, false),
    async terminate(id) {
      await dp.stopAgent(id, 'SIGTERM', 30_000).catch(() => undefined);
      run.set(id, 'exited');
    },
    killMember: async () => {
      throw new Error('the netns dataplane runs one etcd member');
    },
    restartMember: async () => {
      throw new Error('the netns dataplane runs one etcd member');
    },
    freezeMember: () => {
      throw new Error('the netns dataplane runs one etcd member');
    },
    thawMember: () => undefined,
    applySpec: (spec) => applyWithCli([dp.etcdEndpoint], dp.cluster, spec),
    startClone: async () => {
      throw new Error('the netns dataplane does not start clones');
    },
    setWriteFaults: async () => {
      throw new Error('the netns dataplane does not inject write faults');
    },
    waitConverged: (ms) =>
      waitObserverConverged(
        obs,
        () => new Set(names.filter((n) => run.get(n) === 'running')),
        ms,
        // A restarted agent counts once its current process registered (startedAt after the spawn).
        (id) => Date.parse(obs.cluster().nodes.get(id)?.value.startedAt ?? '') >= (spawnedAt.get(id) ?? 0),
      ),
    async finish(o) {
      if (!report) {
        await stopProbes();
        report = await obs.stop(o);
      }
      return report;
    },
    extras: () => {
      const g = gapStats(probeGaps);
      return { ...counts, probeGapP50Ms: g.p50Ms, probeGapP99Ms: g.p99Ms, probeGapMaxMs: g.maxMs };
    },
    async stop() {
      if (!report) await target.finish().catch(() => undefined);
      await stopProbes();
      await Promise.race([sampler.stop(), new Promise((r) => setTimeout(r, 5000))]);
      await dp.destroy();
    },
  };
  return target;
}
