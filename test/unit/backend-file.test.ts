import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileBackend, readFileBackendDir, readFileBackendDirSync } from '../../src/backends/file.js';
import { fenceNode } from '../../src/backends/fence.js';
import { formatFileBackendText, parseFileBackendText } from '../../src/backends/fileFormat.js';
import type { ClusterSpec, NodeConfig, VipSpec } from '../../src/config/types.js';
import { BackendError } from '../../src/errors.js';

const V1 = '10.77.0.100';
const V2 = '10.77.0.101';
function vip(address: string, buckets = 16): VipSpec {
  return {
    address,
    interface: 'eth0',
    buckets,
    hashMode: 'sourceip',
    seed: 7,
    clusterMac: '01:00:5e:4d:00:64',
    sticky: false,
  };
}
const spec = (...vips: VipSpec[]): ClusterSpec => ({ vips, rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 } });

let dir: string;
let now: number;
let b: FileBackend;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cipha-be-file-'));
  now = 1_000_000;
  b = new FileBackend({ dir, now: () => now });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function expectBackendError(p: Promise<unknown>, kind: string, pattern?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  expect((err as BackendError).kind).toBe(kind);
  if (pattern) expect((err as Error).message).toMatch(pattern);
}

describe('file backend', () => {
  it('writes the proc format plus expiries, reads them back, and drops expired buckets', async () => {
    await b.ensure(spec(vip(V1), vip(V2)));
    expect(await readFile(join(dir, V1), 'utf8')).toBe('');
    await b.apply([{ vip: V1, add: [3, 1], remove: [] }], { holdForMs: 1000 });
    await b.apply([{ vip: V1, add: [7], remove: [] }]);
    expect(await readFile(join(dir, V1), 'utf8')).toBe('1,3,7\nexpires 1=1001000,3=1001000\n');
    expect(await b.read()).toEqual(
      new Map([
        [V1, new Set([1, 3, 7])],
        [V2, new Set()],
      ]),
    );
    now += 999;
    expect((await b.read()).get(V1)).toEqual(new Set([1, 3, 7]));
    now += 1; // expiry is exclusive: at the deadline the bucket is gone
    expect((await b.read()).get(V1)).toEqual(new Set([7]));
    expect(await readFileBackendDir(dir, now)).toEqual(
      new Map([
        [V1, new Set([7])],
        [V2, new Set()],
      ]),
    );
    expect(readFileBackendDirSync(dir, now)).toEqual(
      new Map([
        [V1, new Set([7])],
        [V2, new Set()],
      ]),
    );
  });

  it('refresh extends every held bucket; an expired one stays expired', async () => {
    await b.ensure(spec(vip(V1)));
    await b.apply([{ vip: V1, add: [1], remove: [] }], { holdForMs: 100 });
    now += 50;
    await b.apply([{ vip: V1, add: [2], remove: [] }], { holdForMs: 100 });
    now += 60; // 1 expired, 2 has 40 ms left
    await b.refresh(500);
    expect((await b.read()).get(V1)).toEqual(new Set([2]));
    now += 400;
    expect((await b.read()).get(V1)).toEqual(new Set([2]));
    now += 100;
    expect((await b.read()).get(V1)).toEqual(new Set());
  });

  it('expiries count from the call, not from when a queued write runs', async () => {
    await b.ensure(spec(vip(V1)));
    const first = b.apply([{ vip: V1, add: [1], remove: [] }], { holdForMs: 100 });
    const queued = b.apply([{ vip: V1, add: [2], remove: [] }], { holdForMs: 100 });
    const refreshed = b.refresh(100);
    now += 50; // time passes while the writes wait their turn
    await Promise.all([first, queued, refreshed]);
    expect(await readFile(join(dir, V1), 'utf8')).toBe('1,2\nexpires 1=1000100,2=1000100\n');
  });

  it('adding a held bucket and removing an unheld one are "already so"; removes are confirmed', async () => {
    await b.ensure(spec(vip(V1, 4)));
    await b.apply([{ vip: V1, add: [2], remove: [] }], { holdForMs: 100 });
    await b.apply([{ vip: V1, add: [2], remove: [3] }], { holdForMs: 500 });
    now += 200; // the re-add moved the expiry
    expect((await b.read()).get(V1)).toEqual(new Set([2]));
    // A remove needs no hold time: it must work even after the fence deadline passed.
    await b.apply([{ vip: V1, add: [], remove: [2] }], { holdForMs: -5 });
    expect((await b.read()).get(V1)).toEqual(new Set());
  });

  it('refuses what the proc file would refuse, and unknown VIPs', async () => {
    await b.ensure(spec(vip(V1, 4)));
    await expectBackendError(b.apply([{ vip: V1, add: [5], remove: [] }]), 'invalid', /bucket 5/);
    await expectBackendError(b.apply([{ vip: V1, add: [0], remove: [] }]), 'invalid');
    await expectBackendError(b.apply([{ vip: V2, add: [1], remove: [] }]), 'invalid', /not set up/);
    await expectBackendError(b.apply([{ vip: V1, add: [1], remove: [1] }]), 'invalid', /both/);
    await expectBackendError(b.apply([{ vip: V1, add: [1], remove: [] }], { holdForMs: 0 }), 'invalid', /deadline/);
    await expectBackendError(b.apply([{ vip: V1, add: [1], remove: [] }], { holdForMs: 0.9 }), 'invalid');
    await writeFile(join(dir, V1), '1,x\n');
    await expectBackendError(b.read(), 'bug', /proc format/);
  });

  it('ensure keeps existing state, removes VIPs no longer in the spec; clear empties every VIP', async () => {
    await b.ensure(spec(vip(V1), vip(V2)));
    await b.apply([
      { vip: V1, add: [1], remove: [] },
      { vip: V2, add: [2], remove: [] },
    ]);
    const b2 = new FileBackend({ dir, now: () => now });
    await b2.ensure(spec(vip(V1)));
    expect(await b2.read()).toEqual(new Map([[V1, new Set([1])]]));
    expect((await readdir(dir)).sort()).toEqual([V1]);
    await b2.clear();
    expect(await readFile(join(dir, V1), 'utf8')).toBe('');
  });

  it('fenceNode clears a file backend without a spec and reports what it removed', async () => {
    await b.ensure(spec(vip(V1), vip(V2)));
    await b.apply([{ vip: V1, add: [1, 2], remove: [] }]);
    const cfg = { nodeId: 'n1', backend: { kind: 'file', dir }, stateDir: dir } as unknown as NodeConfig;
    const r = await fenceNode(cfg);
    expect(r.removed).toEqual(new Map([[V1, new Set([1, 2])]]));
    expect(r.remaining).toEqual(new Map());
    expect(await readFileBackendDir(dir, Date.now())).toEqual(
      new Map([
        [V1, new Set()],
        [V2, new Set()],
      ]),
    );
  });

  it('parser rejects malformed files and round-trips good ones', () => {
    const entries = new Map<number, number | null>([
      [1, 5],
      [2, null],
    ]);
    const text = formatFileBackendText(entries);
    expect(text).toBe('1,2\nexpires 1=5\n');
    const p = parseFileBackendText(text);
    expect(p.ok && p.entries).toEqual(entries);
    for (const bad of ['1,2', '1\nexpires 2=5\n', '1\nexpires 1=x\n', '1\n2\n3\n', '1\nexp 1=2\n']) {
      expect(parseFileBackendText(bad).ok).toBe(false);
    }
  });

  it('a reader in another process never sees a torn file while the backend rewrites it', async () => {
    const real = new FileBackend({ dir });
    await real.ensure(spec(vip(V1, 4096)));
    // The reader parses the file in a tight loop and counts any read that is not a well-formed file.
    const reader = `
      const fs = require('node:fs');
      const path = process.argv[1];
      let reads = 0, bad = 0, sizes = new Set();
      const end = Date.now() + 60000;
      while (Date.now() < end && !fs.existsSync(path + '.stop')) {
        let t;
        try { t = fs.readFileSync(path, 'utf8'); } catch (e) { bad++; continue; }
        reads++;
        const lines = t.split('\\n');
        const ok = t === '' || (t.endsWith('\\n') && /^[0-9]+(,[0-9]+)*$/.test(lines[0]) && lines.length <= 3 &&
          (lines.length === 2 || /^expires [0-9]+=[0-9]+(,[0-9]+=[0-9]+)*$/.test(lines[1])));
        if (!ok) bad++;
        sizes.add(lines[0].split(',').length);
      }
      process.stdout.write(JSON.stringify({ reads, bad, distinct: sizes.size }));
    `;
    const child = spawn(process.execPath, ['-e', reader, join(dir, V1)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      // Large files (up to 4096 buckets, ~60 KB) make a torn read likely if writes were not atomic.
      for (let i = 0; i < 150; i++) {
        const n = 1 + ((i * 997) % 4096);
        const add = Array.from({ length: n }, (_, k) => k + 1);
        await real.apply([{ vip: V1, add, remove: [] }], { holdForMs: 60_000 });
        await real.clear();
      }
    } finally {
      await writeFile(join(dir, `${V1}.stop`), '');
    }
    expect(await exited).toBe(0);
    const r = JSON.parse(out) as { reads: number; bad: number; distinct: number };
    expect(r.bad).toBe(0);
    expect(r.reads).toBeGreaterThan(50);
    expect(r.distinct).toBeGreaterThan(2); // it really saw the file change
    // No temp files left behind.
    expect((await readdir(dir)).filter((n) => n.startsWith('.'))).toEqual([]);
  });
});
