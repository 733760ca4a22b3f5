import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { spawnAgent, type AgentProcess } from '../../src/localcluster/agentProcess.js';
import { runCli, startCli } from './cliRun.js';
import { parsePromText } from './promText.js';
import { statusJsonSchema, type StatusJson } from './statusSchema.js';

// Health that means what it says, against real etcd and real agents (file backend, lease TTL 2 s): `--check`
// does not flap during moves, a killed node shows DOWN and makes the cluster degraded (exit 4) until it is
// forgotten, the leader's change log says who died and how fast its buckets moved, draining the last node
// needs --force and then the VIP is unhealthy at once, and `status --watch` survives an etcd outage.

const VIP = '10.77.0.110';
const SPEC = `vips:
  - address: ${VIP}
    interface: eth0
    buckets: 8
    seed: 0x5eed1234
rebalance:
  joinMovesPerInterval: 8
  intervalMs: 200
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface EventLine {
  seq: number;
  kind: string;
  node?: string;
  from?: string | null;
  to?: Record<string, number>;
  buckets?: number;
  failoverMs?: number;
  detail: string;
}

describe('status that tells the truth', () => {
  let etcd: LocalEtcd;
  let dir: string;
  const cluster = `health${process.pid}`;
  let conn: string[];
  const agents = new Map<string, AgentProcess>();
  const metricsPort = new Map<string, number>();

  const status = async (): Promise<StatusJson> => {
    const r = await runCli(['status', '--json', '--no-settle', ...conn]);
    expect(r.code, r.stderr).toBe(0);
    return statusJsonSchema.parse(JSON.parse(r.stdout));
  };
  /** Bounded poll of the raw picture (no grace) until `pred` holds. */
  const until = async (what: string, pred: (s: StatusJson) => boolean, timeoutMs = 45_000): Promise<StatusJson> => {
    const end = Date.now() + timeoutMs;
    let last: StatusJson | undefined;
    while (Date.now() < end) {
      last = await status();
      if (pred(last)) return last;
      await sleep(200);
    }
    throw new Error(`${what}: not reached; last: ${JSON.stringify([last?.anomalies, last?.settling])}`);
  };
  const events = async (): Promise<EventLine[]> => {
    const r = await runCli(['events', '--json', '-n', '100', ...conn]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as EventLine);
  };
  const start = async (id: string) => {
    const backendDir = join(dir, id);
    await mkdir(backendDir, { recursive: true });
    const port = await freePort();
    metricsPort.set(id, port);
    const extraArgs = ['--metrics-listen', `127.0.0.1:${port}`];
    agents.set(
      id,
      spawnAgent({ nodeId: id, endpoints: etcd.endpoints, cluster, backendDir, leaseTtlSeconds: 2, extraArgs }),
    );
  };

  beforeAll(async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    dir = await mkdtemp(join(tmpdir(), 'cipha-cli-health-'));
    conn = ['--etcd-endpoints', etcd.endpoints.join(','), '--cluster', cluster];
    const f = join(dir, 'cluster.yaml');
    await writeFile(f, SPEC);
    expect((await runCli(['apply', '-f', f, ...conn])).code).toBe(0);
    for (const id of ['n1', 'n2', 'n3']) await start(id);
  });
  afterAll(async () => {
    for (const a of agents.values()) a.signal('SIGKILL');
    await Promise.all([...agents.values()].map((a) => a.waitExit(10_000).catch(() => undefined)));
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('--check does not flap while buckets move (drain, undrain)', async () => {
    await until(
      '3 members own every bucket',
      (s) => s.healthy && s.nodes.filter((n) => n.member && n.alive).length === 3,
    );
    expect((await runCli(['drain', 'n3', ...conn])).code).toBe(0);
    const codes: (number | null)[] = [];
    for (let i = 0; i < 3; i++) codes.push((await runCli(['status', '--check', ...conn])).code);
    expect((await runCli(['undrain', 'n3', ...conn])).code).toBe(0);
    for (let i = 0; i < 3; i++) codes.push((await runCli(['status', '--check', ...conn])).code);
    expect(codes).toEqual([0, 0, 0, 0, 0, 0]);
    const kinds = (await events()).map((e) => `${e.kind}:${e.node ?? ''}`);
    expect(kinds).toEqual(expect.arrayContaining(['nodeDraining:n3', 'nodeUndrained:n3']));
  });

  it('a killed node is DOWN, --check says degraded (4), the change log has its death and failover', async () => {
    const before = await until('n3 serves again', (s) => s.healthy && s.vips[0]!.buckets.some((b) => b.owner === 'n3'));
    // lastAckAt is published even when nothing else changes: fresh on every live node.
    for (const n of before.nodes) expect(Date.now() - Date.parse(n.lastAckAt!)).toBeLessThan(8000);
    const victim = before.leader!;
    const owned = before.vips[0]!.buckets.filter((b) => b.owner === victim).length;
    agents.get(victim)!.signal('SIGKILL');
    await agents.get(victim)!.waitExit(10_000);

    let check = await runCli(['status', '--check', '--json', ...conn]);
    for (let i = 0; i < 20 && check.code !== 4; i++) {
      await sleep(500);
      check = await runCli(['status', '--check', '--json', ...conn]);
    }
    expect(check.code, check.stderr).toBe(4);
    expect(check.stderr).toMatch(new RegExp(`^degraded: 1 problem\\(s\\); first: nodeDown: ${victim} is DOWN`));
    const doc = statusJsonSchema.parse(JSON.parse(check.stdout));
    expect(doc.health).toBe('degraded');
    expect(doc.anomalies.map((a) => a.kind)).toEqual(['nodeDown']);
    expect(doc.nodes.find((n) => n.id === victim)).toMatchObject({ state: 'down', member: true, alive: false });
    const text = await runCli(['status', ...conn]);
    expect(text.stdout).toMatch(new RegExp(`^cluster ${cluster}  DEGRADED \\(1 node down\\)`));
    expect(text.stdout).toMatch(new RegExp(`^${victim}\\tDOWN\\t`, 'm'));

    // The next leader recorded the old one's death and where its buckets went, with the failover time.
    let log: EventLine[] = [];
    for (let i = 0; i < 30; i++) {
      log = await events();
      const lostAt = log.find((e) => e.kind === 'nodeLost' && e.node === victim)?.seq ?? Infinity;
      if (log.some((e) => e.kind === 'bucketsMoved' && e.from === victim && e.seq > lostAt)) break;
      await sleep(300);
    }
    expect(log.filter((e) => e.kind === 'nodeJoined').map((e) => e.node)).toEqual(
      expect.arrayContaining(['n1', 'n2', 'n3']),
    );
    expect(log.some((e) => e.kind === 'nodeLost' && e.node === victim)).toBe(true);
    const lost = log.find((e) => e.kind === 'nodeLost' && e.node === victim)!;
    const moved = log.find((e) => e.kind === 'bucketsMoved' && e.from === victim && e.seq > lost.seq)!;
    expect(moved).toBeDefined();
    expect(moved.buckets).toBe(owned);
    expect(Object.keys(moved.to!).every((n) => n !== victim)).toBe(true);
    expect(moved.failoverMs).toBeGreaterThanOrEqual(0);
    expect(moved.failoverMs).toBeLessThan(10_000);
    expect(moved.detail).toMatch(new RegExp(`${owned} buckets of ${victim} moved to `));
    // The seq numbers are in order and unique.
    const seqs = log.map((e) => e.seq);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
    expect(new Set(seqs).size).toBe(seqs.length);

    // forget: refused for a live node, accepted for the dead one; then the cluster is healthy again.
    const live = doc.nodes.find((n) => n.alive)!.id;
    // The survivors' metrics say the same: one known member down (what ClusterIpHaDegraded alerts on).
    const metrics = async () =>
      parsePromText(await (await fetch(`http://127.0.0.1:${metricsPort.get(live)}/metrics`)).text());
    let m = await metrics();
    expect(m.get('clusterip_ha_cluster_members', { state: 'down' })).toBe(1);
    expect(m.get('clusterip_ha_cluster_members', { state: 'up' })).toBe(2);
    expect(m.get('clusterip_ha_cluster_leader_present')).toBe(1);
    expect(m.get('clusterip_ha_cluster_unowned_buckets', { vip: VIP })).toBe(0);
    expect(m.get('clusterip_ha_cluster_eligible_nodes')).toBe(2);

    const refused = await runCli(['forget', live, ...conn]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${live} is alive`);
    const forgot = await runCli(['forget', victim, ...conn]);
    expect(forgot.code, forgot.stderr).toBe(0);
    expect(forgot.stdout).toBe(`${victim}: forgotten\n`);
    const after = await runCli(['status', '--check', '--json', ...conn]);
    expect(after.code, after.stderr).toBe(0);
    expect(statusJsonSchema.parse(JSON.parse(after.stdout)).nodes.map((n) => n.id)).not.toContain(victim);
    m = await metrics();
    expect(m.get('clusterip_ha_cluster_members', { state: 'down' })).toBe(0);
  });

  it('draining the last node that can take buckets needs --force; then the VIP is unhealthy at once', async () => {
    const s = await status();
    const [a, b] = s.nodes.filter((n) => n.alive).map((n) => n.id);
    expect((await runCli(['drain', a!, '--wait', ...conn], { timeoutMs: 60_000 })).code).toBe(0);
    const refused = await runCli(['drain', b!, ...conn]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /is the last node that can take buckets: draining it leaves 1 VIP\(s\) with no owner/,
    );
    expect((await status()).nodes.find((n) => n.id === b)!.draining).toBe(false);

    expect((await runCli(['drain', b!, '--force', '--wait', ...conn], { timeoutMs: 60_000 })).code).toBe(0);
    const t0 = Date.now();
    const dark = await runCli(['status', '--check', '--json', ...conn]);
    // No grace: nothing can take the buckets, so there is nothing to wait for.
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(dark.code).toBe(3);
    const doc = statusJsonSchema.parse(JSON.parse(dark.stdout));
    expect(doc.healthy).toBe(false);
    const unowned = doc.anomalies.filter((x) => x.kind === 'unowned');
    expect(unowned).toHaveLength(8);
    expect(unowned.every((x) => x.graceMs === 0)).toBe(true);

    // events --follow prints what the leader records next.
    const follow = startCli(['events', '--follow', '--json', '-n', '0', ...conn]);
    try {
      await sleep(500);
      expect((await runCli(['undrain', b!, ...conn])).code).toBe(0);
      await follow.waitFor((out) => out.includes(`"kind":"nodeUndrained","node":"${b}"`), 20_000);
      follow.child.kill('SIGINT');
      expect((await follow.exit(10_000)).code).toBe(0);
    } finally {
      follow.child.kill('SIGKILL');
    }
    expect((await runCli(['undrain', a!, ...conn])).code).toBe(0);
    await until('healthy again', (x) => x.healthy);
  });

  it('status --watch lists the changes, and keeps the picture marked stale while etcd is down', async () => {
    const w = startCli(['status', '--watch', ...conn]);
    try {
      await w.waitFor((out) => out.includes('RECENT CHANGES') && out.includes('nodeUndrained'), 20_000);
      await etcd.killMember(0);
      await w.waitFor((out) => /STALE: etcd unreachable for \d+ s/.test(out), 20_000);
      expect(w.stderr()).not.toMatch(/UNAVAILABLE|grpc/i);
      w.child.kill('SIGINT');
      expect((await w.exit(10_000)).code).toBe(0);
    } finally {
      w.child.kill('SIGKILL');
    }
  });
});
