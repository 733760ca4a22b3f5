// Issue 3: the spec in etcd drives agents (a VIP added, buckets changed, a VIP removed), and a second signal
// makes an agent release everything and exit at once.
import { afterEach, describe, expect, it } from 'vitest';
import { VIP, events, startHarness, type Harness } from './agent-harness.js';

const TTL = 2;
let h: Harness | undefined;

afterEach(async () => {
  await h?.stop();
  h = undefined;
});

const twoVips = (b1: number, b2: number): string => `vips:
  - address: ${VIP}
    interface: eth0
    buckets: ${b1}
    hashMode: sourceip
    seed: 0x5eed1234
  - address: 10.77.0.101
    interface: eth0
    buckets: ${b2}
    hashMode: sourceip-sourceport
    seed: 7
rebalance:
  joinMovesPerInterval: 4
  intervalMs: 200
`;

describe('agent and the spec', () => {
  it('acts on spec changes: VIP added, bucket count changed, VIP removed', async () => {
    h = await startHarness({ nodes: ['n1', 'n2', 'n3'], ttl: TTL });
    await h.waitConverged(20_000);
    await h.applySpec(twoVips(12, 6));
    await h.waitConverged(20_000);
    expect((await h.claims('10.77.0.101')).size).toBe(6);
    await h.applySpec(twoVips(9, 6));
    await h.waitConverged(20_000);
    expect([...(await h.claims()).keys()].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await h.applySpec(`vips:
  - address: 10.77.0.101
    interface: eth0
    buckets: 6
    hashMode: sourceip-sourceport
    seed: 7
rebalance:
  joinMovesPerInterval: 4
  intervalMs: 200
`);
    await h.waitConverged(20_000);
    expect((await h.claims()).size).toBe(0);
    const reasons = ['n1', 'n2', 'n3'].flatMap((id) => events(h!.agent(id), 'released').map((l) => l.reason));
    expect(reasons).toContain('vipRemoved');
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('a second SIGTERM releases everything and exits at once', async () => {
    h = await startHarness({ nodes: ['n1', 'n2'], ttl: TTL });
    await h.waitConverged(20_000);
    const a = h.agent('n2');
    const t0 = Date.now();
    a.signal('SIGTERM');
    a.signal('SIGTERM');
    const exit = await a.waitExit(5000);
    expect(exit.code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await h.backendHeld('n2')).size).toBe(0);
    const phases = events(a, 'shutdown').map((l) => l.reason);
    expect(phases).toContain('released');
    expect(phases[phases.length - 1]).toBe('done');
    await h.waitConverged(20_000, ['n1']);
    expect((await h.observer.stop()).violations).toEqual([]);
  });

  it('SIGTERM with no leader to hand over to: releases everything itself after --shutdown-timeout', async () => {
    h = await startHarness({ nodes: ['n1', 'n2'], ttl: TTL, extraArgs: ['--shutdown-timeout', '1500'] });
    await h.waitConverged(20_000);
    const leader = (await h.leader())!;
    const other = leader === 'n1' ? 'n2' : 'n1';
    // Freeze the leader: nobody writes the assignment that would move the drained buckets.
    h.agent(leader).signal('SIGSTOP');
    const a = h.agent(other);
    const t0 = Date.now();
    a.signal('SIGTERM');
    const exit = await a.waitExit(10_000);
    expect(exit.code).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(events(a, 'shutdown').map((l) => l.reason)).toEqual(['draining', 'timedOut', 'released', 'revoked', 'done']);
    expect((await h.backendHeld(other)).size).toBe(0);
    h.agent(leader).signal('SIGCONT');
    await h.waitConverged(20_000, [leader]);
    const report = await h.observer.stop();
    // The frozen leader and the timed-out drain leave buckets unowned for a while (that is the point); never two owners.
    expect(report.violations.filter((v) => v.kind === 'doubleOwner')).toEqual([]);
  });
});
