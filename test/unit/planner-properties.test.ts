import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planVip, type Move, type PlannerNode, type VipPlan } from '../../src/planner/plan.js';

// Property tests for the planner (issue 2 item 4), each with >= 1,000 runs. The oracles here (pool, band,
// minimum number of moves) are written from the definitions in src/planner/balance.ts, not from its code.

// PLANNER_RUNS raises the count for a soak run; never below the 1,000 the issue asks for.
const RUNS = Math.max(1000, Number(process.env.PLANNER_RUNS ?? 0) || 0);
const VIP = '10.77.0.100';

interface Case {
  nodes: PlannerNode[];
  dead: string[];
  buckets: number;
  current: Map<number, string>;
  budget: number;
}

// Weight 0 (standby) for 1 node in 5, else 1..5.
const weightArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 5 }) },
);

// Live nodes drawn from n0..n11, dead owners d0..d3; current owners drawn from both (and "no owner").
const caseArb = (opts: { orphans: boolean; maxBuckets?: number } = { orphans: true }): fc.Arbitrary<Case> =>
  fc
    .record({
      live: fc.uniqueArray(fc.integer({ min: 0, max: 11 }), { maxLength: 10 }),
      // draining for 1 node in 4
      drainingMask: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 12, maxLength: 12 }),
      weightTable: fc.array(weightArb, { minLength: 12, maxLength: 12 }),
      dead: fc.uniqueArray(fc.integer({ min: 0, max: 3 }), { maxLength: 4 }),
      buckets: fc.integer({ min: 1, max: opts.maxBuckets ?? 64 }),
      picks: fc.array(fc.nat(), { minLength: 64, maxLength: 64 }),
      budget: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(Number.POSITIVE_INFINITY)),
    })
    .map((r) => {
      const nodes = r.live.map((i) => ({
        id: `n${i}`,
        weight: r.weightTable[i]!,
        draining: r.drainingMask[i] === 0,
      }));
      const dead = r.dead.map((i) => `d${i}`);
      const eligible = nodes.filter((x) => !x.draining).map((x) => x.id);
      const choices = opts.orphans ? [...nodes.map((x) => x.id), ...dead, undefined] : eligible;
      const current = new Map<number, string>();
      if (choices.length > 0) {
        for (let b = 1; b <= r.buckets; b++) {
          const c = choices[r.picks[(b * 7) % 64]! % choices.length];
          if (c !== undefined) current.set(b, c);
        }
      }
      return { nodes, dead, buckets: r.buckets, current, budget: r.budget };
    });

function plan(c: Case, current: ReadonlyMap<number, string> = c.current, budget = c.budget): VipPlan {
  return planVip({ vip: VIP, buckets: c.buckets, nodes: c.nodes, current, joinMoveBudget: budget });
}

// --- oracles from the definitions ---

function poolOf(nodes: PlannerNode[]): { weights: Map<string, number>; holdOnly: Set<string> } {
  const ok = nodes.filter((n) => !n.draining);
  const weighted = ok.filter((n) => n.weight > 0);
  if (weighted.length > 0) {
    return {
      weights: new Map(weighted.map((n) => [n.id, n.weight])),
      holdOnly: new Set(ok.filter((n) => n.weight === 0).map((n) => n.id)),
    };
  }
  return { weights: new Map(ok.map((n) => [n.id, 1])), holdOnly: new Set() };
}

function loadsOf(owners: ReadonlyMap<number, string>): Map<string, number> {
  const m = new Map<string, number>();
  for (const o of owners.values()) m.set(o, (m.get(o) ?? 0) + 1);
  return m;
}

/** Every eligible node's load is floor or ceil of N·w/W (exactly N·w/W when integral); standby-only holders 0. */
function withinOneBucket(nodes: PlannerNode[], buckets: number, owners: ReadonlyMap<number, string>): boolean {
  const { weights, holdOnly } = poolOf(nodes);
  const total = [...weights.values()].reduce((a, b) => a + b, 0);
  const loads = loadsOf(owners);
  for (const [id, w] of weights) {
    const ideal = (buckets * w) / total;
    const l = loads.get(id) ?? 0;
    if (l < Math.floor(ideal) || l > Math.ceil(ideal)) return false;
  }
  for (const id of holdOnly) if ((loads.get(id) ?? 0) > 0) return false;
  return true;
}

/**
 * Fewest single-bucket moves that bring every holder into its band, given no orphans: choose targets
 * T_i ∈ {floor q_i, ceil q_i} with ΣT = N minimising Σ max(0, L_i − T_i) (hold-only nodes: T = 0).
 */
function minimumMoves(nodes: PlannerNode[], buckets: number, owners: ReadonlyMap<number, string>): number {
  const { weights, holdOnly } = poolOf(nodes);
  const total = [...weights.values()].reduce((a, b) => a + b, 0);
  const loads = loadsOf(owners);
  let excess = 0;
  let extraSlots = buckets;
  let wouldUseCeil = 0;
  for (const [id, w] of weights) {
    const num = buckets * w; // q = num / total, compared in integers
    const fl = Math.floor(num / total);
    const fractional = num % total !== 0;
    const l = loads.get(id) ?? 0;
    extraSlots -= fl;
    excess += Math.max(0, l - fl);
    if (fractional && l >= fl + 1) wouldUseCeil++;
  }
  for (const id of holdOnly) excess += loads.get(id) ?? 0;
  return excess - Math.min(extraSlots, wouldUseCeil);
}

const sortedEntries = (m: ReadonlyMap<number, string>): [number, string][] => [...m].sort((a, b) => a[0] - b[0]);

function applyMoves(c: Case, moves: Move[]): Map<number, string> {
  const m = new Map([...c.current].filter(([b]) => b >= 1 && b <= c.buckets));
  for (const mv of moves) {
    expect(m.get(mv.bucket) ?? null).toBe(mv.from);
    if (mv.to === null) m.delete(mv.bucket);
    else m.set(mv.bucket, mv.to);
  }
  return m;
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const a = [...xs];
  let s = seed >>> 0 || 1;
  for (let i = a.length - 1; i > 0; i--) {
    s = Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

describe('planner properties', () => {
  it('every bucket has exactly one owner, live and not draining, whenever such a node exists', () => {
    fc.assert(
      fc.property(caseArb(), (c) => {
        const p = plan(c);
        const ok = new Set(c.nodes.filter((n) => !n.draining).map((n) => n.id));
        if (ok.size === 0) {
          expect(p.owners.size).toBe(0);
          return;
        }
        expect(p.owners.size).toBe(c.buckets);
        for (let b = 1; b <= c.buckets; b++) expect(ok.has(p.owners.get(b)!), `bucket ${b}`).toBe(true);
        // A standby node receives buckets only when no weighted node is eligible.
        const weightedExists = c.nodes.some((n) => !n.draining && n.weight > 0);
        for (const [b, o] of p.owners) {
          const w = c.nodes.find((n) => n.id === o)!.weight;
          if (weightedExists && w === 0) expect(c.current.get(b)).toBe(o);
        }
        // The moves are exactly the difference between current and next, each bucket at most once.
        expect(sortedEntries(applyMoves(c, p.moves))).toEqual(sortedEntries(p.owners));
        expect(new Set(p.moves.map((m) => m.bucket)).size).toBe(p.moves.length);
      }),
      { numRuns: RUNS },
    );
  });

  it('buckets of live non-draining owners move only by the join policy, at most k per call; reasons are right', () => {
    fc.assert(
      fc.property(caseArb(), (c) => {
        const p = plan(c);
        const live = new Map(c.nodes.map((n) => [n.id, n]));
        let join = 0;
        for (const m of p.moves) {
          const prev = m.bucket <= c.buckets ? c.current.get(m.bucket) : undefined;
          const stable = prev !== undefined && live.has(prev) && !live.get(prev)!.draining;
          if (m.reason === 'rebalanceJoin') {
            join++;
            expect(stable).toBe(true);
            expect(m.to).not.toBeNull();
          } else {
            expect(stable, `bucket ${m.bucket} of a live owner moved for ${m.reason}`).toBe(false);
            const want = prev === undefined ? 'unassigned' : live.has(prev) ? 'ownerDraining' : 'ownerDead';
            expect(m.reason).toBe(want);
          }
        }
        expect(join).toBeLessThanOrEqual(c.budget);
        // The join policy stops early only at balance (the leader re-plans later only if the budget ran out).
        if (join < c.budget && c.nodes.some((x) => !x.draining)) expect(p.balanced).toBe(true);
        expect(p.balanced).toBe(withinOneBucket(c.nodes, c.buckets, p.owners));
      }),
      { numRuns: RUNS },
    );
  });

  it('after enough calls every node is within one bucket of its weighted ideal, then nothing moves', () => {
    fc.assert(
      fc.property(caseArb(), fc.integer({ min: 1, max: 3 }), (c, k) => {
        if (!c.nodes.some((n) => !n.draining)) return;
        let owners: ReadonlyMap<number, string> = c.current;
        let calls = 0;
        for (;;) {
          const p = plan(c, owners, k);
          owners = p.owners;
          if (p.moves.length === 0) break;
          calls++;
          expect(calls).toBeLessThanOrEqual(c.buckets + 1);
        }
        expect(withinOneBucket(c.nodes, c.buckets, owners)).toBe(true);
        const again = plan(c, owners, Number.POSITIVE_INFINITY);
        expect(again.moves).toEqual([]);
        expect(again.balanced).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('the join policy makes the minimum number of moves (no orphans, unlimited budget)', () => {
    fc.assert(
      fc.property(caseArb({ orphans: false, maxBuckets: 200 }), (c) => {
        if (!c.nodes.some((n) => !n.draining)) return;
        const p = plan(c, c.current, Number.POSITIVE_INFINITY);
        expect(p.moves.every((m) => m.reason === 'rebalanceJoin')).toBe(true);
        expect(p.moves.length).toBe(minimumMoves(c.nodes, c.buckets, c.current));
        expect(withinOneBucket(c.nodes, c.buckets, p.owners)).toBe(true);
        expect(p.balanced).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('same input, same output, whatever the order of the node array and of the current map', () => {
    fc.assert(
      fc.property(caseArb(), fc.integer(), (c, seed) => {
        const a = plan(c);
        const nodes = shuffled(c.nodes, seed);
        const current = new Map(shuffled([...c.current], seed + 1));
        const b = planVip({ vip: VIP, buckets: c.buckets, nodes, current, joinMoveBudget: c.budget });
        expect(sortedEntries(b.owners)).toEqual(sortedEntries(a.owners));
        expect(b.moves).toEqual(a.moves);
        expect(b.balanced).toBe(a.balanced);
      }),
      { numRuns: RUNS },
    );
  });

  it('plan(plan(x)) = plan(x) once converged', () => {
    fc.assert(
      fc.property(caseArb(), (c) => {
        // Unlimited budget converges in one call; with a finite budget iterate to the fixpoint first.
        let owners = plan(c, c.current, Number.POSITIVE_INFINITY).owners;
        const once = plan(c, owners, c.budget);
        expect(once.moves).toEqual([]);
        expect(sortedEntries(once.owners)).toEqual(sortedEntries(owners));
        owners = once.owners;
        const twice = plan(c, owners, c.budget);
        expect(sortedEntries(twice.owners)).toEqual(sortedEntries(once.owners));
        expect(twice.moves).toEqual([]);
      }),
      { numRuns: RUNS },
    );
  });

  it('no live (or only draining) node: every bucket unassigned, no crash', () => {
    fc.assert(
      fc.property(caseArb(), fc.boolean(), (c, allDraining) => {
        const nodes = allDraining ? c.nodes.map((n) => ({ ...n, draining: true })) : [];
        const p = planVip({ vip: VIP, buckets: c.buckets, nodes, current: c.current, joinMoveBudget: c.budget });
        expect(p.owners.size).toBe(0);
        expect(p.pool).toBe('none');
        expect(p.balanced).toBe(true);
        const owned = [...c.current.keys()].filter((b) => b <= c.buckets).sort((x, y) => x - y);
        expect(p.moves.map((m) => m.bucket)).toEqual(owned);
        for (const m of p.moves) {
          expect(m.to).toBeNull();
          expect(m.reason).toBe(nodes.some((n) => n.id === m.from) ? 'ownerDraining' : 'ownerDead');
        }
      }),
      { numRuns: RUNS },
    );
  });
});
