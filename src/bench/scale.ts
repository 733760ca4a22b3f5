import { readFileSync } from 'node:fs';
import { createEtcdClient } from '../etcd/client.js';
import { defaultSpec, startLocalCluster, type LocalCluster } from '../localcluster/cluster.js';
import { summarize, type BenchRow, type BenchSuite } from './types.js';

// How the cluster behaves as the node count grows, with real agent processes (file backend) on one machine:
// convergence time, failover after SIGKILL, etcd request rates in steady state (should be keepalives only),
// agent RSS. Everything shares the machine's 2 cores with etcd, so large counts measure a loaded host.

const TTL_S = 2;

/** Counters from etcd's own /metrics. */
async function etcdCounters(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m =
      /^(etcd_mvcc_put_total|etcd_mvcc_txn_total|etcd_mvcc_delete_total|etcd_mvcc_range_total|etcd_server_proposals_committed_total) (\S+)$/.exec(
        line,
      ) ??
      /^grpc_server_msg_received_total\{grpc_method="(LeaseKeepAlive)",grpc_service="etcdserverpb.Lease"[^}]*\} (\S+)$/.exec(
        line,
      );
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

async function claimsOf(c: LocalCluster): Promise<Map<string, string>> {
  const etcd = createEtcdClient({ endpoints: c.etcd.endpoints, requestTimeoutMs: 2000 });
  try {
    const kvs = await etcd.getAll().prefix(c.keys.claimsPrefix).strings();
    return new Map(Object.entries(kvs));
  } finally {
    etcd.close();
  }
}

/** SIGKILL `victim`, then poll the claims until every bucket it held is claimed by someone else. */
async function failoverOnce(c: LocalCluster, victim: string): Promise<number> {
  const before = await claimsOf(c);
  const held = [...before].filter(([, owner]) => owner === victim).map(([k]) => k);
  const etcd = createEtcdClient({ endpoints: c.etcd.endpoints, requestTimeoutMs: 2000 });
  try {
    const t0 = performance.now();
    await c.kill(victim, 'SIGKILL');
    const until = t0 + 30_000;
    while (performance.now() < until) {
      const now = await etcd.getAll().prefix(c.keys.claimsPrefix).strings();
      if (held.every((k) => now[k] !== undefined && now[k] !== victim)) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`failover of ${victim} not complete after 30 s`);
  } finally {
    etcd.close();
  }
}

async function scaleRun(nodes: number, kills: number, log: (l: string) => void): Promise<BenchRow[]> {
  const buckets = 256;
  const t0 = performance.now();
  const c = await startLocalCluster({
    agents: nodes,
    etcdMembers: 1,
    leaseTtlSeconds: TTL_S,
    spec: defaultSpec(buckets),
    agentLogs: false,
  });
  const rows: BenchRow[] = [];
  try {
    if (!(await c.waitConverged(120_000))) throw new Error(`${nodes} agents did not converge in 120 s`);
    const convergeMs = performance.now() - t0;
    log(`scale: ${nodes} agents converged in ${(convergeMs / 1000).toFixed(1)} s`);
    // Let start-up writes settle, then measure a quiet window.
    await new Promise((r) => setTimeout(r, 3000));
    const url = c.etcd.endpoints[0]!;
    const windowMs = 10_000;
    const a = await etcdCounters(url);
    await new Promise((r) => setTimeout(r, windowMs));
    const b = await etcdCounters(url);
    const rate = (k: string): number => (((b[k] ?? 0) - (a[k] ?? 0)) * 1000) / windowMs / nodes;
    const writes = rate('etcd_mvcc_put_total') + rate('etcd_mvcc_txn_total') + rate('etcd_mvcc_delete_total');
    const rss = c
      .nodes()
      .map((n) => rssMb(n.proc.pid))
      .filter((x) => !Number.isNaN(x));
    const failovers: number[] = [];
    const victims = c
      .nodes()
      .slice(1, 1 + kills)
      .map((n) => n.id);
    for (const v of victims) {
      failovers.push(await failoverOnce(c, v));
      await c.restart(v);
      await c.waitConverged(60_000);
    }
    const f = summarize(failovers);
    const g = `scale ${nodes} agents`;
    rows.push(
      { group: 'scale', name: `${g}: start to converged (${buckets} buckets)`, unit: 'ms', value: convergeMs },
      {
        group: 'scale',
        name: `${g}: etcd writes per agent in steady state`,
        unit: 'writes/s',
        value: writes,
        target: { op: '<=', value: 0.05 },
        note: 'puts + txns + deletes; keepalives are not writes',
      },
      { group: 'scale', name: `${g}: keepalives per agent`, unit: 'msg/s', value: rate('LeaseKeepAlive') },
      {
        group: 'scale',
        name: `${g}: raft proposals per agent`,
        unit: '1/s',
        value: rate('etcd_server_proposals_committed_total'),
      },
      { group: 'scale', name: `${g}: reads per agent`, unit: '1/s', value: rate('etcd_mvcc_range_total') },
      {
        group: 'scale',
        name: `${g}: agent RSS (max)`,
        unit: 'MB',
        value: Math.max(...rss),
        target: { op: '<=', value: 60 },
      },
      {
        group: 'scale',
        name: `${g}: failover after SIGKILL (TTL ${TTL_S} s)`,
        unit: 'ms',
        value: f.p99,
        p50: f.p50,
        p99: f.p99,
        max: f.max,
        samples: f.samples,
        ttlMs: TTL_S * 1000,
        target: { op: '<=', value: TTL_S * 1000 + 100 },
      },
    );
  } finally {
    await c.stop();
  }
  return rows;
}

export const scaleBench: BenchSuite = async (ctx) => {
  const sizes = ctx.quick ? [5] : [10, 25, 50];
  const rows: BenchRow[] = [];
  for (const n of sizes) rows.push(...(await scaleRun(n, ctx.quick ? 2 : 5, ctx.log)));
  return rows;
};
