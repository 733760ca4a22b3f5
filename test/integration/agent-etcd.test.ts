// Issue 3: etcd-side faults. A 3-member etcd losing one member moves nothing and fences nobody; a leader whose
// campaign key was deleted from outside cannot write assignments; garbage under every key family crashes nobody.
import { afterEach, describe, expect, it } from 'vitest';
import { Election } from '../../src/agent/election.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { heldLease, type LeaseScope } from '../../src/agent/leaseScope.js';
import { createEtcdClient } from '../../src/etcd/client.js';
import { keysFor } from '../../src/etcd/keys.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/etcd/localEtcd.js';
import { loadClusterState } from '../../src/etcd/store.js';
import { NotLeaderError } from '../../src/errors.js';
import { VIP, events, sleep, startHarness, type Harness } from './agent-harness.js';

const TTL = 2;
let h: Harness | undefined;
let etcd: LocalEtcd | undefined;

afterEach(async () => {
  await h?.stop();
  h = undefined;
  await etcd?.stop();
  etcd = undefined;
});

describe('agent against etcd faults', () => {
  // etcd serves lease keepalives only through its raft leader. Losing a follower costs nothing; losing the
  // leader stalls keepalives for one etcd election plus the followers learning the new leader: measured up to
  // ~1.7 s here even with --election-timeout 500 on 2 loaded cores. A 2 s TTL leaves 1.5 s before the fence
  // (minus up to one keepalive interval), so the leader case runs with etcd's fast election and a 3 s TTL.
  for (const which of ['follower', 'leader'] as const) {
    it(`3-member etcd, the ${which} member killed: no bucket moves, no fence`, async () => {
      const ttl = which === 'leader' ? 3 : TTL;
      h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl, etcdMembers: 3, fastElection: which === 'leader' });
      await h.waitConverged(30_000);
      const before = await h.claims();
      const victim = await etcdMember(h.etcd.endpoints, which);
      await h.etcd.killMember(victim);
      // Several TTLs: any lost keepalive path would have fenced by now.
      await sleep(ttl * 1000 * 3);
      const after = await h.claims();
      expect(after).toEqual(before);
      for (const id of ['n1', 'n2', 'n3']) {
        expect(events(h.agent(id), 'fenced'), `${id} fenced`).toEqual([]);
        expect(events(h.agent(id), 'leaseLost'), `${id} lost its lease`).toEqual([]);
      }
      await h.waitConverged(10_000);
      expect((await h.observer.stop()).violations).toEqual([]);
    });
  }

  it("campaign key deleted from outside: the old leader's next assignment write fails", async () => {
    etcd = await startLocalEtcd({ preferContainer: false });
    const client = createEtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
    try {
      const keys = keysFor(`elect${process.pid}`);
      const seen: AgentEvent[] = [];
      const lease = await client.leaseClient.leaseGrant({ TTL: 5 });
      // The election as the agent builds it, under a session that holds this lease.
      const session: LeaseScope = {
        lease: () => heldLease(client, lease.ID),
        isLive: () => true,
        isFenced: () => false,
        msToDeadline: () => 5000,
      };
      const e = new Election({ etcd: client, keys, nodeId: 'n1', session, emit: (ev) => seen.push(ev) });
      await e.campaign();
      e.evaluate(await loadClusterState(client, keys));
      expect(e.isLeader).toBe(true);
      const put = () => client.put(keys.assign(VIP)).value('{"v":1,"epoch":1,"leader":"n1","owners":{}}');
      await e.fencedTxn([put()]);
      // Someone deletes the campaign key; this leader has not looked at the picture since.
      await client.delete().key(e.campaignKey!.key);
      await expect(e.fencedTxn([put()])).rejects.toBeInstanceOf(NotLeaderError);
      expect(e.isLeader).toBe(false);
      expect(seen.map((s) => s.event)).toEqual(['elected', 'deposed']);
      // Even a key re-created under the same name (a new create revision) does not revive the old fence.
      await client
        .put(`${keys.electionName}/${BigInt(lease.ID).toString(16)}`)
        .value('n1')
        .lease(lease.ID);
      await expect(e.fencedTxn([put()])).rejects.toBeInstanceOf(NotLeaderError);
      await client.leaseClient.leaseRevoke({ ID: lease.ID });
    } finally {
      client.close();
    }
  });

  it('campaign key of a running leader deleted: it steps down, the cluster keeps one leader and stays safe', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    const st = await loadClusterState(h.client, h.keys);
    const leaderKey = st.candidates[0]!;
    await h.client.delete().key(leaderKey.key);
    await h.agent(leaderKey.node).waitForLog((l) => l.event === 'deposed', 10_000);
    let next: string | null = null;
    for (let i = 0; i < 200 && (next === null || next === leaderKey.node); i++) {
      next = await h.leader();
      await sleep(25);
    }
    expect(next).not.toBe(leaderKey.node);
    // The deposed agent campaigned again, behind the others.
    const st2 = await loadClusterState(h.client, h.keys);
    expect(st2.candidates.map((c) => c.node)).toContain(leaderKey.node);
    await h.waitConverged(10_000);
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('garbage under every key family: no crash, each logged with its key, ownership unchanged', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    const before = await h.claims();
    const k = h.keys;
    const garbage: [string, string][] = [
      [k.spec, '{not json'],
      [k.assign(VIP), JSON.stringify({ v: 1, epoch: -1, owners: { 0: 'x' } })],
      [k.node('ghost'), JSON.stringify({ v: 2 })],
      [k.claim(VIP, 99), 'not a node id!'],
      [`${k.claimsOf(VIP)}abc`, 'n1'],
      [k.status('ghost'), '[]'],
      [`${k.electionName}/zzz`, ''],
      [`${k.prefix}whatever/else`, '\u0000\u0001'],
    ];
    for (const [key, value] of garbage) await h.client.put(key).value(value);
    for (const id of ['n1', 'n2', 'n3']) {
      for (const [key] of garbage) {
        await h.agent(id).waitForLog((l) => l.event === 'badValue' && l.key === key, 10_000);
      }
    }
    await sleep(1000);
    for (const id of ['n1', 'n2', 'n3']) expect(h.agent(id).exited(), `${id} exited`).toBeNull();
    expect(await h.claims()).toEqual(before);
    // The last good spec and assignment stay in force.
    await h.waitConverged(10_000);
    expect((await h.observer.stop()).violations).toEqual([]);
  });
});

/** Index of the etcd member that is (or is not) the raft leader. */
async function etcdMember(endpoints: string[], which: 'leader' | 'follower'): Promise<number> {
  const ids: string[] = [];
  let leader = '';
  for (const ep of endpoints) {
    const c = createEtcdClient({ endpoints: [ep], requestTimeoutMs: 2000 });
    try {
      const st = await c.maintenance.status();
      ids.push(st.header.member_id);
      leader = st.leader;
    } finally {
      c.close();
    }
  }
  const i = ids.findIndex((id) => (which === 'leader' ? id === leader : id !== leader));
  if (i < 0) throw new Error(`no ${which} among ${ids.join(',')} (leader ${leader})`);
  return i;
}
