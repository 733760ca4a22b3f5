import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseClusterSpecYaml } from '../config/index.js';
import { createEtcdClient } from '../etcd/client.js';
import { keysFor } from '../etcd/keys.js';
import { startLocalEtcd } from '../etcd/localEtcd.js';
import { writeSpec } from '../etcd/spec.js';
import { watchCluster, type ClusterWatch } from '../etcd/store.js';
import { spawnAgent, type AgentLogLine, type AgentProcess } from '../localcluster/agentProcess.js';
import { summarize, type BenchContext, type BenchRow, type BenchSuite } from './types.js';

// The agent's speed figures (issue 3): failover after SIGKILL for TTL 2 s (default etcd) and TTL 1 s (etcd with
// --heartbeat-interval 50 --election-timeout 500), the release → acquire gap of a graceful move, lease expiry →
// assignment write, agent RSS and idle CPU. Three agents (real processes, file backend), 12 buckets, one VIP.

const VIP = '10.77.0.100';
const BUCKETS = 12;
const SPEC = `vips:
  - address: ${VIP}
    interface: eth0
    buckets: ${BUCKETS}
    hashMode: sourceip
    seed: 0x5eed1234
rebalance:
  joinMovesPerInterval: 4
  intervalMs: 200
`;

interface Bed {
  agents: Map<string, AgentProcess>;
  watch: ClusterWatch;
  start(id: string): AgentProcess;
  converged(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

async function startBed(ttl: number, fast: boolean, etcdOnTmpfs = false): Promise<Bed> {
  const base = await mkdtemp(join(tmpdir(), 'cipha-bench-agent-'));
  // etcd commits fsync its WAL; on this machine's disk one commit takes 5–20 ms, which is most of a handoff.
  const etcdBase = etcdOnTmpfs ? await mkdtemp('/dev/shm/cipha-bench-etcd-') : undefined;
  const etcd = await startLocalEtcd({
    fastElection: fast,
    preferContainer: false,
    ...(etcdBase ? { baseDir: etcdBase } : {}),
  });
  const client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
  const keys = keysFor(`bench${process.pid}${fast ? 'f' : 'd'}`);
  await writeSpec(client, keys, parseClusterSpecYaml(SPEC, 'bench-spec'), { expectModRevision: 'absent' });
  const watch = await watchCluster(client, keys, { onChange: () => undefined });
  const agents = new Map<string, AgentProcess>();
  const bed: Bed = {
    agents,
    watch,
    start(id) {
      const a = spawnAgent({
        nodeId: id,
        endpoints: etcd.endpoints,
        cluster: keys.prefix.split('/')[2]!,
        backendDir: join(base, id),
        leaseTtlSeconds: ttl,
      });
      agents.set(id, a);
      return a;
    },
    async converged(timeoutMs) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const live = [...agents].filter(([, a]) => a.exited() === null).map(([id]) => id);
        const st = watch.state;
        const owners = st.assignments.get(VIP)?.value.owners ?? {};
        const claims = st.claims.get(VIP);
        const counts = new Map(live.map((id) => [id, 0]));
        let ok = claims !== undefined && st.nodes.size === live.length;
        for (let b = 1; ok && b <= BUCKETS; b++) {
          const o = owners[String(b)];
          if (!o || !live.includes(o) || claims!.get(b)?.owner !== o) ok = false;
          else counts.set(o, counts.get(o)! + 1);
        }
        if (ok && [...counts.values()].every((c) => Math.abs(c - BUCKETS / live.length) < 1)) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`agents did not converge within ${timeoutMs} ms`);
    },
    async close() {
      for (const a of agents.values()) a.signal('SIGKILL');
      await Promise.all([...agents.values()].map((a) => a.waitExit(5000).catch(() => undefined)));
      await watch.close();
      client.close();
      await etcd.stop();
      await rm(base, { recursive: true, force: true });
      if (etcdBase) await rm(etcdBase, { recursive: true, force: true });
    },
  };
  for (const id of ['n1', 'n2', 'n3']) bed.start(id);
  await bed.converged(30_000);
  return bed;
}

/** SIGKILL each agent in turn; time until every one of its buckets is claimed by a survivor. */
async function failover(
  ctx: BenchContext,
  ttl: number,
  fast: boolean,
  kills: number,
): Promise<{ ms: number[]; assignMs: number[] }> {
  const bed = await startBed(ttl, fast);
  const ms: number[] = [];
  const assignMs: number[] = [];
  try {
    for (let i = 0; i < kills; i++) {
      const victim = `n${(i % 3) + 1}`;
      const a = bed.agents.get(victim)!;
      const mine = [...(bed.watch.state.claims.get(VIP) ?? [])].filter(([, c]) => c.owner === victim).map(([b]) => b);
      const t0 = Date.now();
      a.signal('SIGKILL');
      await a.waitExit(5000);
      const until = t0 + ttl * 1000 + 10_000;
      let done = 0;
      while (done === 0 && Date.now() < until) {
        const c = bed.watch.state.claims.get(VIP);
        if (
          mine.every((b) => {
            const o = c?.get(b)?.owner;
            return o !== undefined && o !== victim;
          })
        )
          done = Date.now();
        else await new Promise((r) => setTimeout(r, 2));
      }
      if (done === 0) throw new Error(`failover after killing ${victim} did not finish`);
      ms.push(done - t0);
      // The leader's write for this death: from the watch event (lease expiry) to the committed txn.
      await new Promise((r) => setTimeout(r, 200));
      for (const [id, ag] of bed.agents) {
        if (id === victim) continue;
        const lines = ag
          .logs()
          .filter(
            (l: AgentLogLine) =>
              l.event === 'assignmentWritten' &&
              l.rxAt >= t0 &&
              Array.isArray(l.moves) &&
              (l.moves as { reason: string }[]).some((m) => m.reason === 'ownerDead'),
          );
        if (lines[0]) assignMs.push(Number(lines[0].sinceTriggerMs));
      }
      bed.start(victim);
      await bed.converged(30_000);
      ctx.log(`  ttl ${ttl}s kill ${i + 1}/${kills}: ${ms[ms.length - 1]} ms`);
    }
  } finally {
    await bed.close();
  }
  return { ms, assignMs };
}

/** SIGTERM an agent; per moved bucket, new owner's kernel add minus old owner's kernel remove (from log times). */
/**
 * A drained node's moves, from log timestamps: each bucket it released since `t0` (its kernel remove: the release
 * event's time less its duration) to the new owner's acquire (kernel add done), in ms.
 */
export function handoffGaps(victim: AgentProcess, others: readonly AgentProcess[], t0: number): number[] {
  const gaps: number[] = [];
  const released = victim.logs().filter((l) => l.event === 'released' && l.rxAt >= t0 && l.reason === 'draining');
  for (const r of released) {
    const removedAt = Date.parse(String(r.time)) - Number(r.durationMs ?? 0);
    for (const ag of others) {
      const acq = ag.logs().find((l) => l.event === 'acquired' && l.bucket === r.bucket && l.rxAt >= t0);
      if (acq) gaps.push(Date.parse(String(acq.time)) - removedAt);
    }
  }
  return gaps;
}

async function gracefulGaps(ctx: BenchContext, rounds: number, etcdOnTmpfs: boolean): Promise<number[]> {
  const bed = await startBed(2, false, etcdOnTmpfs);
  const gaps: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const victim = `n${(i % 3) + 1}`;
      const a = bed.agents.get(victim)!;
      const t0 = Date.now();
      a.signal('SIGTERM');
      await a.waitExit(15_000);
      await new Promise((r) => setTimeout(r, 300));
      const moved = handoffGaps(
        a,
        [...bed.agents].filter(([id]) => id !== victim).map(([, x]) => x),
        t0,
      );
      gaps.push(...moved);
      bed.start(victim);
      await bed.converged(30_000);
      ctx.log(`  graceful round ${i + 1}/${rounds}: ${moved.length} buckets`);
    }
  } finally {
    await bed.close();
  }
  return gaps;
}

export async function procStat(
  pid: number,
): Promise<{ rssMb: number; anonMb: number; pssMb: number; cpuTicks: number; childTicks: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  const anonKb = Number(/RssAnon:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  // Proportional set size: shared pages (node's own code) split among the processes that map them.
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  const pssKb = Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? NaN);
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return {
    rssMb: rssKb / 1024,
    anonMb: anonKb / 1024,
    pssMb: pssKb / 1024,
    cpuTicks: Number(stat[11]) + Number(stat[12]),
    // cutime + cstime: the children it waited for (the nft processes of the process path).
    childTicks: Number(stat[13]) + Number(stat[14]),
  };
}

export type ProcStat = Awaited<ReturnType<typeof procStat>>;

/** CPU (percent of one core: own, and of the children reaped) of each process over a window, and its memory after. */
export async function cpuOver(
  pids: readonly number[],
  windowMs: number,
): Promise<{ after: ProcStat[]; cpuPct: number[]; childPct: number[] }> {
  const before = await Promise.all(pids.map(procStat));
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, windowMs));
  const after = await Promise.all(pids.map(procStat));
  const secs = (Date.now() - t0) / 1000;
  // Clock ticks are 1/100 s on Linux.
  const pct = (ticks: number) => (ticks / 100 / secs) * 100;
  return {
    after,
    cpuPct: after.map((a, i) => pct(a.cpuTicks - before[i]!.cpuTicks)),
    childPct: after.map((a, i) => pct(a.childTicks - before[i]!.childTicks)),
  };
}

async function idle(
  windowMs: number,
): Promise<{ rssMb: number[]; anonMb: number[]; pssMb: number[]; cpuPct: number[] }> {
  const bed = await startBed(2, false);
  try {
    await new Promise((r) => setTimeout(r, 2000));
    const { after, cpuPct } = await cpuOver(
      [...bed.agents.values()].map((a) => a.pid),
      windowMs,
    );
    return {
      rssMb: after.map((a) => a.rssMb),
      anonMb: after.map((a) => a.anonMb),
      pssMb: after.map((a) => a.pssMb),
      cpuPct,
    };
  } finally {
    await bed.close();
  }
}

function failoverRow(name: string, ms: number[], ttl: number): BenchRow {
  const s = summarize(ms);
  return {
    group: 'agent',
    name,
    unit: 'ms',
    value: s.p99,
    ...s,
    ttlMs: ttl * 1000,
    target: { op: '<=', value: ttl * 1000 + 100 },
    note: `ratio to TTL p50 ${(s.p50 / (ttl * 1000)).toFixed(2)} p99 ${(s.p99 / (ttl * 1000)).toFixed(2)} max ${(s.max / (ttl * 1000)).toFixed(2)}`,
  };
}

export const agentBench: BenchSuite = async (ctx) => {
  const kills = ctx.quick ? 3 : 20;
  const rows: BenchRow[] = [];
  ctx.log('agent: failover after SIGKILL, TTL 2 s, default etcd');
  const f2 = await failover(ctx, 2, false, kills);
  rows.push(
    failoverRow(
      `failover after SIGKILL (kill → all claimed by survivors), TTL 2 s, default etcd, 3 agents x ${BUCKETS} buckets`,
      f2.ms,
      2,
    ),
  );
  ctx.log('agent: failover after SIGKILL, TTL 1 s, fast etcd');
  const f1 = await failover(ctx, 1, true, kills);
  rows.push(
    failoverRow(`failover after SIGKILL, TTL 1 s, etcd --heartbeat-interval 50 --election-timeout 500`, f1.ms, 1),
  );
  const assign = summarize([...f2.assignMs, ...f1.assignMs]);
  rows.push({
    group: 'agent',
    name: 'lease expiry (watch event) → assignment txn committed, leader',
    unit: 'ms',
    value: assign.p99,
    ...assign,
    target: { op: '<=', value: 10 },
  });
  for (const tmpfs of [false, true]) {
    ctx.log(`agent: graceful handoff gaps, etcd data on ${tmpfs ? 'tmpfs' : 'disk'}`);
    const g = summarize(await gracefulGaps(ctx, ctx.quick ? 2 : 6, tmpfs));
    rows.push({
      group: 'agent',
      name: `graceful move (SIGTERM drain): old owner kernel remove → new owner kernel add, etcd data on ${tmpfs ? 'tmpfs' : 'disk'}`,
      unit: 'ms',
      value: g.p99,
      ...g,
      target: { op: '<=', value: 20 },
      note: 'from log timestamps (1 ms resolution); one etcd commit per move (the handoff txn)',
    });
  }
  ctx.log('agent: idle RSS and CPU');
  const id = await idle(ctx.quick ? 5000 : 20_000);
  rows.push({
    group: 'agent',
    name: 'agent RSS, idle, 12 buckets',
    unit: 'MB',
    value: Math.round(Math.max(...id.rssMb)),
    samples: id.rssMb.length,
    target: { op: '<=', value: 60 },
    note:
      `private (RssAnon) ${Math.round(Math.max(...id.anonMb))} MB, PSS ${Math.round(Math.max(...id.pssMb))} MB ` +
      `(3 agents); the rest is node's shared, file-backed code`,
  });
  rows.push({
    group: 'agent',
    name: 'agent idle CPU (TTL 2 s keepalives, file backend refresh)',
    unit: '%',
    value: Math.round(Math.max(...id.cpuPct) * 100) / 100,
    samples: id.cpuPct.length,
    target: { op: '<=', value: 0.5 },
    note: 'percent of one core',
  });
  return rows;
};
