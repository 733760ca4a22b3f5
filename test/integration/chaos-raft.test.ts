// The chaos runner's raft monitor against a real 3-member etcd: killing the raft leader is seen as one term change
// naming a new leader, and a restarted follower (pre-vote) does not depose the leader.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRaftMonitor, type RaftChange } from '../../src/chaos/raftMonitor.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';

let etcd: LocalEtcd;

beforeAll(async () => {
  etcd = await startLocalEtcd({ members: 3, preferContainer: false });
}, 60_000);

afterAll(async () => {
  await etcd?.stop();
});

async function leaderIndex(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    for (const [i, m] of etcd.members.entries()) {
      const res = await fetch(`${m.clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}' }).catch(() => null);
      const body = (await res?.json().catch(() => null)) as { leader?: string; header?: { member_id?: string } };
      if (body?.leader && body.leader !== '0' && body.leader === body.header?.member_id) return i;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no etcd leader found within 10 s');
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

describe('raft monitor (3 etcd members on loopback)', () => {
  it('sees a killed leader replaced, and no election when a follower restarts', async () => {
    const seen: RaftChange[] = [];
    const mon = startRaftMonitor(
      etcd.members.map((m) => m.clientUrl),
      (c) => seen.push(c),
    );
    try {
      const first = await leaderIndex();
      await new Promise((r) => setTimeout(r, 300));
      expect(seen).toEqual([]);

      const follower = (first + 1) % 3;
      await etcd.killMember(follower);
      await new Promise((r) => setTimeout(r, 500));
      await etcd.restartMember(follower);
      // Longer than an election timeout (1 s) plus the restarted member's start-up.
      await new Promise((r) => setTimeout(r, 3000));
      expect(seen).toEqual([]);

      const killedAt = Date.now();
      await etcd.killMember(first);
      await until(() => seen.length > 0, 15_000);
      expect(seen).toHaveLength(1);
      const c = seen[0]!;
      expect(c.t).toBeGreaterThanOrEqual(killedAt);
      expect(c.term).toBeGreaterThan(0);
      const next = await leaderIndex();
      expect(next).not.toBe(first);
      await etcd.restartMember(first);
    } finally {
      mon.stop();
    }
  }, 60_000);
});
