import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcdInNs, type NsEtcd } from '../../src/netns/etcdNs.js';
import { CLI_MAIN, runCli } from '../e2e/cliRun.js';
import { statusJsonSchema } from '../e2e/statusSchema.js';
import { netnsCapability, requireCapability } from '../helpers/privileged.js';

// deploy/systemd/clusterip-ha.service's command lines run with exactly the unit's capabilities (setpriv: the
// bounding set, inheritable and ambient sets it names, no_new_privs) in a network namespace of the test's own:
// the agent (ExecStart) with the nftables backend serves a VIP, `fence` (ExecStopPost) empties the kernel, and
// iptables-legacy (the clusterip backend's rule) can read its tables — which CAP_NET_ADMIN alone cannot.

const sh = promisify(execFile);
const UNIT = fileURLToPath(new URL('../../deploy/systemd/clusterip-ha.service', import.meta.url));
const NS = `cipha-unit-${process.pid}`;
const VIP = '10.77.0.130';
const enabled = requireCapability('systemd unit capabilities', netnsCapability());

/** `CAP_NET_ADMIN CAP_NET_RAW` of a unit directive → setpriv's `-all,+net_admin,+net_raw`. */
function capsOf(unit: string, directive: string): string[] {
  const line = new RegExp(`^${directive}=(.*)$`, 'm').exec(unit)?.[1];
  if (!line) throw new Error(`${directive} missing from the unit`);
  return line.trim().split(/\s+/);
}
const setprivCaps = (caps: string[]) =>
  ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');

/** argv prefix: in the namespace, with exactly `caps` (as systemd gives a root service with them). */
function withCaps(caps: string[]): string[] {
  const set = setprivCaps(caps);
  return [
    'netns',
    'exec',
    NS,
    'setpriv',
    '--bounding-set',
    set,
    '--inh-caps',
    set,
    '--ambient-caps',
    set,
    '--no-new-privs',
    '--',
  ];
}

describe.runIf(enabled)('the systemd unit, run with its capabilities', () => {
  let unitCaps: string[];
  let dir: string;
  let etcd: NsEtcd | undefined;
  let agent: ChildProcess | undefined;
  let agentErr = '';
  beforeAll(async () => {
    const unit = await readFile(UNIT, 'utf8');
    unitCaps = capsOf(unit, 'CapabilityBoundingSet');
    expect(capsOf(unit, 'AmbientCapabilities')).toEqual(unitCaps);
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/clusterip-ha agent$/m);
    expect(unit).toMatch(/^ExecStopPost=\/usr\/bin\/clusterip-ha fence$/m);
    dir = await mkdtemp(join(tmpdir(), 'cipha-unit-'));
    await sh('ip', ['netns', 'add', NS]);
    await sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    await sh('ip', ['-n', NS, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1']);
    await sh('ip', ['-n', NS, 'link', 'set', 'eth0', 'up']);
    etcd = await startEtcdInNs({ ns: NS, address: '127.0.0.1', port: 2379 });
  });
  afterAll(async () => {
    agent?.kill('SIGKILL');
    await etcd?.stop().catch(() => undefined);
    await sh('ip', ['netns', 'del', NS]).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('iptables-legacy reads its tables with the unit capabilities, not with CAP_NET_ADMIN alone', async () => {
    const r = await sh('ip', [...withCaps(unitCaps), 'iptables-legacy', '-t', 'mangle', '-S'], { timeout: 30_000 });
    expect(r.stdout).toContain('-P PREROUTING ACCEPT');
    await expect(
      sh('ip', [...withCaps(['CAP_NET_ADMIN']), 'iptables-legacy', '-t', 'mangle', '-S'], { timeout: 30_000 }),
    ).rejects.toMatchObject({ stderr: expect.stringMatching(/Permission denied/) });
  });

  it('ExecStart (nftables backend) serves the VIP; ExecStopPost fences the kernel', async () => {
    const cluster = 'unit';
    const conn = ['--etcd-endpoints', etcd!.harnessEndpoint, '--cluster', cluster];
    await writeFile(
      join(dir, 'cluster.yaml'),
      `vips:\n  - address: ${VIP}\n    interface: eth0\n    buckets: 4\n    seed: 0x5eed\n`,
    );
    expect((await runCli(['apply', '-f', join(dir, 'cluster.yaml'), ...conn])).code).toBe(0);
    const config = join(dir, 'node.yaml');
    await writeFile(
      config,
      `nodeId: u1\ncluster: ${cluster}\netcd:\n  endpoints: [http://127.0.0.1:2379]\nbackend:\n  kind: nftables\nleaseTtlSeconds: 2\nmetricsListen: off\nstateDir: ${join(dir, 'state')}\n`,
    );
    // The unit's environment: the config file named by CLUSTERIP_HA_CONFIG.
    const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CLUSTERIP_HA_CONFIG: config };
    agent = spawn('ip', [...withCaps(unitCaps), process.execPath, CLI_MAIN, 'agent'], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    agent.stderr!.on('data', (d: Buffer) => (agentErr += d.toString()));
    let owned = 0;
    for (let i = 0; i < 150 && owned < 4; i++) {
      const r = await runCli(['status', '--json', '--no-settle', ...conn]);
      if (r.code === 0) {
        const doc = statusJsonSchema.parse(JSON.parse(r.stdout));
        owned = doc.vips[0]?.buckets.filter((b) => b.owner === 'u1' && b.backend === 'u1').length ?? 0;
      }
      if (owned < 4) await new Promise((res) => setTimeout(res, 200));
    }
    expect(owned, agentErr.slice(-3000)).toBe(4);
    const table = (await sh('ip', ['netns', 'exec', NS, 'nft', '-j', 'list', 'ruleset'])).stdout;
    expect(table).toContain(VIP);
    expect(agentErr).not.toMatch(/Operation not permitted|Permission denied|EPERM/);

    // The agent crashes (SIGKILL: no drain, no release); systemd then runs ExecStopPost with the same capabilities.
    agent.kill('SIGKILL');
    await new Promise((res) => agent!.on('close', res));
    const fence = await sh('ip', [...withCaps(unitCaps), process.execPath, CLI_MAIN, 'fence', '--json'], {
      env,
      timeout: 30_000,
    });
    expect(JSON.parse(fence.stdout)).toEqual({ backend: 'nftables', removed: { [VIP]: [1, 2, 3, 4] }, remaining: {} });
    const after = JSON.parse((await sh('ip', ['netns', 'exec', NS, 'nft', '-j', 'list', 'sets'])).stdout) as {
      nftables: { set?: { elem?: unknown[] } }[];
    };
    expect(after.nftables.flatMap((x) => x.set?.elem ?? [])).toEqual([]);
  });
});
