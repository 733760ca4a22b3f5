import { existsSync } from 'node:fs';
import { agentMainPath } from '../localcluster/agentProcess.js';
import { foldLateReplies, handoffOf, verdictOf } from '../netns/analysis.js';
import { buildDataplane, type Dataplane } from '../netns/dataplane.js';
import { holdConnections } from '../netns/heldTcp.js';
import { startMonitor } from '../netns/monitor.js';
import type { ProbeResult } from '../netns/prober.js';
import { summarize, type BenchRow, type BenchSuite } from './types.js';

// `npm run bench` rows for DESIGN §13 on the real nftables dataplane (root, network namespaces): a hitless restart
// (SIGHUP, the next process adopts) next to the drain-based one (SIGTERM, start again), as clients see them.

const TTL_S = 4;

export const restartBench: BenchSuite = async (ctx) => {
  if (process.getuid?.() !== 0) {
    ctx.log('restart: skipped (needs root for network namespaces)');
    return [];
  }
  if (!existsSync(agentMainPath())) {
    ctx.log(`restart: skipped (${agentMainPath()} missing: npm run build)`);
    return [];
  }
  const n = ctx.quick ? 3 : 20;
  const dp = await buildDataplane({ sources: 30, leaseTtlSeconds: TTL_S });
  try {
    await dp.waitSettled({ timeoutMs: 45_000 });
    const hitless = await measure(dp, n, 'SIGHUP');
    await dp.waitSettled({ timeoutMs: 30_000, owners: ['n1', 'n2', 'n3'], stableMs: 500 });
    const drain = await measure(dp, ctx.quick ? 2 : 5, 'SIGTERM');
    const row = (name: string, unit: string, samples: number[], note?: string): BenchRow => ({
      group: 'restart',
      name,
      unit,
      ...summarize(samples),
      value: summarize(samples).p99,
      ...(note ? { note } : {}),
    });
    return [
      row(`hitless restart: SIGHUP → next process adopted (nftables, TTL ${TTL_S} s)`, 'ms', hitless.adoptMs),
      row('hitless restart: unanswered source-probes per restart', 'probes', hitless.unanswered, hitless.note),
      row('hitless restart: sources that changed owner per restart', 'sources', hitless.moved),
      row('hitless restart: held TCP connections broken per restart', 'connections', hitless.broken, hitless.tcpNote),
      row('drain restart (SIGTERM, start): SIGTERM → next process holds a lease', 'ms', drain.adoptMs),
      row('drain restart: unanswered source-probes per restart', 'probes', drain.unanswered, drain.note),
      row('drain restart: sources that changed owner per restart', 'sources', drain.moved),
      row('drain restart: held TCP connections broken per restart', 'connections', drain.broken, drain.tcpNote),
    ];
  } finally {
    await dp.destroy();
  }
};

async function measure(
  dp: Dataplane,
  n: number,
  sig: 'SIGHUP' | 'SIGTERM',
): Promise<{
  adoptMs: number[];
  unanswered: number[];
  moved: number[];
  broken: number[];
  note: string;
  tcpNote: string;
}> {
  const adoptMs: number[] = [];
  const unanswered: number[] = [];
  const moved: number[] = [];
  const broken: number[] = [];
  let probes = 0;
  let toN2 = 0;
  for (let i = 0; i < n; i++) {
    // One long-lived connection per source, echoing every 100 ms through the restart.
    const owners = await dp.expectedOwners();
    toN2 = dp.sources.filter((s) => owners.get(s) === 'n2').length;
    const held = await holdConnections({ ns: dp.topology.clientNs, sources: dp.sources, vip: dp.vip.address });
    const mon = startMonitor({ probe: dp.probe, probeOptions: { windowMs: 30 }, maxMs: 60_000, maxProbes: 3000 });
    try {
      await new Promise((r) => setTimeout(r, 200));
      const t0 = Date.now();
      await dp.stopAgent('n2', sig);
      const a = dp.startAgent('n2');
      await a.waitForLog((l) => l.event === 'started', 20_000);
      adoptMs.push((a.logs().find((l) => l.event === 'sessionStarted')?.rxAt ?? Date.now()) - t0);
      if (sig === 'SIGTERM') await dp.waitSettled({ timeoutMs: 30_000, owners: ['n1', 'n2', 'n3'], stableMs: 300 });
      await new Promise((r) => setTimeout(r, 300));
      const conns = await held.report();
      broken.push(conns.filter((c) => c.error !== null || c.closed || c.wrongNode > 0 || c.silentMs! > 1000).length);
    } finally {
      mon.stop();
      await held.stop();
    }
    const results: ProbeResult[] = foldLateReplies((await mon.done).results);
    probes += results.length;
    unanswered.push(
      results.reduce(
        (k, r) => k + (r.udpProbed ? r.answers.filter((x) => verdictOf(x.udp).kind === 'none').length : 0),
        0,
      ),
    );
    moved.push(dp.sources.filter((s) => handoffOf(results, s).kind !== 'stayed').length);
  }
  return {
    adoptMs,
    unanswered,
    moved,
    broken,
    note: `${dp.sources.length} sources, ${probes} probes of ~40 ms`,
    tcpNote: `${dp.sources.length} connections, ${toN2} of them to the restarted node`,
  };
}
