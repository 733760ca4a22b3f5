import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/etcd/client.js';
import { keysFor } from '../../src/etcd/keys.js';
import { freePort, startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { loadClusterState } from '../../src/etcd/store.js';
import { bucketOf } from '../../src/hash/index.js';
import { readFileBackendDir } from '../../src/backends/fileFormat.js';
import { spawnAgent, type AgentProcess } from '../../src/localcluster/agentProcess.js';
import { buildStatus } from '../../src/cli/statusModel.js';
import { parsePromText } from './promText.js';
import { runCli, startCli } from './cliRun.js';
import { DOCUMENTED_OBJECTS, documentedFields, statusJsonSchema, type StatusJson } from './statusSchema.js';

// The operator's commands against a real etcd and real agent processes (file backend):
// status in its three forms, whois against the real owner, drain --wait / undrain, and the metrics endpoint.

const VIP = '10.77.0.100';
const SPEC = `vips:
  - address: ${VIP}
    interface: eth0
    buckets: 12
    hashMode: sourceip
    seed: 0x5eed1234
rebalance:
  joinMovesPerInterval: 4
  intervalMs: 300
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a node's file backend holds now (expiry applied), read the way the observer reads it. */
async function heldBy(dir: string, node: string): Promise<number[]> {
  const held = await readFileBackendDir(join(dir, node), Date.now());
  return [...(held.get(VIP) ?? [])];
}

describe('clusterip-ha against a live cluster', () => {
  let etcd: LocalEtcd;
  let dir: string;
  const cluster = `cli${process.pid}`;
  const keys = keysFor(cluster);
  let conn: string[];
  const agents = new Map<string, AgentProcess>();

  const healthyReport = async () => {
    const c = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
    try {
      return buildStatus({ cluster, state: await loadClusterState(c, keys) });
    } finally {
      c.close();
    }
  };
  /** Bounded wait until the cluster is healthy and `pred` holds (generous: 2 cores shared by many tests). */
  const waitFor = async (
    what: string,
    pred: (r: Awaited<ReturnType<typeof healthyReport>>) => boolean,
    timeoutMs = 60_000,
  ) => {
    const until = Date.now() + timeoutMs;
    let last: Awaited<ReturnType<typeof healthyReport>> | undefined;
    while (Date.now() < until) {
      last = await healthyReport();
      if (last.healthy && pred(last)) return last;
      await sleep(200);
    }
    throw new Error(
      `${what}: not reached in ${timeoutMs} ms; last anomalies: ${JSON.stringify(last?.anomalies.slice(0, 5))}`,
    );
  };
  const start = async (id: string, extraArgs: string[] = []) => {
    const backendDir = join(dir, id);
    await mkdir(backendDir, { recursive: true });
    const a = spawnAgent({ nodeId: id, endpoints: etcd.endpoints, cluster, backendDir, leaseTtlSeconds: 2, extraArgs });
    agents.set(id, a);
    return a;
  };

  beforeAll(async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    dir = await mkdtemp(join(tmpdir(), 'cipha-cli-cluster-'));
    conn = ['--etcd-endpoints', etcd.endpoints.join(','), '--cluster', cluster];
  });
  afterAll(async () => {
    for (const a of agents.values()) a.signal('SIGKILL');
    await Promise.all([...agents.values()].map((a) => a.waitExit(10_000).catch(() => undefined)));
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('docs/status-json.md documents exactly the fields the schema checks', () => {
    const docs = documentedFields();
    for (const [section, schema] of Object.entries(DOCUMENTED_OBJECTS)) {
      expect(docs.get(section)?.sort(), section).toEqual(Object.keys(schema.shape).sort());
    }
  });

  it('status --check exits 3 on an empty cluster, and --json says why', async () => {
    const r = await runCli(['status', '--check', '--json', ...conn]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^unhealthy: /);
    const doc = statusJsonSchema.parse(JSON.parse(r.stdout));
    expect(doc.healthy).toBe(false);
    expect(doc.anomalies.map((a) => a.kind)).toEqual(expect.arrayContaining(['noSpec', 'noNodes']));
  });

  it('with a spec and 3 agents, status converges and reads the same in all three forms', async () => {
    const f = join(dir, 'cluster.yaml');
    await writeFile(f, SPEC);
    expect((await runCli(['apply', '-f', f, ...conn])).code).toBe(0);
    for (const id of ['n1', 'n2', 'n3']) await start(id);
    await waitFor(
      '3 nodes own every bucket',
      (r) => r.nodes.filter((n) => n.alive).length === 3 && r.nodes.every((n) => n.claims >= 3),
    );

    const check = await runCli(['status', '--check', ...conn]);
    expect(check.code).toBe(0);
    expect(check.stdout + check.stderr).toBe('');

    const js = await runCli(['status', '--json', ...conn]);
    expect(js.code).toBe(0);
    const doc: StatusJson = statusJsonSchema.parse(JSON.parse(js.stdout));
    expect(doc.leader).toMatch(/^n[123]$/);
    expect(doc.nodes.map((n) => n.id)).toEqual(['n1', 'n2', 'n3']);
    for (const n of doc.nodes) {
      expect(n).toMatchObject({ alive: true, draining: false, weight: 1, fenced: false, backendKind: 'file' });
      expect(n.leaseTtlLeft).toBeGreaterThanOrEqual(0);
    }
    expect(doc.vips).toHaveLength(1);
    expect(doc.vips[0]!.buckets).toHaveLength(12);
    // Agreement with what each agent's backend really holds (its file).
    for (const b of doc.vips[0]!.buckets) {
      expect(b.owner).not.toBeNull();
      expect(b.assigned).toBe(b.owner);
      expect(b.backend).toBe(b.owner);
      expect(await heldBy(dir, b.owner!)).toContain(b.bucket);
    }

    // The same cluster through a node config file (what an operator on a node passes), and through the env.
    const nodeYaml = join(dir, 'node.yaml');
    await writeFile(
      nodeYaml,
      `etcd:\n  endpoints: [${etcd.endpoints.join(', ')}]\ncluster: ${cluster}\nbackend:\n  kind: file\n`,
    );
    const viaConfig = await runCli(['status', '--json', '--config', nodeYaml]);
    expect(viaConfig.code).toBe(0);
    expect(statusJsonSchema.parse(JSON.parse(viaConfig.stdout)).cluster).toBe(cluster);
    const viaEnv = await runCli(['status', '--check'], {
      env: { CLUSTERIP_HA_ETCD_ENDPOINTS: etcd.endpoints.join(','), CLUSTERIP_HA_CLUSTER: cluster },
    });
    expect(viaEnv.code).toBe(0);

    const text = await runCli(['status', ...conn]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^cluster ${cluster}  HEALTHY`));
    expect(text.stdout).not.toContain('ANOMALIES');
    expect(text.stdout).toMatch(new RegExp(`LEADER ${doc.leader}`));
    for (const id of ['n1', 'n2', 'n3']) {
      const owned = doc.vips[0]!.buckets.filter((b) => b.owner === id).length;
      expect(text.stdout).toMatch(new RegExp(`  ${id}: ${owned} buckets? \\(`));
    }
    // Not a TTY: plain tab-separated rows, no colour codes.
    expect(text.stdout).toMatch(/^NODE\tSTATE\tWEIGHT/m);
    expect(text.stdout).not.toContain('\u001b[');
  });

  it('status --watch redraws on an etcd change and stops on SIGINT', async () => {
    const w = startCli(['status', '--watch', '--json', ...conn]);
    try {
      await w.waitFor((out) => out.split('\n').filter(Boolean).length >= 1, 30_000);
      const first = statusJsonSchema.parse(JSON.parse(w.stdout().split('\n')[0]!));
      expect(first.healthy).toBe(true);
      // A change in etcd (the drain flag) must produce a new document showing it, without polling.
      expect((await runCli(['drain', 'n3', ...conn])).code).toBe(0);
      await w.waitFor(
        (out) =>
          out
            .split('\n')
            .filter(Boolean)
            .some((l) => (JSON.parse(l) as StatusJson).nodes.some((n) => n.id === 'n3' && n.draining)),
        30_000,
      );
      w.child.kill('SIGINT');
      expect((await w.exit(10_000)).code).toBe(0);
    } finally {
      w.child.kill('SIGKILL');
      expect((await runCli(['undrain', 'n3', ...conn])).code).toBe(0);
    }
    await waitFor('n3 takes buckets again', (r) => (r.nodes.find((n) => n.id === 'n3')?.claims ?? 0) > 0);
  });

  it('whois names the node that really owns the client bucket', async () => {
    // Settled and balanced (12 buckets, 3 equal nodes): no move can run while whois and the files are read.
    await waitFor('balanced', (r) => ['n1', 'n2', 'n3'].every((id) => r.nodes.find((n) => n.id === id)?.claims === 4));
    const clients = ['192.0.2.1', '192.0.2.77', '198.51.100.23', '203.0.113.9', '10.1.2.3', '172.16.5.4'];
    for (const client of clients) {
      const r = await runCli(['whois', client, '--json', ...conn]);
      expect(r.code).toBe(0);
      const a = JSON.parse(r.stdout) as {
        client: string;
        vip: string;
        bucket: number;
        owner: string;
        hashedAs: string;
      };
      expect(a).toMatchObject({ client, vip: VIP, hashedAs: 'nftables' });
      // The bucket is the kernel hash's (computed independently here) and the owner's backend file holds it.
      expect(a.bucket).toBe(
        bucketOf(
          {
            address: VIP,
            interface: 'eth0',
            buckets: 12,
            hashMode: 'sourceip',
            seed: 0x5eed1234,
            clusterMac: '',
            sticky: false,
          },
          'nftables',
          { saddr: client },
        ),
      );
      expect(await heldBy(dir, a.owner)).toContain(a.bucket);
      for (const other of ['n1', 'n2', 'n3'].filter((n) => n !== a.owner)) {
        expect(await heldBy(dir, other)).not.toContain(a.bucket);
      }
      const text = await runCli(['whois', client, '--vip', VIP, ...conn]);
      expect(text.stdout).toContain(`${client} -> ${VIP} bucket ${a.bucket} (nftables hash): owner ${a.owner}`);
    }
  });

  it('drain --wait returns once the node owns nothing, keeps its lease; undrain brings it back', async () => {
    const r = await runCli(['drain', 'n2', '--wait', '--wait-timeout', '60000', ...conn], { timeoutMs: 90_000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^n2: draining$/m);
    expect(r.stdout).toMatch(/n2 owns nothing: drained/);
    const doc = statusJsonSchema.parse(JSON.parse((await runCli(['status', '--json', ...conn])).stdout));
    const n2 = doc.nodes.find((n) => n.id === 'n2')!;
    expect(n2).toMatchObject({ alive: true, draining: true, claims: 0 });
    expect(doc.vips[0]!.buckets.every((b) => b.owner !== 'n2')).toBe(true);
    // The key is still attached to n2's lease: killing n2 must make it vanish.
    const c = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
    try {
      const kv = (await c.get(keys.node('n2')).exec()).kvs[0];
      expect(kv?.lease).not.toBe('0');
    } finally {
      c.close();
    }
    const again = await runCli(['drain', 'n2', ...conn]);
    expect(again.stdout).toContain('n2: already draining');

    const un = await runCli(['undrain', 'n2', ...conn]);
    expect(un.code).toBe(0);
    expect(un.stdout).toContain('n2: undrained');
    await waitFor(
      'n2 owns buckets again',
      (s) => (s.nodes.find((n) => n.id === 'n2')?.claims ?? 0) > 0 && !s.nodes.find((n) => n.id === 'n2')!.draining,
    );

    const missing = await runCli(['drain', 'nobody', ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/node nobody is not registered .* check the id with `clusterip-ha status`/);
  });

  it('an agent serves /metrics, /healthz and /readyz that agree with etcd', async () => {
    const port = await freePort();
    await start('n4', ['--metrics-listen', `127.0.0.1:${port}`]);
    const s = await waitFor('n4 owns buckets', (r) => (r.nodes.find((n) => n.id === 'n4')?.claims ?? 0) > 0);
    const n4claims = s.nodes.find((n) => n.id === 'n4')!.claims;
    const base = `http://127.0.0.1:${port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    // The gauge follows acquired/released events; allow it a moment to catch up with etcd.
    let owned: number | undefined;
    for (let i = 0; i < 50 && owned !== n4claims; i++) {
      const res = await fetch(`${base}/metrics`);
      expect(res.status).toBe(200);
      const m = parsePromText(await res.text());
      owned = m.get('clusterip_ha_buckets_owned', { vip: VIP });
      expect(m.get('clusterip_ha_fenced')).toBe(0);
      expect(m.get('clusterip_ha_lease_ttl_seconds')).toBe(2);
      expect(m.get('clusterip_ha_claims_acquired_total', { vip: VIP })).toBeGreaterThanOrEqual(1);
      expect(m.get('clusterip_ha_keepalive_ack_age_seconds')).toBeGreaterThanOrEqual(0);
      expect(m.get('clusterip_ha_keepalive_ack_age_seconds')).toBeLessThan(2);
      expect(m.get('clusterip_ha_fence_headroom_seconds')).toBeGreaterThan(0);
      expect(m.types.get('clusterip_ha_failover_duration_seconds')).toBe('histogram');
      // Event-loop delay measured by prom-client in the agent process itself.
      expect(m.get('nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0);
      if (owned !== n4claims) await sleep(100);
    }
    expect(owned).toBe(n4claims);
  });
});
