import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { acquireRefusal, handoffTo, planClaims, type ClaimInputs } from '../../src/agent/claimPlan.js';
import type { ClusterSpec } from '../../src/config/types.js';
import type { AssignEntry, ClaimEntry } from '../../src/etcd/store.js';

const VIP = '10.0.0.1';
const N = 8;
const spec: ClusterSpec = {
  vips: [
    {
      address: VIP,
      interface: 'eth0',
      buckets: N,
      hashMode: 'sourceip',
      seed: 1,
      clusterMac: '01:00:5e:00:00:01',
      sticky: false,
    },
  ],
  rebalance: { joinMovesPerInterval: 1, intervalMs: 100 },
};
const nodes = ['me', 'a', 'b', 'gone'];

function inputs(
  assign: (string | null)[],
  claims: ({ owner: string; lease: string } | null)[],
  kernel: number[],
  over: Partial<ClaimInputs> = {},
): ClaimInputs {
  const owners: Record<string, string> = {};
  assign.forEach((o, i) => {
    if (o) owners[String(i + 1)] = o;
  });
  const cm = new Map<number, ClaimEntry>();
  claims.forEach((c, i) => {
    if (c) cm.set(i + 1, { ...c, createRevision: '5' });
  });
  const a: AssignEntry = { value: { v: 1, epoch: 1, leader: 'a', owners }, modRevision: '3' };
  return {
    me: 'me',
    leaseId: 'L',
    peers: new Map([
      ['me', { lease: 'L', draining: false }],
      ['a', { lease: 'LA', draining: false }],
      ['b', { lease: 'LB', draining: true }],
    ]),
    spec,
    assignments: new Map([[VIP, a]]),
    claims: new Map([[VIP, cm]]),
    kernel: new Map([[VIP, new Set(kernel)]]),
    live: true,
    releaseAll: false,
    draining: false,
    backendBlocked: false,
    specCurrent: true,
    ...over,
  };
}

describe('planClaims', () => {
  it('acquires unclaimed assigned buckets, waits on held ones, adds held claims to the kernel', () => {
    const p = planClaims(
      inputs(['me', 'me', 'me', 'a'], [null, { owner: 'a', lease: 'X' }, { owner: 'me', lease: 'L' }, null], []),
    );
    expect(p.acquire).toEqual([{ vip: VIP, bucket: 1 }]);
    expect(p.blocked).toEqual([{ vip: VIP, bucket: 2, reason: 'heldByOther', holder: 'a' }]);
    expect(p.kernelAdd).toEqual([{ vip: VIP, bucket: 3 }]);
  });

  it('releases kernel first, then hands the claim to the live assignee under its lease', () => {
    const p = planClaims(inputs(['a'], [{ owner: 'me', lease: 'L' }], [1], { draining: true }));
    expect(p.kernelRemove).toEqual([{ vip: VIP, bucket: 1, reason: 'draining' }]);
    expect(p.claimDelete).toEqual([{ vip: VIP, bucket: 1, reason: 'draining', handoff: { node: 'a', lease: 'LA' } }]);
  });

  it('deletes the claim instead when the assignee drains, has no node key, or we shut down', () => {
    const claim = [{ owner: 'me', lease: 'L' }];
    expect(planClaims(inputs(['b'], claim, [1])).claimDelete).toEqual([{ vip: VIP, bucket: 1, reason: 'notAssigned' }]);
    expect(planClaims(inputs(['gone'], claim, [1])).claimDelete).toEqual([
      { vip: VIP, bucket: 1, reason: 'notAssigned' },
    ]);
    expect(planClaims(inputs([null], claim, [])).claimDelete).toEqual([{ vip: VIP, bucket: 1, reason: 'notAssigned' }]);
    expect(planClaims(inputs(['a'], claim, [1], { releaseAll: true })).claimDelete).toEqual([
      { vip: VIP, bucket: 1, reason: 'shutdown' },
    ]);
    expect(handoffTo(inputs(['b'], claim, [1]), VIP, 1)).toBe('assigneeDraining');
    expect(handoffTo(inputs(['gone'], claim, [1]), VIP, 1)).toBe('assigneeNotLive');
    expect(handoffTo(inputs(['me'], claim, [1]), VIP, 1)).toBe('unassigned');
    expect(handoffTo(inputs(['a'], claim, [1], { releaseAll: true }), VIP, 1)).toBe('shutdown');
  });

  it('never hands a claim to a node key without a lease: the claim would outlive everyone', () => {
    const claim = [{ owner: 'me', lease: 'L' }];
    const i = inputs(['a'], claim, []);
    const peers = new Map(i.peers);
    peers.set('a', { lease: '0', draining: false });
    expect(handoffTo({ ...i, peers }, VIP, 1)).toBe('assigneeNotLive');
    expect(planClaims({ ...i, peers }).claimDelete).toEqual([{ vip: VIP, bucket: 1, reason: 'notAssigned' }]);
  });

  it('a claim under an old lease of ours is not ours: the kernel entry goes, nothing is deleted', () => {
    const p = planClaims(inputs(['me'], [{ owner: 'me', lease: 'OLD' }], [1]));
    expect(p.kernelRemove.map((r) => r.bucket)).toEqual([1]);
    expect(p.claimDelete).toEqual([]);
    expect(p.blocked[0]?.reason).toBe('heldByOther');
  });

  it('an assignment numbered for another bucket count than the applied spec is not acted on', () => {
    const base = inputs(['me', 'me'], [{ owner: 'me', lease: 'L' }, null], [1]);
    const a = base.assignments.get(VIP)!;
    const other = new Map([[VIP, { ...a, value: { ...a.value, buckets: N + 4 } }]]);
    const p = planClaims({ ...base, assignments: other });
    expect(p.acquire).toEqual([]);
    expect(p.kernelAdd).toEqual([]);
    // What we hold of it goes the normal way: kernel first, then the claim.
    expect(p.kernelRemove.map((r) => r.bucket)).toEqual([1]);
    expect(p.claimDelete.map((r) => r.bucket)).toEqual([1]);
    const same = new Map([[VIP, { ...a, value: { ...a.value, buckets: N } }]]);
    expect(planClaims({ ...base, assignments: same }).acquire).toEqual([{ vip: VIP, bucket: 2 }]);
  });

  it('fenced: acquires nothing', () => {
    const p = planClaims(inputs(['me', 'me'], [null, { owner: 'me', lease: 'L' }], [], { live: false }));
    expect(p.acquire).toEqual([]);
    expect(p.kernelAdd).toEqual([]);
    expect(p.blocked.map((b) => b.reason)).toEqual(['fenced', 'fenced']);
  });

  it('property: never adds without a claim of ours, never deletes a claim whose bucket stays in the kernel', () => {
    const owner = fc.constantFrom(...nodes, null);
    const claim = fc.option(fc.record({ owner: fc.constantFrom(...nodes), lease: fc.constantFrom('L', 'OLD') }), {
      nil: null,
    });
    fc.assert(
      fc.property(
        fc.array(owner, { minLength: N, maxLength: N }),
        fc.array(claim, { minLength: N, maxLength: N }),
        fc.subarray([1, 2, 3, 4, 5, 6, 7, 8]),
        fc.boolean(),
        fc.boolean(),
        (assign, claims, kernel, live, releaseAll) => {
          const i = inputs(assign, claims, kernel, { live, releaseAll });
          const p = planClaims(i);
          const ours = (b: number): boolean => claims[b - 1]?.owner === 'me' && claims[b - 1]?.lease === 'L';
          for (const r of p.kernelAdd) expect(ours(r.bucket)).toBe(true);
          for (const r of p.acquire) expect(claims[r.bucket - 1]).toBeNull();
          for (const r of [...p.kernelAdd, ...p.acquire]) expect(assign[r.bucket - 1]).toBe('me');
          if (!live || releaseAll) expect([...p.kernelAdd, ...p.acquire]).toEqual([]);
          const removed = new Set(p.kernelRemove.map((r) => r.bucket));
          for (const d of p.claimDelete) {
            expect(ours(d.bucket)).toBe(true);
            // A handoff goes only to the bucket's assignee, never to us, under the live, undrained peer's lease.
            if (d.handoff) {
              expect(releaseAll).toBe(false);
              expect(d.handoff.node).toBe(assign[d.bucket - 1]);
              expect(d.handoff.node).not.toBe('me');
              const peer = i.peers.get(d.handoff.node);
              expect(peer?.draining).toBe(false);
              expect(d.handoff.lease).toBe(peer?.lease);
            }
            if (kernel.includes(d.bucket)) expect(removed.has(d.bucket)).toBe(true);
          }
          // After the plan, the kernel holds only buckets we claim.
          const after = new Set([...kernel.filter((b) => !removed.has(b)), ...p.kernelAdd.map((r) => r.bucket)]);
          for (const b of after) expect(ours(b)).toBe(true);
          if (releaseAll) expect(after.size).toBe(0);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('planClaims under a hash identity (DESIGN §12)', () => {
  const stamped = (i: ClaimInputs, hash: string): ClaimInputs => {
    const a = i.assignments.get(VIP)!;
    return { ...i, assignments: new Map([[VIP, { ...a, value: { ...a.value, hash } }]]) };
  };
  it('acts on an assignment only under the identity of its own rule', () => {
    const base = inputs(['me', 'me', 'a'], [{ owner: 'me', lease: 'L' }, null, null], [1]);
    const same = planClaims(stamped(base, `${N}/sourceip/0x00000001`));
    expect(same.acquire).toEqual([{ vip: VIP, bucket: 2 }]);
    expect(same.kernelRemove).toEqual([]);
    // Another seed: the owners number other clients. Release what we hold, acquire nothing, hand nothing off.
    const other = planClaims(stamped(base, `${N}/sourceip/0x00000002`));
    expect(other.acquire).toEqual([]);
    expect(other.kernelRemove).toEqual([{ vip: VIP, bucket: 1, reason: 'notAssigned' }]);
    expect(other.claimDelete).toEqual([{ vip: VIP, bucket: 1, reason: 'notAssigned' }]);
  });
});

// Issue 9, the stale-hash hole (DESIGN §12): while the spec key holds another spec than the one the kernel runs,
// nothing is added to the kernel (no acquire, no add of a claim handed to us); what the kernel holds stays.
describe('planClaims under a stale spec', () => {
  it('acquires nothing and adds nothing, keeps what the kernel holds', () => {
    const mine = { owner: 'me', lease: 'L' };
    const p = planClaims(inputs(['me', 'me', 'me'], [mine, mine, null], [1], { specCurrent: false }));
    expect(p.acquire).toEqual([]);
    expect(p.kernelAdd).toEqual([]);
    expect(p.kernelRemove).toEqual([]);
    expect(p.claimDelete).toEqual([]);
    expect(p.blocked).toEqual([
      { vip: VIP, bucket: 2, reason: 'specStale' },
      { vip: VIP, bucket: 3, reason: 'specStale' },
    ]);
    const current = planClaims(inputs(['me', 'me', 'me'], [mine, mine, null], [1]));
    expect(current.kernelAdd).toEqual([{ vip: VIP, bucket: 2 }]);
    expect(current.acquire).toEqual([{ vip: VIP, bucket: 3 }]);
  });

  it('releases as usual', () => {
    const p = planClaims(inputs(['a'], [{ owner: 'me', lease: 'L' }], [1], { specCurrent: false }));
    expect(p.kernelRemove).toEqual([{ vip: VIP, bucket: 1, reason: 'notAssigned' }]);
    expect(p.claimDelete.map((d) => d.bucket)).toEqual([1]);
  });
});

describe('acquireRefusal', () => {
  it('names the spec first: the kernel runs an older spec than the key holds', () => {
    expect(acquireRefusal({ specModRevision: '9', appliedSpecModRevision: '4' })).toBe('specStale');
    expect(acquireRefusal({ specModRevision: null, appliedSpecModRevision: '4' })).toBe('specStale');
    expect(acquireRefusal({ specModRevision: '4', appliedSpecModRevision: '4' })).toBe('heldByOther');
  });
});
