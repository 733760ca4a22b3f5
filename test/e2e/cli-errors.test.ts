import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { spawnAgent, type AgentProcess } from '../../src/localcluster/agentProcess.js';
import { statusJsonSchema } from './statusSchema.js';
import { CLI_MAIN, cleanEnv, runCli } from './cliRun.js';

// Errors an operator meets, against a real etcd with auth enabled: a read-only user and a wrong password are
// told so (not "cannot reach etcd"), a password file works, the stored spec prints and applies back unchanged,
// removing every VIP needs --force, a cluster name with no spec lists the clusters, and a closed pipe is quiet.

const SPEC = `vips:
  - address: 10.77.0.120
    interface: eth0
    buckets: 4
    seed: 0x1234
    hashMode: sourceip-sourceport
rebalance:
  joinMovesPerInterval: 2
  intervalMs: 500
`;

describe('errors in words', () => {
  let etcd: LocalEtcd;
  let dir: string;
  const cluster = `err${process.pid}`;
  let ep: string[];
  let rootPw: string;

  beforeAll(async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    dir = await mkdtemp(join(tmpdir(), 'cipha-cli-errors-'));
    ep = ['--etcd-endpoints', etcd.endpoints.join(',')];
    rootPw = join(dir, 'root-password');
    await writeFile(rootPw, 'rootpw-5150\n');
    await writeFile(join(dir, 'cluster.yaml'), SPEC);
    await writeFile(join(dir, 'empty.yaml'), 'vips: []\n');
    await writeFile(join(dir, 'changed.yaml'), SPEC.replace('buckets: 4', 'buckets: 8'));
    // Auth: root (everything) and a reader that may only read this cluster's keys.
    const c = new Etcd3({ hosts: etcd.endpoints });
    try {
      await c.user('root').create('rootpw-5150');
      await c.user('root').addRole('root');
      const reader = await c.role('reader').create();
      await reader.grant({ permission: 'Read', range: c.range({ prefix: `/clusterip-ha/` }) });
      await c.user('viewer').create('viewpw');
      await c.user('viewer').addRole('reader');
      await c.auth.authEnable();
    } finally {
      c.close();
    }
  });
  const agents: AgentProcess[] = [];
  afterAll(async () => {
    for (const a of agents) a.signal('SIGKILL');
    await Promise.all(agents.map((a) => a.waitExit(10_000).catch(() => undefined)));
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const asRoot = () => ['--etcd-user', 'root', '--etcd-password-file', rootPw, '--cluster', cluster, ...ep];

  it('apply with a password file; spec prints YAML that applies back unchanged', async () => {
    const a = await runCli(['apply', '-f', join(dir, 'cluster.yaml'), ...asRoot()]);
    expect(a.code, a.stderr).toBe(0);
    const s = await runCli(['spec', ...asRoot()]);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toMatch(new RegExp(`^# cluster ${cluster}: spec generation 1 `));
    expect(s.stdout).toContain('hashMode: sourceip-sourceport');
    const back = await runCli(['apply', '--dry-run', '-f', '-', ...asRoot()], { input: s.stdout });
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toMatch(/^no change: - matches .* \(generation 1\)/);
    // The same through the _FILE environment variable.
    const env = await runCli(['spec', '--json', '--cluster', cluster, ...ep], {
      env: { CLUSTERIP_HA_ETCD_USER: 'root', CLUSTERIP_HA_ETCD_PASSWORD_FILE: rootPw },
    });
    expect(env.code, env.stderr).toBe(0);
    expect(JSON.parse(env.stdout)).toMatchObject({ generation: 1 });
  });

  it('a read-only user gets "permission denied"; a wrong password gets "rejected the credentials"', async () => {
    const ro = await runCli([
      'apply',
      '-f',
      join(dir, 'changed.yaml'),
      '--etcd-user',
      'viewer',
      '--etcd-password',
      'viewpw',
      '--cluster',
      cluster,
      ...ep,
    ]);
    expect(ro.code).toBe(1);
    expect(ro.stderr).toMatch(/permission denied by etcd at .* \(writing the spec\) — grant the user's role readwrite/);
    expect(ro.stderr).not.toMatch(/cannot reach/);
    // Reading is allowed for the viewer.
    expect(
      (await runCli(['spec', '--etcd-user', 'viewer', '--etcd-password', 'viewpw', '--cluster', cluster, ...ep])).code,
    ).toBe(0);
    const bad = await runCli([
      'status',
      '--etcd-user',
      'root',
      '--etcd-password',
      'wrong-0451',
      '--cluster',
      cluster,
      ...ep,
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/rejected the credentials \(reading the cluster\): wrong user or password/);
    expect(bad.stderr).not.toMatch(/cannot reach|wrong-0451/);
  });

  it('apply of a spec without VIPs asks for --force', async () => {
    const r = await runCli(['apply', '-f', join(dir, 'empty.yaml'), ...asRoot()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/removes every VIP \(1 served now\): the cluster would stop serving — pass --force/);
    expect((await runCli(['spec', '--json', ...asRoot()])).stdout).toContain('"generation":1');
    const f = await runCli(['apply', '-f', join(dir, 'empty.yaml'), '--force', ...asRoot()]);
    expect(f.code, f.stderr).toBe(0);
    expect(f.stdout).toMatch(/applied: generation 2/);
  });

  it('status for a cluster with no spec lists the clusters that exist', async () => {
    const r = await runCli(['status', ...asRoot(), '--cluster', 'typo-cluster']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`cluster typo-cluster has no spec; clusters with a spec in this etcd: ${cluster}`);
    const s = await runCli(['spec', ...asRoot(), '--cluster', 'typo-cluster']);
    expect(s.code).toBe(1);
    expect(s.stderr).toContain(`clusters with a spec in this etcd: ${cluster}`);
  });

  it('an agent etcd will not let register is not ready; a raised lease TTL is warned about and shown', async () => {
    const start = async (id: string, user: string[]) => {
      const port = await freePort();
      const a = spawnAgent({
        nodeId: id,
        endpoints: etcd.endpoints,
        cluster,
        backendDir: join(dir, id),
        leaseTtlSeconds: 1,
        extraArgs: [...user, '--metrics-listen', `127.0.0.1:${port}`],
      });
      agents.push(a);
      return { a, readyz: `http://127.0.0.1:${port}/readyz` };
    };
    const probe = async (url: string) => {
      for (let i = 0; i < 50; i++) {
        const r = await fetch(url).catch(() => null);
        if (r) return { status: r.status, body: await r.text() };
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error(`${url} never answered`);
    };
    await writeFile(join(dir, 'cluster.yaml'), SPEC);
    expect((await runCli(['apply', '-f', join(dir, 'cluster.yaml'), '--force', ...asRoot()])).code).toBe(0);
    const ro = await start('ro1', ['--etcd-user', 'viewer', '--etcd-password', 'viewpw']);
    const rw = await start('rw1', ['--etcd-user', 'root', '--etcd-password-file', rootPw]);
    // Default etcd raises a 1 s TTL to 2 s: a warning at start, both TTLs in status.
    const warn = await rw.a.waitForLog((l) => l.event === 'ttlRaised', 20_000);
    expect(warn).toMatchObject({ level: 40, requestedTtlSeconds: 1, ttlSeconds: 2 });
    let doc;
    for (let i = 0; i < 100; i++) {
      doc = statusJsonSchema.parse(JSON.parse((await runCli(['status', '--json', '--no-settle', ...asRoot()])).stdout));
      if (doc.nodes.some((n) => n.id === 'rw1' && n.leaseTtlGranted !== null)) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(doc!.nodes.find((n) => n.id === 'rw1')).toMatchObject({ leaseTtlRequested: 1, leaseTtlGranted: 2 });
    expect((await runCli(['status', ...asRoot()])).stdout).toMatch(/\(TTL 2s, asked 1s\)/);
    let rwReady = await probe(rw.readyz);
    for (let i = 0; i < 50 && rwReady.status !== 200; i++) rwReady = await probe(rw.readyz);
    expect(rwReady.status).toBe(200);
    // The read-only agent holds a lease but etcd refuses its registration: never ready, and it says why.
    await ro.a.waitForLog((l) => l.event === 'sessionStarted', 20_000);
    const roReady = await probe(ro.readyz);
    expect(roReady.status).toBe(503);
    expect(roReady.body).toMatch(/notRegistered/);
    // It retries, and says so once per kind of error and half-minute, not at every retry.
    await new Promise((res) => setTimeout(res, 3000));
    const errs = ro.a.logs().filter((l) => l.event === 'etcdError');
    expect(errs.some((l) => /permission denied/i.test(String(l.error)))).toBe(true);
    const perKind = new Map<string, number>();
    for (const l of errs) perKind.set(`${l.etcdOp}|${l.error}`, (perKind.get(`${l.etcdOp}|${l.error}`) ?? 0) + 1);
    expect([...perKind].filter(([, n]) => n > 1)).toEqual([]);
  });

  it('a closed pipe ends every command quietly (fence --help | head)', async () => {
    for (let i = 0; i < 3; i++) {
      const child = spawn(process.execPath, [CLI_MAIN, i % 2 ? 'fence' : 'status', '--help'], {
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      // The reader goes away before the command writes: its first write meets EPIPE.
      child.stdout.destroy();
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
      expect(err).toBe('');
      expect(code).toBe(0);
    }
  });
});
