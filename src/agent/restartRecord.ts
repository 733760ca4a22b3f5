import { open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';

// DESIGN §13, hitless restart: a planned exit (SIGHUP) leaves its lease, claims and kernel entries in place and
// writes here what the next start needs to adopt them: the lease, the fence deadline it believed (wall clock:
// the next process has another monotonic clock) and the kernel it believed. Read once: a record is consumed by
// the start that reads it, so a later crash is never mistaken for a planned restart. The marker beside it tells
// `clusterip-ha fence` (ExecStopPost) to leave the kernel alone this once.

const recordSchema = z.strictObject({
  v: z.literal(1),
  cluster: z.string(),
  nodeId: z.string(),
  leaseId: z.string().regex(/^\d{1,20}$/),
  ttlSeconds: z.number().int().positive(),
  /** Wall-clock ms (epoch) of the exiting agent's fence deadline. */
  deadlineAt: z.number().int().positive(),
  held: z.record(z.string(), z.array(z.number().int().positive())),
  /** VIP → hash identity of the rule the kernel ran (absent in records of older agents). */
  hash: z.record(z.string(), z.string().max(100)).optional(),
  writtenAt: z.number().int().positive(),
});
export type RestartRecord = z.infer<typeof recordSchema>;

export function restartRecordFile(stateDir: string, cluster: string, nodeId: string): string {
  return join(stateDir, `restart-${cluster}-${nodeId}.json`);
}

export function fenceSkipFile(stateDir: string, cluster: string, nodeId: string): string {
  return join(stateDir, `restart-${cluster}-${nodeId}.fence-skip`);
}

/** Write atomically and durably: a torn record after a power cut must read as no record. */
async function writeDurably(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export async function writeRestartRecord(stateDir: string, rec: RestartRecord): Promise<void> {
  await writeDurably(restartRecordFile(stateDir, rec.cluster, rec.nodeId), JSON.stringify(rec) + '\n');
  await writeDurably(fenceSkipFile(stateDir, rec.cluster, rec.nodeId), JSON.stringify({ deadlineAt: rec.deadlineAt }));
}

export type TakenRecord = { ok: true; record: RestartRecord } | { ok: false; why: 'none' | 'invalid'; error?: string };

/** Read and remove the record (and any fence marker left behind, which only a planned exit may use). */
export async function takeRestartRecord(stateDir: string, cluster: string, nodeId: string): Promise<TakenRecord> {
  const file = restartRecordFile(stateDir, cluster, nodeId);
  await unlink(fenceSkipFile(stateDir, cluster, nodeId)).catch(() => undefined);
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, why: 'none' };
    return { ok: false, why: 'invalid', error: (err as Error).message };
  }
  await unlink(file).catch(() => undefined);
  try {
    const record = recordSchema.parse(JSON.parse(raw));
    if (record.cluster !== cluster || record.nodeId !== nodeId)
      return { ok: false, why: 'invalid', error: `written for ${record.cluster}/${record.nodeId}` };
    return { ok: true, record };
  } catch (err) {
    return { ok: false, why: 'invalid', error: (err as Error).message.slice(0, 300) };
  }
}

/**
 * For `fence` in ExecStopPost: true (and the marker consumed) when the agent that just stopped exited for a planned
 * restart whose deadline has not passed. Every other stop fences.
 */
export async function takeFenceSkip(
  stateDir: string,
  cluster: string,
  nodeId: string,
  now = Date.now(),
): Promise<boolean> {
  const file = fenceSkipFile(stateDir, cluster, nodeId);
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch {
    return false;
  }
  await unlink(file).catch(() => undefined);
  try {
    const { deadlineAt } = z.object({ deadlineAt: z.number() }).parse(JSON.parse(raw));
    return deadlineAt > now;
  } catch {
    return false;
  }
}
