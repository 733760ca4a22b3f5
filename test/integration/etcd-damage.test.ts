// Issue 9, "bad data and damage in etcd converge back": against real etcd and real agent processes (file
// backend), each kind of damage must end with exactly one owner per bucket, the observer seeing no double owner
// on the way.
import { afterEach, describe, expect, it } from 'vitest';
import { loadClusterState } from '../../src/etcd/store.js';
import { VIP, nodeValue, startHarness, teardown, waitFor, type Harness } from './agent-harness.js';

const TTL = 2;
let h: Harness | undefined;

afterEach(async () => {
  await teardown(h);
  h = undefined;
});

describe('damage in etcd converges back', () => {
  it('a node key without a lease is no node: it gets no bucket and the leader deletes it', async () => {
    h = await startHarness({ nodes: ['n1', 'n2'], ttl: TTL, buckets: 24 });
    await h.waitConverged(20_000);
    const key = h.keys.node('ghost');
    await h.client.put(key).value(nodeValue); // no lease: would never go away
    await waitFor(
      'the leader to delete the lease-less node key',
      async () => !(await h!.client.get(key).string()),
      TTL * 1000 + 5000,
    );
    // Never assigned to it, not even for a moment: the observer records every assignment it saw.
    const st = await loadClusterState(h.client, h.keys);
    expect(new Set(Object.values(st.assignments.get(VIP)!.value.owners))).toEqual(new Set(['n1', 'n2']));
    await h.waitConverged(5000);
    const report = await h.observer.stop();
    expect(report.violations).toEqual([]);
  });

  it('garbage over a live owner’s claim: the owner lets go, the leader deletes it, the owner claims again', async () => {
    h = await startHarness({ nodes: ['n1', 'n2'], ttl: TTL });
    await h.waitConverged(20_000);
    const [bucket] = [...(await h.claims())].find(([, v]) => v.owner === 'n2')!;
    const key = h.keys.claim(VIP, bucket);
    await h.client.put(key).value('{garbage'); // detaches the claim from n2's lease
    await waitFor(
      'the claim to be n2’s again',
      async () => (await h!.claims()).get(bucket)?.owner === 'n2',
      TTL * 1000 + 5000,
    );
    await h.waitConverged(5000);
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('a ghost node id under a foreign live lease over a claim converges to the assignee', async () => {
    h = await startHarness({ nodes: ['n1', 'n2'], ttl: TTL });
    await h.waitConverged(20_000);
    const st = await loadClusterState(h.client, h.keys);
    const [bucket] = [...(await h.claims())].find(([, v]) => v.owner === 'n2')!;
    const n1Lease = st.nodes.get('n1')!.lease;
    // Lives as long as n1 does: the ghost claim would outlive the damage for as long as the cluster runs.
    await h.client.put(h.keys.claim(VIP, bucket)).value('ghost').lease(n1Lease);
    await waitFor(
      'the claim to be n2’s again',
      async () => (await h!.claims()).get(bucket)?.owner === 'n2',
      TTL * 1000 + 5000,
    );
    // And the name of a real node under another node's lease is a ghost too.
    const [b2] = [...(await h.claims())].find(([, v]) => v.owner === 'n1')!;
    await h.client.put(h.keys.claim(VIP, b2)).value('n1').lease(st.nodes.get('n2')!.lease);
    await waitFor(
      'the claim to be n1’s again under its own lease',
      async () => {
        const s = await loadClusterState(h!.client, h!.keys);
        const c = s.claims.get(VIP)?.get(b2);
        return c?.owner === 'n1' && c.lease === s.nodes.get('n1')?.lease;
      },
      TTL * 1000 + 5000,
    );
    await h.waitConverged(5000);
    // A ghost is swept only after it stayed one for TTL + 1 s (a lease expiring can look alike for a moment):
    // its bucket is dark that long. Never two owners.
    const v = (await h.observer.stop()).violations;
    expect(v.filter((x) => x.kind !== 'unownedTooLong')).toEqual([]);
  });
});
