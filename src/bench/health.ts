import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type Server } from 'node:net';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseClusterSpecYaml } from '../config/index.js';
import { createEtcdClient } from '../etcd/client.js';
import { keysFor } from '../etcd/keys.js';
import { startLocalEtcd } from '../etcd/localEtcd.js';
import { writeSpec } from '../etcd/spec.js';
import { agentMainPath, spawnAgent, type AgentProcess } from '../localcluster/agentProcess.js';
import { buildDataplane } from '../netns/dataplane.js';
import { runTakeover, serviceCheckArgs } from '../netns/scenarios.js';
import { cpuOver } from './agent.js';
import { summarize, type BenchContext, type BenchRow, type BenchSuite } from './types.js';

// Service health (issue #12): how long a dead service black-holes its clients now (kill the server on one node of
// the real nftables dataplane → every one of its sources answered by another node), as a ratio of fall × interval;
// and what the checks cost the agent in CPU.

const INTERVAL = 200;
const FALL = 2;

export const healthBench: BenchSuite = async (ctx) => {
  const rows: BenchRow[] = [];
  if (process.getuid?.() !== 0) ctx.log('health: service death rows skipped (needs root for network namespaces)');
  else if (!existsSync(agentMainPath())) ctx.log(`health: skipped (${agentMainPath()} missing: npm run build)`);
  else rows.push(...(await serviceDeath(ctx, ctx.quick ? 3 : 20)));
  rows.push(...(await checkCpu(ctx, ctx.quick ? 5000 : 20_000)));
  return rows;
};

async function serviceDeath(ctx: BenchContext, deaths: number): Promise<BenchRow[]> {
  const dp = await buildDataplane({
    sources: 90,
    leaseTtlSeconds: 2,
    agentArgs: [
      ...serviceCheckArgs({ vip: '10.77.0.100', intervalMs: INTERVAL, fall: FALL, holdMs: 500 }),
      '--log-level',
      'info',
    ],
  });
  const takeover: number[] = [];
  let doubles = 0;
  try {
    await dp.waitSettled({ timeoutMs: 45_000 });
    for (let i = 0; i < deaths; i++) {
      const victim = dp.nodes[i % dp.nodes.length]!;
      const r = await runTakeover(dp, { kind: 'service', victim, tailMs: 300, leadMs: 300 });
      doubles += r.doubles.length;
      if (r.takeoverMs !== null) takeover.push(r.takeoverMs);
      ctx.log(
        `  death ${i + 1}/${deaths} (${victim}): answered elsewhere after ${r.takeoverMs} ms, ${r.doubles.length} doubles`,
      );
      if (r.takeoverMs === null || r.takeoverMs > 2 * FALL * INTERVAL) {
        // An outlier: where did the time go? (the agents' log times, relative to the kill)
        const steps = ['checkTransition', 'healthDrain', 'assignmentWritten', 'released', 'acquired', 'loopDelay'];
        for (const [id, a] of dp.agents) {
          const seen = a.logs().filter((l) => l.rxAt >= r.faultAt && steps.includes(String(l.event)));
          const line = seen.map((l) => `${l.event}@${Date.parse(String(l.time)) - r.faultAt}`).join(' ');
          if (line) ctx.log(`    ${id}: ${line.slice(0, 400)}`);
        }
      }
      await dp.startServer(victim);
      await dp.waitSettled({ timeoutMs: 20_000, owners: dp.nodes, stableMs: 500 });
    }
  } finally {
    await dp.destroy();
  }
  const bound = FALL * INTERVAL;
  const s = summarize(takeover);
  const ratio = (x: number) => (x / bound).toFixed(2);
  ctx.log(`health: service death p50 ${s.p50} ms (${ratio(s.p50)}× fall×interval), p99 ${s.p99} ms (${ratio(s.p99)}×)`);
  return [
    {
      group: 'health',
      name: `service death → its sources answered by other nodes, tcp check interval ${INTERVAL} ms fall ${FALL}, 3 nodes, 90 sources`,
      unit: 'ms',
      value: s.p99,
      ...s,
      target: { op: '<=', value: 1.2 * bound },
      note: `ratio to fall×interval (${bound} ms): p50 ${ratio(s.p50)} p99 ${ratio(s.p99)} max ${ratio(s.max)}; ${doubles} double answers; probe resolution ~30 ms`,
    },
  ];
}

/** Agent CPU with three checks (tcp, http, exec) at 1 s, against the same agent without checks. */
async function checkCpu(ctx: BenchContext, windowMs: number): Promise<BenchRow[]> {
  const base = await mkdtemp(join(tmpdir(), 'cipha-bench-health-'));
  const etcd = await startLocalEtcd({ preferContainer: false });
  const tcp: Server = createTcpServer((c) => c.destroy());
  const http = createHttpServer((_req, res) => res.end('ok'));
  const listen = (s: { listen: (p: number, h: string, cb: () => void) => unknown; address: () => unknown }) =>
    new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));
  const agents: AgentProcess[] = [];
  try {
    const [tcpPort, httpPort] = [await listen(tcp), await listen(http)];
    const client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
    const keys = keysFor(`benchh${process.pid}`);
    await writeSpec(
      client,
      keys,
      parseClusterSpecYaml(
        'vips:\n  - {address: 10.77.0.100, interface: eth0, buckets: 12, seed: 0x5eed1234}\n',
        'bench-spec',
      ),
      { expectModRevision: 'absent' },
    );
    client.close();
    const checks = JSON.stringify([
      { name: 'tcp', type: 'tcp', target: `127.0.0.1:${tcpPort}`, intervalMs: 1000, timeoutMs: 500 },
      { name: 'http', type: 'http', target: `http://127.0.0.1:${httpPort}/`, intervalMs: 1000, timeoutMs: 500 },
      { name: 'exec', type: 'exec', target: ['true'], intervalMs: 1000, timeoutMs: 500 },
    ]);
    for (const [id, withChecks] of [
      ['c1', true],
      ['c0', false],
    ] as const) {
      agents.push(
        spawnAgent({
          nodeId: id,
          endpoints: etcd.endpoints,
          cluster: keys.prefix.split('/')[2]!,
          backendDir: join(base, id),
          extraArgs: [...(withChecks ? ['--checks', checks] : []), '--log-level', 'info'],
        }),
      );
    }
    await new Promise((r) => setTimeout(r, 3000));
    const { cpuPct: pct } = await cpuOver(
      agents.map((a) => a.pid),
      windowMs,
    );
    ctx.log(`health: agent CPU with 3 checks at 1 s ${pct[0]!.toFixed(2)} %, without ${pct[1]!.toFixed(2)} %`);
    return [
      {
        group: 'health',
        name: 'agent CPU with 3 checks (tcp, http, exec) at 1 s, idle cluster',
        unit: '%',
        value: Math.round(pct[0]! * 100) / 100,
        samples: 1,
        target: { op: '<=', value: 1 },
        note: `percent of one core over ${Math.round(windowMs / 1000)} s; the same agent without checks: ${pct[1]!.toFixed(2)} %`,
      },
    ];
  } finally {
    for (const a of agents) a.signal('SIGTERM');
    await Promise.all(agents.map((a) => a.waitExit(10_000).catch(() => a.signal('SIGKILL'))));
    tcp.close();
    http.close();
    await etcd.stop();
    await rm(base, { recursive: true, force: true });
  }
}
