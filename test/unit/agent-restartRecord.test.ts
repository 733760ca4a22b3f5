import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  fenceSkipFile,
  restartRecordFile,
  takeFenceSkip,
  takeRestartRecord,
  writeRestartRecord,
  type RestartRecord,
} from '../../src/agent/restartRecord.js';
import { restartRecord } from '../helpers/fixtures.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cipha-restart-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const rec = (over: Partial<RestartRecord> = {}): RestartRecord => restartRecord({ cluster: 'c', ...over });

describe('restart record (DESIGN §13)', () => {
  it('is read once: the next start consumes it, with the fence marker', async () => {
    await writeRestartRecord(dir, rec());
    expect((await readdir(dir)).sort()).toEqual(['restart-c-n1.fence-skip', 'restart-c-n1.json']);
    const r = await takeRestartRecord(dir, 'c', 'n1');
    expect(r.ok && r.record.leaseId).toBe('12345');
    expect(await readdir(dir)).toEqual([]);
    expect(await takeRestartRecord(dir, 'c', 'n1')).toEqual({ ok: false, why: 'none' });
  });

  it('carries the rules the kernel ran (an older record without them still reads)', async () => {
    await writeRestartRecord(dir, rec({ hash: { '10.0.0.1': '8/sourceip/0x00000001' } }));
    const r = await takeRestartRecord(dir, 'c', 'n1');
    expect(r.ok && r.record.hash).toEqual({ '10.0.0.1': '8/sourceip/0x00000001' });
    await writeRestartRecord(dir, rec());
    const old = await takeRestartRecord(dir, 'c', 'n1');
    expect(old.ok && old.record.hash).toBeUndefined();
  });

  it('a torn or foreign record is no record', async () => {
    await writeFile(restartRecordFile(dir, 'c', 'n1'), '{"v":1,"cluster":"c"');
    expect(await takeRestartRecord(dir, 'c', 'n1')).toMatchObject({ ok: false, why: 'invalid' });
    await writeRestartRecord(dir, rec({ nodeId: 'n2' }));
    await writeFile(restartRecordFile(dir, 'c', 'n1'), JSON.stringify(rec({ nodeId: 'n2' })));
    expect(await takeRestartRecord(dir, 'c', 'n1')).toMatchObject({ ok: false, why: 'invalid' });
  });

  it('fence skips once, and only before the recorded deadline', async () => {
    await writeRestartRecord(dir, rec());
    expect(await takeFenceSkip(dir, 'c', 'n1')).toBe(true);
    expect(await takeFenceSkip(dir, 'c', 'n1')).toBe(false); // a later crash fences
    await writeRestartRecord(dir, rec({ deadlineAt: Date.now() - 1 }));
    expect(await takeFenceSkip(dir, 'c', 'n1')).toBe(false); // nobody can adopt in time: fence
    await writeFile(fenceSkipFile(dir, 'c', 'n1'), 'garbage');
    expect(await takeFenceSkip(dir, 'c', 'n1')).toBe(false);
  });
});
