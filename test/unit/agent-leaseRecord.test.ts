import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LeaseRecord } from '../../src/agent/leaseRecord.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('LeaseRecord (DESIGN §13)', () => {
  it('remembers granted leases across loads, per cluster and node, newest 16', async () => {
    dir = await mkdtemp(join(tmpdir(), 'cipha-lease-'));
    const bad: string[] = [];
    const r = await LeaseRecord.load(dir, 'c1', 'n1', (_f, e) => bad.push(e));
    expect(r.has('7')).toBe(false);
    for (let i = 1; i <= 20; i++) await r.add(String(i));
    const again = await LeaseRecord.load(dir, 'c1', 'n1', (_f, e) => bad.push(e));
    expect(again.has('20')).toBe(true);
    expect(again.has('5')).toBe(true);
    expect(again.has('4')).toBe(false); // only the newest 16 are kept
    // Another node or cluster on the same machine has its own record.
    expect((await LeaseRecord.load(dir, 'c1', 'n2', () => undefined)).has('20')).toBe(false);
    expect((await LeaseRecord.load(dir, 'c2', 'n1', () => undefined)).has('20')).toBe(false);
    expect(bad).toEqual([]);
  });

  it('reports a damaged record with its file and treats it as empty', async () => {
    dir = await mkdtemp(join(tmpdir(), 'cipha-lease-'));
    const file = join(dir, 'lease-c1-n1.json');
    await writeFile(file, '{"v":1,"cluster":"c1"');
    const bad: { file: string; error: string }[] = [];
    const r = await LeaseRecord.load(dir, 'c1', 'n1', (f, error) => bad.push({ file: f, error }));
    expect(bad).toHaveLength(1);
    expect(bad[0]!.file).toBe(file);
    expect(r.has('1')).toBe(false);
    await r.add('42');
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ v: 1, cluster: 'c1', nodeId: 'n1', leases: ['42'] });
  });
});
