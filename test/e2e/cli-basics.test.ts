import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf } from '../../src/hash/index.js';
import type { VipSpec } from '../../src/config/types.js';
import { writeRestartRecord } from '../../src/agent/restartRecord.js';
import { restartRecord } from '../helpers/fixtures.js';
import { runCli } from './cliRun.js';

// The CLI's contract without a cluster: help, exit codes, offline whois, and etcd that does not answer.

const COMMANDS = ['agent', 'fence', 'apply', 'status', 'drain', 'undrain', 'whois', 'demo', 'chaos', 'version'];

describe('clusterip-ha without etcd', () => {
  it.each(COMMANDS)('%s --help prints usage and examples, exit 0', async (cmd) => {
    const r = await runCli([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: clusterip-ha ${cmd}`));
    expect(r.stdout).toContain('Examples:');
  });

  it('top-level help lists every command and the exit codes', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^\\s+${c}\\b`, 'm'));
    expect(r.stdout).toContain('3 unhealthy');
  });

  it('version prints the package version', async () => {
    const r = await runCli(['version', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
  });

  it.each([
    [['--no-such-flag'], /unknown option '--no-such-flag'/],
    [['status', '--bogus'], /unknown option '--bogus'.*clusterip-ha status --help/],
    [['stauts'], /unknown command 'stauts'.*Did you mean status/],
    [['drain'], /missing required argument 'node'/],
    [['apply'], /required option '-f, --file <file>' not specified/],
    [['status', '--timeout', 'soon'], /not a positive number of milliseconds/],
    [['whois', 'not-an-ip', '--buckets', '4', '--seed', '1'], /"not-an-ip" is not an IPv4 or IPv6 address/],
    [['whois', '10.0.0.1', '--buckets', '4'], /needs both --buckets and --seed/],
    [['status', '--watch', '--check'], /cannot be combined/],
    [['chaos', '--duration', '5', '--faults', '3'], /--duration or --faults, not both/],
    [['agent', '--lease-ttl', 'abc', '--backend', 'file', '--backend-dir', '/tmp/x'], /lease-ttl/],
    [[], /Usage: clusterip-ha/],
  ])('bad usage %j exits 2 with one line saying what to do', async (args, msg) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).toBe('');
    if (args.length > 0) expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('whois answers offline with the kernel hash alone', async () => {
    const vip: VipSpec = {
      address: '10.77.0.100',
      interface: 'eth0',
      buckets: 16,
      hashMode: 'sourceip-sourceport',
      seed: 0x5eed1234,
      clusterMac: '01:00:5e:4d:00:64',
      sticky: false,
    };
    for (const [client, sport] of [
      ['192.0.2.10', 51000],
      ['198.51.100.7', 40001],
      ['203.0.113.200', 1024],
    ] as const) {
      const nft = await runCli([
        'whois',
        client,
        '--buckets',
        '16',
        '--seed',
        '0x5eed1234',
        '--backend',
        'nftables',
        '--json',
      ]);
      expect(nft.code).toBe(0);
      expect(JSON.parse(nft.stdout)).toEqual({
        bucket: bucketOf({ ...vip, hashMode: 'sourceip' }, 'nftables', { saddr: client }),
      });
      const nftPorts = await runCli([
        'whois',
        client,
        '--sport',
        String(sport),
        '--buckets',
        '16',
        '--seed',
        '0x5eed1234',
        '--hash-mode',
        'sourceip-sourceport',
        '--backend',
        'nftables',
        '--json',
      ]);
      expect(nftPorts.code).toBe(0);
      expect(JSON.parse(nftPorts.stdout)).toEqual({ bucket: bucketOf(vip, 'nftables', { saddr: client, sport }) });
      const cip = await runCli([
        'whois',
        client,
        '--sport',
        String(sport),
        '--buckets',
        '16',
        '--seed',
        String(0x5eed1234),
        '--hash-mode',
        'sourceip-sourceport',
        '--backend',
        'clusterip',
        '--json',
      ]);
      expect(cip.code).toBe(0);
      expect(JSON.parse(cip.stdout)).toEqual({ bucket: bucketOf(vip, 'clusterip', { saddr: client, sport }) });
    }
    const missing = await runCli([
      'whois',
      '192.0.2.1',
      '--buckets',
      '4',
      '--seed',
      '1',
      '--hash-mode',
      'sourceip-sourceport',
      '--backend',
      'clusterip',
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/needs --sport/);
  });
});

describe('clusterip-ha fence', () => {
  it('empties the node backend without etcd and says what it removed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cipha-cli-fence-'));
    try {
      await writeFile(join(dir, '10.77.0.100'), '1,3,4\n');
      await writeFile(join(dir, '10.77.0.101'), '2\n');
      // No etcd is running at the default endpoint's port for this to contact; fence must not need it.
      const r = await runCli(['fence', '--backend', 'file', '--backend-dir', dir, '--node-id', 'n1', '--json'], {
        env: { CLUSTERIP_HA_ETCD_ENDPOINTS: 'http://127.0.0.1:1' },
      });
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({
        backend: 'file',
        removed: { '10.77.0.100': [1, 3, 4], '10.77.0.101': [2] },
        remaining: {},
      });
      expect(await readFile(join(dir, '10.77.0.100'), 'utf8')).toBe('');
      const again = await runCli(['fence', '--backend', 'file', '--backend-dir', dir, '--node-id', 'n1']);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain('removed nothing');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('after a planned restart it leaves the kernel alone once, then fences again', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cipha-cli-fence-'));
    try {
      const state = join(dir, 'state');
      await mkdir(state);
      await writeFile(join(dir, '10.77.0.100'), '1,3\n');
      // What an agent leaves on SIGHUP (src/agent/restartRecord.ts).
      await writeRestartRecord(state, restartRecord({ cluster: 'default', deadlineAt: Date.now() + 60_000 }));
      const args = ['fence', '--backend', 'file', '--backend-dir', dir, '--state-dir', state, '--node-id', 'n1'];
      const skipped = await runCli(args);
      expect(skipped.code, skipped.stderr).toBe(0);
      expect(skipped.stdout).toContain('planned restart');
      expect(await readFile(join(dir, '10.77.0.100'), 'utf8')).toBe('1,3\n');
      const fenced = await runCli(args);
      expect(fenced.stdout).toContain('removed 10.77.0.100 1,3');
      expect(await readFile(join(dir, '10.77.0.100'), 'utf8')).toBe('');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('unreachable etcd', () => {
  let silent: Server;
  let silentPort = 0;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    // Accepts connections and never answers: the hang a firewall or a wedged etcd produces.
    silent = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentPort = (silent.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
  });

  it('refused connection: exit 1, one clear line, well within the deadline', async () => {
    const r = await runCli(['status', '--etcd-endpoints', 'http://127.0.0.1:1', '--timeout', '3000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^clusterip-ha: cannot reach etcd at http:\/\/127\.0\.0\.1:1 .*connection refused — check --etcd-endpoints/,
    );
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // Deadline 3 s; node start-up is included, generously bounded on this shared machine.
    expect(r.ms).toBeLessThan(3000 + 10_000);
  });

  it.each([['status'], ['apply', '-f', 'deploy/examples/cluster.yaml'], ['drain', 'n1'], ['whois', '192.0.2.1']])(
    '%s against an etcd that never answers gives up at the deadline',
    async (...args) => {
      const r = await runCli([...args, '--etcd-endpoints', `http://127.0.0.1:${silentPort}`, '--timeout', '2000']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/cannot reach etcd|no answer from etcd/);
      expect(r.stderr).toContain(`127.0.0.1:${silentPort}`);
      expect(r.stderr).toMatch(/check --etcd-endpoints/);
      expect(r.ms).toBeLessThan(2000 + 10_000);
    },
  );
});
