import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { formatFileBackendText } from '../../src/backends/fileFormat.js';
import { validateClusterSpec } from '../../src/config/index.js';
import { createEtcdClient } from '../../src/etcd/client.js';
import { keysFor } from '../../src/etcd/keys.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { writeSpec } from '../../src/etcd/spec.js';
import { checkTimeline } from '../../src/invariant/checker.js';
import { startObserver } from '../../src/invariant/observer.js';

// The observer against a real etcd and real backend files, with the test playing the agents: every fact it
// must catch is produced on purpose, and a calm stretch must produce nothing.

const VIP = '10.77.0.100';
const keys = keysFor('obs');
let etcd: LocalEtcd;
let client: Etcd3;
let base: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeHeld(dir: string, entries: [number, number | null][]): Promise<void> {
  const tmp = join(dir, `.${VIP}.tmp`);
  await writeFile(tmp, formatFileBackendText(new Map(entries)));
  await rename(tmp, join(dir, VIP));
}

const nodeValue = (id: string) =>
  JSON.stringify({
    v: 1,
    address: id,
    weight: 1,
    draining: false,
    version: 'test',
    startedAt: new Date().toISOString(),
  });

beforeAll(async () => {
  etcd = await startLocalEtcd({ members: 1, preferContainer: false });
  client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 5000 });
  base = await mkdtemp(join(tmpdir(), 'cipha-obs-'));
  const spec = validateClusterSpec({ vips: [{ address: VIP, interface: 'eth0', buckets: 4, seed: 1 }] }, 'test');
  await writeSpec(client, keys, spec, { expectModRevision: 'absent' });
});

afterAll(async () => {
  client?.close();
  await etcd?.stop();
  if (base) await rm(base, { recursive: true, force: true });
});

describe('invariant observer (real etcd, real files)', () => {
  it('sees convergence, expiry gaps, double owners in files, claim handoffs, and non-convergence', async () => {
    const dirA = join(base, 'a');
    const dirB = join(base, 'b');
    await mkdir(dirA);
    await mkdir(dirB);
    const obs = await startObserver({
      endpoints: etcd.endpoints,
      cluster: 'obs',
      backendDirs: { a: dirA },
      unownedBoundMs: 300,
      pollMs: 10,
    });
    try {
      obs.addNode('b', dirB);
      const lease = client.lease(30);
      await lease.put(keys.node('a')).value(nodeValue('a'));
      await lease.put(keys.node('b')).value(nodeValue('b'));
      const owners = { '1': 'a', '2': 'a', '3': 'b', '4': 'b' };
      await client.put(keys.assign(VIP)).value(JSON.stringify({ v: 1, epoch: 1, leader: 'a', owners }));
      for (const [b, o] of Object.entries(owners)) await lease.put(keys.claim(VIP, Number(b))).value(o);
      const far = Date.now() + 60_000;
      await writeHeld(dirA, [
        [1, far],
        [2, far],
      ]);
      await writeHeld(dirB, [
        [3, far],
        [4, null],
      ]);
      const until = Date.now() + 5000;
      while (!obs.convergence().converged && Date.now() < until) await sleep(20);
      expect(obs.convergence()).toEqual({ converged: true, problems: [] });
      await obs.caughtUp();
      expect(obs.violations()).toEqual([]);

      // Bucket 2 expires on a's side (no rewrite: the reader applies expiry) and b takes it 600 ms later.
      const expiry = Date.now() + 100;
      await writeHeld(dirA, [
        [1, far],
        [2, expiry],
      ]);
      await sleep(700);
      await lease.put(keys.claim(VIP, 2)).value('b'); // a handoff txn overwrites: one owner at a time
      await writeHeld(dirB, [
        [2, far],
        [3, far],
        [4, null],
      ]);
      await sleep(100);

      // Bucket 3 held by both files for a moment.
      await writeHeld(dirA, [
        [1, far],
        [3, far],
      ]);
      await sleep(100);
      await writeHeld(dirA, [[1, far]]);
      await sleep(100);

      const r = await obs.stop({ expectConverged: true, convergeTimeoutMs: 300 });
      // The recorded facts re-check offline to the same verdict (convergence aside, which reads live state).
      const offline = checkTimeline(obs.facts(), {
        boundMs: 300,
        startedAt: r.startedAt,
        endMs: r.endedAt,
        impairments: obs.impairments(),
      });
      expect(offline.violations).toEqual(r.violations.filter((v) => v.kind !== 'notConverged'));
      expect(offline.maxUnownedMs).toEqual(r.maxUnownedMs);
      const byKind = (k: string) => r.violations.filter((v) => v.kind === k);
      const gaps = byKind('unownedTooLong');
      expect(gaps).toHaveLength(1);
      const gap = gaps[0]!;
      if (gap.kind !== 'unownedTooLong') throw new Error('unreachable');
      expect(gap.bucket).toBe(2);
      // The gap starts at the recorded expiry itself, not at the next poll.
      expect(gap.fromMs).toBe(expiry);
      expect(gap.durationMs).toBeGreaterThan(500);
      expect(gap.durationMs).toBeLessThan(3000);
      expect(r.maxUnownedMs[`${VIP}#2`]).toBe(gap.durationMs);
      const doubles = byKind('doubleOwner').map((v) => v.kind === 'doubleOwner' && [v.source, v.bucket, v.nodes]);
      expect(doubles).toEqual([['backend', 3, ['a', 'b']]]);
      // The assignment still says a owns 2 while b claims it: not converged.
      const nc = byKind('notConverged');
      expect(nc.map((v) => v.kind === 'notConverged' && v.bucket)).toEqual([2]);
      await lease.revoke();
    } finally {
      await obs.stop().catch(() => undefined);
    }
  });

  it('finds nothing while ownership only moves through clean handoffs', async () => {
    const dirs = { c: join(base, 'c'), d: join(base, 'd') };
    await mkdir(dirs.c);
    await mkdir(dirs.d);
    const cl = keysFor('calm');
    const spec = validateClusterSpec({ vips: [{ address: VIP, interface: 'eth0', buckets: 2, seed: 1 }] }, 'test');
    await writeSpec(client, cl, spec, { expectModRevision: 'absent' });
    const obs = await startObserver({
      endpoints: etcd.endpoints,
      cluster: 'calm',
      backendDirs: dirs,
      unownedBoundMs: 300,
    });
    const lease = client.lease(30);
    try {
      await lease.put(cl.node('c')).value(nodeValue('c'));
      await lease.put(cl.node('d')).value(nodeValue('d'));
      let owner: 'c' | 'd' = 'c';
      // c keeps bucket 2 throughout, under its claim (a backend holder without any claim is a violation).
      await lease.put(cl.claim(VIP, 2)).value('c');
      await writeHeld(dirs.c, [
        [1, null],
        [2, null],
      ]);
      for (let i = 0; i < 10; i++) {
        const next: 'c' | 'd' = owner === 'c' ? 'd' : 'c';
        // Release (kernel, then claim) before the next owner claims and adds: the protocol's order.
        await writeHeld(dirs[owner], [[2, null]].filter(() => owner === 'c') as [number, null][]);
        await client.delete().key(cl.claim(VIP, 1));
        await lease.put(cl.claim(VIP, 1)).value(next);
        await writeHeld(
          dirs[next],
          next === 'c'
            ? [
                [1, null],
                [2, null],
              ]
            : [[1, null]],
        );
        owner = next;
        await sleep(30);
      }
      const r = await obs.stop();
      expect(r.violations).toEqual([]);
      expect(r.unownedIntervals.length).toBeGreaterThan(0);
    } finally {
      await obs.stop().catch(() => undefined);
      await lease.revoke().catch(() => undefined);
    }
  });
});
