import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { ClusterSpec, VipSpec } from '../config/types.js';
import { agentMainPath } from '../localcluster/agentProcess.js';
import { specChangeOf, subPick, type SpecChange } from './schedule.js';

// Operator actions of the chaos faults that go through the real tools: `clusterip-ha apply` (the CLI's own
// validation, diff and compare-and-swap) and the etcd members' status (which member leads raft).

export class ChaosOpError extends Error {
  override readonly name = 'ChaosOpError';
}

/** `clusterip-ha apply -f <spec>` as an operator runs it; rejects with its output when it exits non-zero. */
export async function applyWithCli(endpoints: readonly string[], cluster: string, spec: ClusterSpec): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cipha-apply-'));
  try {
    const file = join(dir, 'spec.yaml');
    await writeFile(file, stringify(spec));
    const args = [agentMainPath(), 'apply', '-f', file, '--etcd-endpoints', endpoints.join(','), '--cluster', cluster];
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, args, { timeout: 30_000 }, (err, stdout, stderr) => {
        if (err) reject(new ChaosOpError(`apply: ${err.message.split('\n')[0]} ${stderr.trim().slice(-300)}`));
        else resolve();
      });
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The second test VIP a spec change adds (and the revert removes). */
export const EXTRA_VIP = '10.77.0.101';

/** Pure: the spec a `specChange` fault applies, from the current one and the fault's pick. */
export function changedSpec(spec: ClusterSpec, pick: number): { change: SpecChange; spec: ClusterSpec } {
  const change = specChangeOf(pick);
  const [first, ...rest] = spec.vips;
  if (!first) return { change, spec };
  let vips: VipSpec[];
  switch (change) {
    case 'seed':
      vips = [{ ...first, seed: (first.seed ^ (1 + Math.floor(subPick(pick, 5) * 0xfffffffe))) >>> 0 }, ...rest];
      break;
    case 'hashMode':
      vips = [{ ...first, hashMode: first.hashMode === 'sourceip' ? 'sourceip-sourceport' : 'sourceip' }, ...rest];
      break;
    case 'buckets':
      vips = [{ ...first, buckets: first.buckets > 8 ? first.buckets - 8 : first.buckets + 8 }, ...rest];
      break;
    case 'addVip':
      vips = spec.vips.some((v) => v.address === EXTRA_VIP)
        ? spec.vips.filter((v) => v.address !== EXTRA_VIP)
        : [...spec.vips, { ...first, address: EXTRA_VIP, clusterMac: '01:00:5e:4d:00:65', buckets: 8 }];
      break;
  }
  return { change, spec: { ...spec, vips } };
}

interface MemberStatus {
  header?: { member_id?: string };
  leader?: string;
}

/** Index of the member that leads raft now, by asking every member (null when none answers with a leader). */
export async function etcdLeaderIndex(clientUrls: readonly string[], timeoutMs = 1000): Promise<number | null> {
  const answers = await Promise.all(
    clientUrls.map(async (url) => {
      try {
        const res = await fetch(`${url}/v3/maintenance/status`, {
          method: 'POST',
          body: '{}',
          signal: AbortSignal.timeout(timeoutMs),
        });
        return res.ok ? ((await res.json()) as MemberStatus) : null;
      } catch {
        return null;
      }
    }),
  );
  const leader = answers.find((a) => a?.leader && a.leader !== '0')?.leader;
  if (!leader) return null;
  const i = answers.findIndex((a) => a?.header?.member_id === leader);
  return i >= 0 ? i : null;
}
