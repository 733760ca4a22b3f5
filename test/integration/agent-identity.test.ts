// Issue 9, hole 2 (DESIGN §13): a second agent started with a live node's id (cloned VMs share a hostname, the
// default id) revoked the first one's lease — a revoke shortens a lease, so the first agent's kernel kept its
// buckets while the leader reassigned them. A node now revokes only a lease it recorded in its stateDir, refuses
// to start over a live foreign lease, and stops when another agent takes its node key while it runs.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadClusterState } from '../../src/etcd/store.js';
import { spawnAgent } from '../../src/localcluster/agentProcess.js';
import { events, sleep, startHarness, type Harness, cleanups, teardown } from './agent-harness.js';

const TTL = 2;
let h: Harness | undefined;
afterEach(async () => {
  await teardown(h);
  h = undefined;
});

async function nodeLease(h: Harness, id: string): Promise<string | undefined> {
  return (await loadClusterState(h.client, h.keys)).nodes.get(id)?.lease;
}

describe('node identity', () => {
  it('a second agent with a live node id refuses to start and leaves the first one alone', async () => {
    h = await startHarness({ nodes: ['dup', 'n2'], ttl: TTL });
    await h.waitConverged(20_000);
    const lease = await nodeLease(h, 'dup');
    const held = await h.backendHeld('dup');
    expect(held.size).toBeGreaterThan(0);
    // Another machine: its own backend directory and stateDir, the same id.
    const other = await mkdtemp(join(tmpdir(), 'cipha-dup-'));
    cleanups.push(() => rm(other, { recursive: true, force: true }));
    const clone = spawnAgent({
      nodeId: 'dup',
      endpoints: h.etcd.endpoints,
      cluster: h.cluster,
      backendDir: join(other, 'buckets'),
      leaseTtlSeconds: TTL,
    });
    cleanups.push(async () => {
      if (clone.exited() === null) clone.signal('SIGKILL');
      await clone.waitExit(5000);
    });
    const exit = await clone.waitExit(20_000);
    expect(exit.code).toBe(1);
    expect(clone.rawLines().join('\n')).toMatch(/node id "dup" is held by another live agent under lease/);
    // The first agent kept its lease (a revoke would have deleted its node key and claims at once) and its buckets.
    await sleep(TTL * 1000);
    expect(await nodeLease(h, 'dup')).toBe(lease);
    expect(await h.backendHeld('dup')).toEqual(held);
    expect(h.agent('dup').exited()).toBeNull();
    await h.waitConverged(5000);
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('stops, releasing its buckets, when another agent takes its node key while it runs', async () => {
    h = await startHarness({ nodes: ['dup', 'n2'], ttl: TTL });
    await h.waitConverged(20_000);
    const dup = h.agent('dup');
    // What a clone that raced us at start-up does: its own lease on our node key.
    const foreign = h.client.lease(TTL * 5, { autoKeepAlive: false });
    const foreignId = await foreign.grant();
    cleanups.push(() => foreign.revoke());
    const value = (await h.client.get(h.keys.node('dup')).string())!;
    await h.client.put(h.keys.node('dup')).value(value).lease(foreignId);
    const exit = await dup.waitExit(15_000);
    expect(exit.code).toBe(1);
    expect(dup.rawLines().join('\n')).toMatch(/node id "dup" is held by another live agent/);
    expect(await h.backendHeld('dup')).toEqual(new Set());
    // It never wrote its key back over the other's.
    expect(await nodeLease(h, 'dup')).toBe(foreignId);
    await foreign.revoke();
    await h.waitConverged(TTL * 1000 + 10_000, ['n2']);
    expect((await h.observer.stop()).violations.filter((v) => v.kind !== 'unownedTooLong')).toEqual([]);
  });

  it('a restart on the same machine revokes its own earlier lease at once', async () => {
    h = await startHarness({ nodes: ['dup', 'n2'], ttl: TTL });
    await h.waitConverged(20_000);
    const before = await nodeLease(h, 'dup');
    h.agent('dup').signal('SIGKILL');
    await h.agent('dup').waitExit(5000);
    const again = h.start('dup');
    await again.waitForLog((l) => l.event === 'previousRevoked', 10_000);
    const after = await nodeLease(h, 'dup');
    expect(after).not.toBe(before);
    expect(events(again, 'startFailed')).toEqual([]);
    await h.waitConverged(10_000);
  });
});
