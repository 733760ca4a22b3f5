import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/etcd/client.js';
import { keysFor, type Keys } from '../../src/etcd/keys.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { readSpec } from '../../src/etcd/spec.js';
import { specYaml } from '../integration/agent-harness.js';
import { runCli } from './cliRun.js';

// Damage in etcd the CLI must get past (issue 9): a garbage `spec` that only `apply` should have to replace, and
// more than grpc's 4 MiB answer limit under the prefix, which `status` must still read.

describe('the CLI over damaged etcd data', () => {
  let etcd: LocalEtcd;
  let dir: string;
  const client = () => createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 5000 });
  const conn = (cluster: string) => ['--etcd-endpoints', etcd.endpoints.join(','), '--cluster', cluster];

  beforeAll(async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    dir = await mkdtemp(join(tmpdir(), 'cipha-cli-damage-'));
  });
  afterAll(async () => {
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A cluster with a spec applied through the CLI; `body` gets its keys, the spec file and a client. */
  async function withCluster(name: string, body: (keys: Keys, file: string, c: Etcd3) => Promise<void>): Promise<void> {
    const cluster = `${name}${process.pid}`;
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, specYaml(8));
    const c = client();
    try {
      expect((await runCli(['apply', '-f', file, ...conn(cluster)])).code).toBe(0);
      await body(keysFor(cluster), file, c);
    } finally {
      c.close();
    }
  }

  it('apply replaces an unreadable spec (compare-and-swap on its mod revision) and says so', async () => {
    await withCluster('dmgspec', async (keys, f, c) => {
      const cluster = keys.prefix.split('/')[2]!;
      await c.put(keys.spec).value('null');
      await expect(readSpec(c, keys)).rejects.toThrow(/expected object, received null/);

      const dry = await runCli(['apply', '-f', f, '--dry-run', ...conn(cluster)]);
      expect(dry.code, dry.stderr).toBe(0);
      expect(dry.stdout).toContain('holds an unreadable value, which apply replaces');
      expect(dry.stdout).toContain('expected object, received null');
      expect(dry.stdout).toContain('dry run: nothing written');
      expect((await c.get(keys.spec).string()) ?? '').toBe('null');

      const ap = await runCli(['apply', '-f', f, ...conn(cluster)]);
      expect(ap.code, ap.stderr).toBe(0);
      expect(ap.stdout).toMatch(/applied: generation 1 at revision \d+ \(replaced an unreadable value\)/);
      const stored = await readSpec(c, keys);
      expect(stored?.spec.vips[0]).toMatchObject({ address: '10.77.0.100', buckets: 8 });

      // Garbage that still names its generation keeps the count going up.
      await c.put(keys.spec).value(JSON.stringify({ v: 1, generation: 7, spec: { vips: 'x' } }));
      const again = await runCli(['apply', '-f', f, '--expect-generation', '7', ...conn(cluster)]);
      expect(again.code, again.stderr).toBe(0);
      expect((await readSpec(c, keys))?.generation).toBe(8);
    });
  });

  it('status reads a prefix holding more than 4 MiB (paginated at one revision)', async () => {
    await withCluster('dmgbig', async (keys, _f, c) => {
      const cluster = keys.prefix.split('/')[2]!;
      // Five junk values of 1 MB each: one unpaginated range answer would be ~5 MB, over grpc's 4 MiB.
      const junk = 'x'.repeat(1_000_000);
      for (let i = 0; i < 5; i++) await c.put(`${keys.prefix}junk/${i}`).value(junk);
      const st = await runCli(['status', '--json', '--timeout', '20000', ...conn(cluster)], { timeoutMs: 30_000 });
      expect(st.stderr).not.toMatch(/larger than max/);
      expect(st.code, st.stderr).not.toBe(1);
      const report = JSON.parse(st.stdout) as { vips: { address: string }[] };
      expect(report.vips.map((v) => v.address)).toEqual(['10.77.0.100']);
    });
  });
});
