import { existsSync } from 'node:fs';
import type { BenchContext, BenchRow, BenchSuite } from '../bench/types.js';
import { summarize } from '../bench/types.js';
import { cpuOver, handoffGaps } from '../bench/agent.js';
import { agentMainPath } from '../localcluster/agentProcess.js';
import { SERVER_TCP_PORT, SERVER_UDP_PORT } from './addressing.js';
import { buildDataplane } from './dataplane.js';
import { startProber, type Prober } from './prober.js';
import { runTakeover, type TakeoverKind } from './scenarios.js';
import { startNodeServer, type NodeServer } from './servers.js';
import { applyStaticRuleset } from './staticRuleset.js';
import { createTopology, type Topology } from './topology.js';

// `npm run bench` rows for the real nftables dataplane in network namespaces (needs root): topology setup and
// teardown, the prober's round time, and failover as clients see it (SIGKILL, control cut, drain) with real agents.

const TTL_S = 2;

export const dataplaneBench: BenchSuite = async (ctx) => {
  if (process.getuid?.() !== 0) {
    ctx.log('dataplane: skipped (needs root for network namespaces)');
    return [];
  }
  const rows: BenchRow[] = [];
  rows.push(...(await topologyRows(ctx)));
  if (existsSync(agentMainPath())) {
    rows.push(...(await idleRows(ctx)));
    rows.push(...(await gracefulRows(ctx)));
    rows.push(...(await takeoverRows(ctx)));
  } else ctx.log(`dataplane: agent rows skipped (${agentMainPath()} missing: npm run build)`);
  return rows;
};

/**
 * Idle agents with the nftables backend, side by side per kernel path (DESIGN §16): CPU of the agent and of the
 * children it reaped (the nft processes), and memory, over a quiet window of a settled 3-node cluster.
 */
export async function idleRows(ctx: BenchContext): Promise<BenchRow[]> {
  const windowMs = ctx.quick ? 5000 : 20_000;
  const out: BenchRow[] = [];
  const measured: Record<string, number> = {};
  for (const transport of ['libnftables', 'nft'] as const) {
    ctx.log(`dataplane: idle agents, nftables through ${transport}, ${windowMs / 1000} s`);
    const dp = await buildDataplane({ sources: 30, leaseTtlSeconds: TTL_S, agentArgs: ['--nft-transport', transport] });
    try {
      await dp.waitSettled({ timeoutMs: 45_000 });
      await new Promise((r) => setTimeout(r, 2000));
      const {
        after,
        cpuPct: own,
        childPct: kids,
      } = await cpuOver(
        [...dp.agents.values()].map((a) => a.pid),
        windowMs,
      );
      const total = own.map((o, i) => o + kids[i]!);
      const worst = Math.max(...total);
      measured[transport] = worst;
      const other =
        transport === 'nft' && measured.libnftables ? `; libnftables: ${measured.libnftables.toFixed(2)} %` : '';
      out.push({
        group: 'dataplane',
        name: `agent idle CPU, nftables through ${transport} (agent + its nft children), 3 agents, TTL ${TTL_S} s`,
        unit: '%',
        value: Math.round(worst * 100) / 100,
        samples: total.length,
        ...(transport === 'libnftables' ? { target: { op: '<=' as const, value: 0.3 } } : {}),
        note:
          `percent of one core, worst agent; own ${Math.max(...own).toFixed(2)} %, children ${Math.max(...kids).toFixed(2)} %` +
          other,
      });
      out.push({
        group: 'dataplane',
        name: `agent RSS, idle, nftables through ${transport}`,
        unit: 'MB',
        value: Math.round(Math.max(...after.map((a) => a.rssMb))),
        samples: after.length,
        note: `private (RssAnon) ${Math.round(Math.max(...after.map((a) => a.anonMb)))} MB, PSS ${Math.round(Math.max(...after.map((a) => a.pssMb)))} MB`,
      });
    } finally {
      await dp.destroy();
    }
  }
  return out;
}

/** Graceful moves (SIGTERM drain) with the nftables backend, per kernel path, from the agents' log timestamps. */
export async function gracefulRows(ctx: BenchContext): Promise<BenchRow[]> {
  const rounds = ctx.quick ? 1 : 3;
  const out: BenchRow[] = [];
  for (const transport of ['libnftables', 'nft'] as const) {
    const dp = await buildDataplane({ sources: 30, leaseTtlSeconds: TTL_S, agentArgs: ['--nft-transport', transport] });
    const gaps: number[] = [];
    try {
      await dp.waitSettled({ timeoutMs: 45_000 });
      for (let i = 0; i < rounds; i++) {
        const victim = dp.nodes[i % dp.nodes.length]!;
        const t0 = Date.now();
        const a = dp.agents.get(victim)!;
        await dp.stopAgent(victim, 'SIGTERM', 15_000);
        await new Promise((r) => setTimeout(r, 300));
        const moved = handoffGaps(
          a,
          [...dp.agents].filter(([id]) => id !== victim).map(([, x]) => x),
          t0,
        );
        gaps.push(...moved);
        ctx.log(`dataplane: graceful move through ${transport}, round ${i + 1}/${rounds}: ${moved.length} buckets`);
        dp.startAgent(victim);
        await dp.waitSettled({ timeoutMs: 45_000 });
      }
    } finally {
      await dp.destroy();
    }
    if (gaps.length === 0) continue;
    const g = summarize(gaps);
    out.push({
      group: 'dataplane',
      name: `graceful move (SIGTERM drain), nftables through ${transport}: old owner's kernel remove → new owner's kernel add`,
      unit: 'ms',
      value: g.p99,
      ...g,
      ...(transport === 'libnftables' ? { target: { op: '<=' as const, value: 15 } } : {}),
      note: 'from log timestamps (1 ms resolution); one etcd commit per move (the handoff txn); 3 nodes, 16 buckets',
    });
  }
  return out;
}

async function topologyRows(ctx: BenchContext): Promise<BenchRow[]> {
  const reps = ctx.quick ? 2 : 5;
  const setup: number[] = [];
  const teardown: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = await createTopology({ sources: 90 });
    setup.push(t.setupMs);
    teardown.push(await t.destroy());
  }
  const rounds = ctx.quick ? 30 : 200;
  const udp: number[] = [];
  const both: number[] = [];
  let topo: Topology | undefined;
  let prober: Prober | undefined;
  const servers: NodeServer[] = [];
  try {
    topo = await createTopology({ sources: 90, etcdNs: false });
    const rules = { table: 'cipha_bench', vip: topo.vip, buckets: 12, seed: 0x5eed1234 };
    for (const [i, n] of topo.nodes.entries()) {
      await applyStaticRuleset(
        n.ns,
        rules,
        [1, 2, 3, 4].map((b) => b + 4 * i),
      );
      servers.push(
        await startNodeServer({
          ns: n.ns,
          node: n.name,
          vip: topo.vip,
          udpPort: SERVER_UDP_PORT,
          tcpPort: SERVER_TCP_PORT,
        }),
      );
    }
    prober = await startProber({
      ns: topo.clientNs,
      sources: topo.sources,
      vip: topo.vip,
      udpPort: SERVER_UDP_PORT,
      tcpPort: SERVER_TCP_PORT,
    });
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      await prober.probe({ windowMs: 10 });
      udp.push(performance.now() - t);
    }
    for (let i = 0; i < Math.ceil(rounds / 4); i++) {
      const t = performance.now();
      await prober.probe({ windowMs: 10, tcp: true });
      both.push(performance.now() - t);
    }
  } finally {
    await Promise.all([...servers.map((s) => s.stop()), prober?.stop()]);
    await topo?.destroy();
  }
  const row = (name: string, xs: number[], note?: string): BenchRow => {
    const s = summarize(xs);
    return { group: 'dataplane', name, unit: 'ms', value: s.p99, ...s, ...(note ? { note } : {}) };
  };
  return [
    row('netns topology setup: switch, client (90 sources), etcd, 3 nodes', setup),
    row('netns topology teardown', teardown),
    row('probe round, 90 sources, UDP (10 ms reply window)', udp),
    row('probe round, 90 sources, UDP + TCP connect each', both),
  ];
}

async function takeoverRows(ctx: BenchContext): Promise<BenchRow[]> {
  const reps = ctx.quick ? 1 : 3;
  const figures: Record<TakeoverKind, { takeover: number[]; victimLast: number[]; gap: number[]; doubles: number }> = {
    kill: { takeover: [], victimLast: [], gap: [], doubles: 0 },
    cut: { takeover: [], victimLast: [], gap: [], doubles: 0 },
    drain: { takeover: [], victimLast: [], gap: [], doubles: 0 },
    service: { takeover: [], victimLast: [], gap: [], doubles: 0 },
  };
  const victims: Record<TakeoverKind, string> = { kill: 'n2', cut: 'n3', drain: 'n1', service: 'n2' };
  for (let i = 0; i < reps; i++) {
    for (const kind of ['kill', 'cut', 'drain'] as const) {
      const dp = await buildDataplane({ sources: 90, leaseTtlSeconds: TTL_S });
      try {
        await dp.waitSettled({ timeoutMs: 45_000 });
        const r = await runTakeover(dp, { kind, victim: victims[kind] });
        ctx.log(`dataplane ${kind}: takeover ${r.takeoverMs} ms, victim silent from ${r.victimLastMs} ms`);
        const f = figures[kind];
        if (r.takeoverMs !== null) f.takeover.push(r.takeoverMs);
        if (r.victimLastMs !== null) f.victimLast.push(r.victimLastMs);
        f.doubles += r.doubles.length;
        const gaps = [...r.handoffs.values()].flatMap((h) => (h.kind === 'clean' ? [h.gapMs] : []));
        if (gaps.length) f.gap.push(Math.max(...gaps));
      } finally {
        await dp.destroy();
      }
    }
  }
  const ttlMs = TTL_S * 1000;
  const out: BenchRow[] = [];
  const label: Record<TakeoverKind, string> = {
    kill: 'agent SIGKILL (node up)',
    cut: 'control link cut (node reachable by clients)',
    drain: 'clusterip-ha drain (from CLI process start)',
    service: 'service death (server killed, agent checks it)',
  };
  for (const kind of ['kill', 'cut', 'drain'] as const) {
    const f = figures[kind];
    if (f.takeover.length === 0) continue;
    const s = summarize(f.takeover);
    out.push({
      group: 'dataplane',
      name: `${label[kind]}: fault → survivors answer all its sources, 3 nodes, 90 sources`,
      unit: 'ms',
      value: s.max,
      ...s,
      ...(kind === 'drain' ? {} : { ttlMs, target: { op: '<=', value: ttlMs + 1000 } }),
      note: `${f.doubles} double answers; probe resolution ~30 ms`,
    });
    const v = summarize(f.victimLast);
    out.push({
      group: 'dataplane',
      name: `${label[kind]}: fault → victim's last answer`,
      unit: 'ms',
      value: v.max,
      ...v,
      ...(kind === 'drain' ? {} : { ttlMs }),
    });
    if (f.gap.length) {
      const g = summarize(f.gap);
      out.push({
        group: 'dataplane',
        name: `${label[kind]}: longest time one source went unanswered`,
        unit: 'ms',
        value: g.max,
        ...g,
        ...(kind === 'drain' ? {} : { ttlMs }),
        note: 'per run, the max over the victim sources; probe resolution ~30 ms',
      });
    }
  }
  return out;
}
