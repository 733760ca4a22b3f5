import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/etcd/client.js';
import { keysFor } from '../../src/etcd/keys.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { readSpec } from '../../src/etcd/spec.js';
import { runCli } from './cliRun.js';

// `apply` against a real etcd: dry run, write, no-op, invalid input (nothing written), conflicting version.

const VALID = `vips:
  - address: 10.77.0.100
    interface: eth0
    buckets: 8
    seed: 0x5eed1234
rebalance:
  joinMovesPerInterval: 1
  intervalMs: 1000
`;

describe('clusterip-ha apply', () => {
  let etcd: LocalEtcd;
  let dir: string;
  const cluster = `apply${process.pid}`;
  const keys = keysFor(cluster);
  let conn: string[];
  const client = () => createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });

  beforeAll(async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    dir = await mkdtemp(join(tmpdir(), 'cipha-cli-apply-'));
    conn = ['--etcd-endpoints', etcd.endpoints.join(','), '--cluster', cluster];
  });
  afterAll(async () => {
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('dry run shows the diff and writes nothing; apply writes generation 1; re-apply is a no-op', async () => {
    const f = join(dir, 'valid.yaml');
    await writeFile(f, VALID);
    const dry = await runCli(['apply', '-f', f, '--dry-run', ...conn]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('+ vip 10.77.0.100 on eth0: 8 buckets, sourceip, seed 0x5eed1234');
    expect(dry.stdout).toContain('dry run: nothing written');
    const c = client();
    try {
      expect(await readSpec(c, keys)).toBeNull();
      const ap = await runCli(['apply', '-f', f, ...conn]);
      expect(ap.code).toBe(0);
      expect(ap.stdout).toMatch(/applied: generation 1 at revision \d+/);
      const stored = await readSpec(c, keys);
      expect(stored?.generation).toBe(1);
      expect(stored?.spec.vips[0]).toMatchObject({
        address: '10.77.0.100',
        buckets: 8,
        seed: 0x5eed1234,
        hashMode: 'sourceip',
      });
      const again = await runCli(['apply', '-f', f, ...conn]);
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/no change: .* \(generation 1\)/);
      expect((await readSpec(c, keys))?.modRevision).toBe(stored?.modRevision);

      // A change shows as a diff and flags the re-hash; stdin works too.
      const changed = VALID.replace('buckets: 8', 'buckets: 12');
      const ap2 = await runCli(['apply', '-f', '-', ...conn], { input: changed });
      expect(ap2.code).toBe(0);
      expect(ap2.stdout).toContain('~ vip 10.77.0.100: buckets 8 -> 12  (re-hashes every client of this VIP)');
      expect((await readSpec(c, keys))?.generation).toBe(2);
    } finally {
      c.close();
    }
  });

  it('invalid spec: exit 2, every problem with file:line and field, nothing written', async () => {
    const f = join(dir, 'bad.yaml');
    await writeFile(
      f,
      `vips:
  - address: 10.77.0.300
    interface: eth0
    buckets: 8
    seed: 0x5eed1234
  - address: 10.77.0.101
    interface: eth0
    buckets: 40
    seed: 1
    colour: blue
`,
    );
    const c = client();
    try {
      const before = await readSpec(c, keys);
      const r = await runCli(['apply', '-f', f, '--backend', 'clusterip', ...conn]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`${f}:2: vips[0].address`);
      expect(r.stderr).toMatch(new RegExp(`${f}:8: vips\\[1\\]\\.buckets: 40 exceeds 16`));
      expect(r.stderr).toMatch(/colour/);
      expect(r.stdout).toBe('');
      expect((await readSpec(c, keys))?.modRevision).toBe(before?.modRevision);
    } finally {
      c.close();
    }
  });

  it('conflicting version: exit 1, says so, nothing written', async () => {
    const f = join(dir, 'v3.yaml');
    await writeFile(f, VALID.replace('buckets: 8', 'buckets: 16'));
    const c = client();
    try {
      const before = await readSpec(c, keys);
      expect(before?.generation).toBe(2);
      const r = await runCli(['apply', '-f', f, '--expect-generation', '1', ...conn]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/etcd holds spec generation 2, not 1 .*re-run/);
      expect((await readSpec(c, keys))?.modRevision).toBe(before?.modRevision);
      const ok = await runCli(['apply', '-f', f, '--expect-generation', '2', ...conn]);
      expect(ok.code).toBe(0);
      expect((await readSpec(c, keys))?.generation).toBe(3);
    } finally {
      c.close();
    }
  });
});
