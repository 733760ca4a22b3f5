import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  backendFaultOf,
  CLUSTER_KINDS,
  ETCD_KINDS,
  FAULT_KINDS,
  holdRange,
  mulberry32,
  planSchedule,
  defaultConcurrency,
  SPEC_CHANGES,
  specChangeOf,
} from '../../src/chaos/schedule.js';
import { changedSpec, EXTRA_VIP } from '../../src/chaos/clusterOps.js';
import { defaultSpec } from '../../src/localcluster/cluster.js';

describe('chaos schedule', () => {
  it('is a function of the seed: same seed, same schedule; another seed, another schedule', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(1 as const, 3 as const), (seed, m) => {
        const o = { seed, agents: 5, etcdMembers: m, ttlMs: 2000, faults: 50 };
        expect(planSchedule(o)).toEqual(planSchedule(o));
        expect(planSchedule({ ...o, seed: seed + 1 })).not.toEqual(planSchedule(o));
      }),
      { numRuns: 200 },
    );
  });

  it('stays within its bounds: count, duration, holds, concurrency, etcd faults only with 3 members', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 3, max: 9 }),
        fc.constantFrom(1 as const, 3 as const),
        fc.constantFrom(1000, 2000, 5000),
        fc.oneof(
          fc.record({ faults: fc.integer({ min: 1, max: 300 }) }),
          fc.record({ durationMs: fc.integer({ min: 1000, max: 120_000 }) }),
        ),
        (seed, agents, etcdMembers, ttlMs, limit) => {
          const plan = planSchedule({ seed, agents, etcdMembers, ttlMs, ...limit, settleMs: 600 });
          if ('faults' in limit) expect(plan).toHaveLength(limit.faults);
          else for (const f of plan) expect(f.atMs).toBeLessThanOrEqual(limit.durationMs);
          plan.forEach((f, i) => {
            expect(f.seq).toBe(i + 1);
            if (i > 0) expect(f.atMs).toBeGreaterThanOrEqual(plan[i - 1]!.atMs);
            const [lo, hi] = holdRange(f.kind, ttlMs);
            expect(f.holdMs).toBeGreaterThanOrEqual(lo);
            expect(f.holdMs).toBeLessThanOrEqual(hi);
            expect(f.pick).toBeGreaterThanOrEqual(0);
            expect(f.pick).toBeLessThan(1);
            if (f.kind === 'stopShort' || f.kind === 'partitionShort') expect(f.holdMs).toBeLessThan(ttlMs);
            if (f.kind === 'stopLong' || f.kind === 'partitionLong') expect(f.holdMs).toBeGreaterThan(ttlMs);
          });
          if (etcdMembers === 1) expect(plan.some((f) => ETCD_KINDS.includes(f.kind))).toBe(false);
          // etcd faults and spec changes one at a time each.
          for (const slot of [ETCD_KINDS, CLUSTER_KINDS]) {
            const one = plan.filter((f) => slot.includes(f.kind));
            one.forEach(
              (f, i) => i > 0 && expect(f.atMs).toBeGreaterThanOrEqual(one[i - 1]!.atMs + one[i - 1]!.holdMs),
            );
          }
          // An etcd leader stop outlasts the election timeout.
          for (const f of plan) if (f.kind === 'etcdLeaderStop') expect(f.holdMs).toBeGreaterThan(1000);
          // Node faults in flight (start .. undo + settle) never exceed the concurrency.
          const node = plan.filter((f) => !ETCD_KINDS.includes(f.kind) && !CLUSTER_KINDS.includes(f.kind));
          for (const f of node) {
            const overlapping = node.filter((g) => g.atMs <= f.atMs && f.atMs < g.atMs + g.holdMs + 600);
            expect(overlapping.length).toBeLessThanOrEqual(defaultConcurrency(agents));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('uses every kind over a long schedule', () => {
    const plan = planSchedule({ seed: 7, agents: 5, etcdMembers: 3, ttlMs: 2000, faults: 1000 });
    const kinds = new Set(plan.map((f) => f.kind));
    expect([...kinds].sort()).toEqual([...FAULT_KINDS].sort());
  });

  it('a run of some kinds has only those', () => {
    const only = ['specChange', 'duplicateId', 'backendFault', 'etcdLeaderStop'] as const;
    const plan = planSchedule({ seed: 3, agents: 5, etcdMembers: 3, ttlMs: 2000, faults: 200, only });
    expect([...new Set(plan.map((f) => f.kind))].sort()).toEqual([...only].sort());
    expect(() =>
      planSchedule({ seed: 3, agents: 5, etcdMembers: 1, ttlMs: 2000, faults: 5, only: ['etcdMember'] }),
    ).toThrow();
  });

  it('spec changes cover every variant, each a valid change that the revert undoes', () => {
    const base = defaultSpec(16);
    const seen = new Set<string>();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (n) => {
        const pick = n / 2 ** 32;
        const { change, spec } = changedSpec(base, pick);
        expect(change).toBe(specChangeOf(pick));
        seen.add(change);
        const [a, b] = [base.vips[0]!, spec.vips[0]!];
        if (change === 'seed') expect(b.seed).not.toBe(a.seed);
        if (change === 'hashMode') expect(b.hashMode).not.toBe(a.hashMode);
        if (change === 'buckets') expect(b.buckets).not.toBe(a.buckets);
        if (change === 'addVip') expect(spec.vips.map((v) => v.address)).toEqual([a.address, EXTRA_VIP]);
        expect(spec).not.toEqual(base);
      }),
      { numRuns: 500 },
    );
    expect([...seen].sort()).toEqual([...SPEC_CHANGES].sort());
    // And a real schedule's picks reach every variant.
    const plan = planSchedule({ seed: 7, agents: 5, etcdMembers: 3, ttlMs: 2000, faults: 2000, only: ['specChange'] });
    expect([...new Set(plan.map((f) => specChangeOf(f.pick)))].sort()).toEqual([...SPEC_CHANGES].sort());
  });

  it('backend faults fail or stall a bounded share of writes', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (pick) => {
        const f = backendFaultOf(pick);
        expect(f.failShare).toBeGreaterThanOrEqual(0.1);
        expect(f.failShare + f.stallShare).toBeLessThanOrEqual(1);
        expect(f.stallMs).toBeGreaterThanOrEqual(50);
        expect(f.stallMs).toBeLessThanOrEqual(800);
      }),
    );
  });

  it('mulberry32 is uniform enough and in [0, 1)', () => {
    const r = mulberry32(42);
    const xs = Array.from({ length: 20_000 }, r);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const deciles = new Array(10).fill(0);
    for (const x of xs) deciles[Math.floor(x * 10)]++;
    for (const d of deciles) expect(Math.abs(d - 2000)).toBeLessThan(200);
  });
});
