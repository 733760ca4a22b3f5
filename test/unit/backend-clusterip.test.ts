import { describe, expect, it } from 'vitest';
import { ClusteripBackend, judge } from '../../src/backends/clusterip.js';
import {
  clusteripRuleArgs,
  iptablesFlavor,
  kernelSupportsClusterip,
  parseClusteripRules,
  parseGuardedVips,
  planRule,
} from '../../src/backends/clusteripRule.js';
import { formatProcHeld, procWrite } from '../../src/backends/procFormat.js';
import type { ProcIo, ProcWriteOutcome } from '../../src/backends/procIo.js';
import type { RunResult, Runner } from '../../src/backends/run.js';
import type { ClusterSpec, VipSpec } from '../../src/config/types.js';
import { BackendError } from '../../src/errors.js';

// The kernel here is the pure model of clusterip_proc_write (procFormat.procWrite) behind an fs-like writer:
// this checks the backend's errno interpretation, not the kernel. The real module is proven in the qemu test.

const DIR = '/proc/net/ipt_CLUSTERIP';
const V = '10.77.0.100';
const vip = (buckets = 4): VipSpec => ({
  address: V,
  interface: 'eth0',
  buckets,
  hashMode: 'sourceip',
  seed: 0x5eed1234,
  clusterMac: '01:00:5e:4d:00:64',
  sticky: false,
});
const spec = (v: VipSpec): ClusterSpec => ({ vips: [v], rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 } });

class FakeKernel implements ProcIo {
  files = new Map<string, { total: number; held: Set<number> }>();
  writes: string[] = [];
  /** Force the next write's outcome (to simulate what the model cannot produce). */
  forced: ProcWriteOutcome[] = [];

  addVip(vip: string, total: number, held: number[] = []): void {
    this.files.set(`${DIR}/${vip}`, { total, held: new Set(held) });
  }
  async write(path: string, data: string): Promise<ProcWriteOutcome> {
    this.writes.push(data);
    const f = this.files.get(path);
    if (!f) return { ok: false, phase: 'open', code: 'ENOENT', message: 'no such file' };
    const forced = this.forced.shift();
    if (forced) return forced;
    const r = procWrite(f.held, f.total, data);
    if (!r.ok) return { ok: false, phase: 'write', code: r.errno, message: r.errno };
    f.held = r.held;
    return { ok: true };
  }
  async read(path: string): Promise<string | null> {
    const f = this.files.get(path);
    return f ? formatProcHeld(f.held) : null;
  }
  async list(dir: string): Promise<string[] | null> {
    return [...this.files.keys()].filter((p) => p.startsWith(`${dir}/`)).map((p) => p.slice(dir.length + 1));
  }
}

async function errorOf(p: Promise<unknown>): Promise<BackendError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  return err as BackendError;
}

const OLD_KERNEL = '6.1.0-18-amd64';

describe('clusterip backend against a model of the proc file', () => {
  it('writes one command per write, removes before adds, and confirms by reading back', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4, [2]);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    await b.apply([{ vip: V, add: [1, 3], remove: [2] }], { holdForMs: 1000 });
    expect(k.writes).toEqual(['-2\n', '+1\n', '+3\n']);
    expect(await b.read()).toEqual(new Map([[V, new Set([1, 3])]]));
  });

  it('ENOMEM on +N and ENOENT on -N are "already so" when the read-back agrees', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4, [1]);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    await b.apply([{ vip: V, add: [1], remove: [3] }]);
    expect(await b.read()).toEqual(new Map([[V, new Set([1])]]));
  });

  it('ENOMEM with a read-back that does not hold the bucket is an error (the rule has fewer buckets)', async () => {
    const k = new FakeKernel();
    k.addVip(V, 2); // the kernel's --total-nodes is 2, the spec says 4
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip(4)));
    const err = await errorOf(b.apply([{ vip: V, add: [3], remove: [] }]));
    expect(err.kind).toBe('invalid');
    expect(err.message).toMatch(/ENOMEM.*total-nodes/);
  });

  it('ENOENT on a remove while the read-back still holds the bucket is an error', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4, [2]);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    k.forced.push({ ok: false, phase: 'write', code: 'ENOENT', message: 'x' });
    const err = await errorOf(b.apply([{ vip: V, add: [], remove: [2] }]));
    expect(err.message).toMatch(/ENOENT but the read-back holds 2/);
  });

  it('EIO and EINVAL are bugs; other errnos are transient', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    for (const code of ['EIO', 'EINVAL']) {
      k.forced.push({ ok: false, phase: 'write', code, message: code });
      const err = await errorOf(b.apply([{ vip: V, add: [1], remove: [] }]));
      expect(err.kind).toBe('bug');
      expect(err.recoverable).toBe(false);
    }
    k.forced.push({ ok: false, phase: 'write', code: 'EBUSY', message: 'busy' });
    expect((await errorOf(b.apply([{ vip: V, add: [1], remove: [] }]))).kind).toBe('transient');
  });

  it('a write that succeeded but is not in the read-back is transient', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    k.forced.push({ ok: true });
    expect((await errorOf(b.apply([{ vip: V, add: [1], remove: [] }]))).kind).toBe('transient');
  });

  it('validates bucket numbers before writing anything', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    expect((await errorOf(b.apply([{ vip: V, add: [5], remove: [] }]))).kind).toBe('invalid');
    expect((await errorOf(b.apply([{ vip: '10.0.0.1; x', add: [1], remove: [] }]))).kind).toBe('invalid');
    expect(k.writes).toEqual([]);
  });

  it('explains a missing proc file, and refuses Linux 6.3+', async () => {
    const k = new FakeKernel();
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    const err = await errorOf(b.ensure(spec(vip())));
    expect(err.message).toMatch(
      /does not exist: no CLUSTERIP rule for 10.77.0.100; install the rule first \(iptables-legacy -I INPUT -d 10.77.0.100\/32 -i eth0 -j CLUSTERIP --new/,
    );
    const b2 = new ClusteripBackend({ io: k, kernelRelease: '6.18.44' });
    const err2 = await errorOf(b2.ensure(spec(vip())));
    expect(err2.kind).toBe('unsupported');
    expect(err2.message).toMatch(/CLUSTERIP was removed in Linux 6.3; use the nftables backend/);
  });

  it('clear (fence) releases every claim of every VIP in the proc dir without a spec', async () => {
    const k = new FakeKernel();
    k.addVip(V, 4, [1, 4]);
    k.addVip('10.77.0.101', 16, [16]);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.clear();
    expect(await b.read()).toEqual(
      new Map([
        [V, new Set()],
        ['10.77.0.101', new Set()],
      ]),
    );
  });

  it('a VIP the spec dropped is released by ensure, and clear after a spec still covers its proc file', async () => {
    const W = '10.77.0.101';
    const k = new FakeKernel();
    k.addVip(V, 4, [1]);
    k.addVip(W, 16, [16]);
    const b = new ClusteripBackend({ io: k, kernelRelease: OLD_KERNEL });
    await b.ensure({ ...spec(vip()), vips: [vip(), { ...vip(16), address: W }] });
    await b.ensure(spec(vip()));
    expect(k.files.get(`${DIR}/${W}`)!.held).toEqual(new Set());
    // Someone claims on the dark VIP's file: the agent's fence (clear, with a spec naming only V) drops it too.
    k.files.get(`${DIR}/${W}`)!.held.add(3);
    await b.clear();
    expect(k.files.get(`${DIR}/${W}`)!.held).toEqual(new Set());
    expect(k.files.get(`${DIR}/${V}`)!.held).toEqual(new Set());
  });

  it('judge: the pure errno interpretation', () => {
    const held = new Set([1]);
    const e = (code: string): ProcWriteOutcome => ({ ok: false, phase: 'write', code, message: code });
    expect(judge('+', 1, { ok: true }, held)).toBe('done');
    expect(judge('+', 1, e('ENOMEM'), held)).toBe('alreadySo');
    expect(judge('+', 2, e('ENOMEM'), held)).toBe('refused');
    expect(judge('-', 2, e('ENOENT'), held)).toBe('alreadySo');
    expect(judge('-', 1, e('ENOENT'), held)).toBe('refused');
    expect(judge('-', 1, e('ENOMEM'), held)).toBe('refused');
  });
});

describe('clusterip rule management', () => {
  it('builds the iptables-legacy rule', () => {
    expect(clusteripRuleArgs(vip())).toEqual(
      '-d 10.77.0.100/32 -i eth0 -j CLUSTERIP --new --hashmode sourceip --clustermac 01:00:5e:4d:00:64 --total-nodes 4 --local-node 1 --hash-init 1592594996'.split(
        ' ',
      ),
    );
  });

  it('tells the kernel and the iptables flavor apart', () => {
    expect(kernelSupportsClusterip('6.1.0-18-amd64').ok).toBe(true);
    expect(kernelSupportsClusterip('5.10.0').ok).toBe(true);
    expect(kernelSupportsClusterip('6.3.0').ok).toBe(false);
    expect(kernelSupportsClusterip('7.0.1').ok).toBe(false);
    expect(iptablesFlavor('iptables v1.8.9 (legacy)', 'iptables').ok).toBe(true);
    const nft = iptablesFlavor('iptables v1.8.9 (nf_tables)', 'iptables');
    expect(nft.ok).toBe(false);
    expect(!nft.ok && nft.message).toMatch(/iptables-nft.*cannot express/);
  });

  it('parses CLUSTERIP rules from iptables -S', () => {
    const listing = [
      '-P INPUT ACCEPT',
      '-A INPUT -d 10.77.0.100/32 -i eth0 -j CLUSTERIP --hashmode sourceip --clustermac 01:00:5E:4D:00:64 --total-nodes 4 --local-node 1 --hash-init 1',
      '-A INPUT -p tcp -j ACCEPT',
    ].join('\n');
    expect(parseClusteripRules(listing)).toEqual([
      { vip: '10.77.0.100', spec: listing.split('\n')[1]!.split(' ').slice(2) },
    ]);
  });

  it('installs the rule so that the node never holds bucket 1 through an INPUT rule', async () => {
    const k = new FakeKernel();
    const calls: string[] = [];
    const ok = (stdout = ''): RunResult => ({ exitCode: 0, stdout, stderr: '', timedOut: false, durationMs: 1 });
    const fail = (stderr: string): RunResult => ({ exitCode: 1, stdout: '', stderr, timedOut: false, durationMs: 1 });
    const run: Runner = async (_file, args) => {
      const a = args.filter((x, i) => !(x === '-w' || args[i - 1] === '-w'));
      calls.push(a.slice(0, 2).join(' '));
      if (a[0] === '--version') return ok('iptables v1.8.9 (legacy)\n');
      if (a[0] === '-C') return fail('iptables: Bad rule (does a matching rule exist in that chain?).');
      // The kernel creates the config (and claims --local-node) when any rule is checked, hooked or not.
      if (a[0] === '-A' && a[1] === 'CLUSTERIP_HA_INIT') {
        k.addVip(V, 4, [1]);
        return ok();
      }
      if (a[0] === '-I') {
        calls.push(`held at insert: ${formatProcHeld(k.files.get(`${DIR}/${V}`)!.held).trim() || 'none'}`);
        return ok();
      }
      if (a[0] === '-S') return ok('-P INPUT ACCEPT\n');
      return ok();
    };
    const b = new ClusteripBackend({ io: k, run, manageRule: true, kernelRelease: OLD_KERNEL });
    await b.ensure(spec(vip()));
    expect(calls).toEqual([
      '--version',
      '-S INPUT',
      '-N CLUSTERIP_HA_INIT',
      '-A CLUSTERIP_HA_INIT',
      '-I INPUT',
      'held at insert: none',
      '-F CLUSTERIP_HA_INIT',
      '-X CLUSTERIP_HA_INIT',
    ]);
    // Bucket 1 taken back, then the total confirmed (+4 accepted, +5 refused) before the INPUT rule exists.
    expect(k.writes).toEqual(['-1\n', '+4\n', '+5\n', '-4\n']);
  });

  it('refuses iptables-nft and a missing iptables with a clear error', async () => {
    const k = new FakeKernel();
    const nftRun: Runner = async () => ({
      exitCode: 0,
      stdout: 'iptables v1.8.9 (nf_tables)\n',
      stderr: '',
      timedOut: false,
      durationMs: 1,
    });
    const err = await errorOf(
      new ClusteripBackend({ io: k, run: nftRun, manageRule: true, kernelRelease: OLD_KERNEL }).ensure(spec(vip())),
    );
    expect(err.kind).toBe('unsupported');
    const missing: Runner = async () => ({
      exitCode: undefined,
      stdout: '',
      stderr: '',
      timedOut: false,
      spawnError: 'ENOENT',
      durationMs: 1,
    });
    const err2 = await errorOf(
      new ClusteripBackend({ io: k, run: missing, manageRule: true, kernelRelease: OLD_KERNEL }).ensure(spec(vip())),
    );
    expect(err2.message).toMatch(/cannot run iptables-legacy \(ENOENT\)/);
  });
});

describe('clusterip backend with the real filesystem', () => {
  it('reports a missing proc dir as holding nothing and clear as a no-op', async () => {
    const b = new ClusteripBackend({ procDir: '/nonexistent-cipha-be', kernelRelease: OLD_KERNEL });
    expect(await b.read()).toEqual(new Map());
    await b.clear();
  });
});

describe("clusterip rule plan (DESIGN §12: the kernel reuses a VIP's config for any new rule)", () => {
  // As iptables-legacy -S prints the backend's rule (MAC upper case).
  const listed = (v: VipSpec) =>
    `-A INPUT -d ${v.address}/32 -i ${v.interface} -j CLUSTERIP --new --hashmode ${v.hashMode} --clustermac ${v.clusterMac.toUpperCase()} --total-nodes ${v.buckets} --local-node 1 --hash-init ${v.seed}`;
  const rulesOf = (...vs: VipSpec[]) => parseClusteripRules(vs.map(listed).join('\n') + '\n');

  it('keeps a rule with the same identity, installs when there is none', () => {
    expect(planRule(vip(), rulesOf(vip()), true, false)).toEqual({ action: 'keep', reason: 'matches' });
    expect(planRule(vip(), [], false, false)).toEqual({ action: 'install', reason: 'absent' });
  });

  it('rebuilds on any change of bucket count, hash mode, seed or interface', () => {
    const changed: VipSpec[] = [
      { ...vip(), buckets: 8 },
      { ...vip(), hashMode: 'sourceip-sourceport' },
      { ...vip(), seed: 1 },
      { ...vip(), interface: 'eth1' },
    ];
    for (const c of changed)
      expect(planRule(c, rulesOf(vip()), true, false)).toEqual({ action: 'rebuild', reason: 'identityChanged' });
  });

  it('rebuilds duplicates, an orphan config and an interrupted rebuild', () => {
    expect(planRule(vip(8), rulesOf(vip(4), vip(8)), true, false)).toEqual({
      action: 'rebuild',
      reason: 'duplicateRules',
    });
    expect(planRule(vip(), [], true, false)).toEqual({ action: 'rebuild', reason: 'orphanConfig' });
    expect(planRule(vip(), rulesOf(vip()), true, true)).toEqual({ action: 'rebuild', reason: 'interrupted' });
    expect(
      parseGuardedVips(`-P INPUT ACCEPT\n-A INPUT -d ${V}/32 -j CLUSTERIP_HA_GUARD\n-A INPUT -d 10.0.0.1/32 -j DROP\n`),
    ).toEqual(new Set([V]));
  });
});
