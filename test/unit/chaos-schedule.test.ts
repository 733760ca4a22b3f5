import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FAULT_KINDS, holdRange, mulberry32, planSchedule, defaultConcurrency } from '../../src/chaos/schedule.js';

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
          if (etcdMembers === 1) expect(plan.some((f) => f.kind === 'etcdMember')).toBe(false);
          // Node faults in flight (start .. undo + settle) never exceed the concurrency.
          const node = plan.filter((f) => f.kind !== 'etcdMember');
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
