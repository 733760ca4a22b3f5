import { describe, expect, it } from 'vitest';
import type { ClusterSpec, VipSpec } from '../../src/config/types.js';
import { planCluster, planVip, type PlannerNode, type VipPlan } from '../../src/planner/plan.js';
import { rendezvous } from '../../src/planner/rendezvous.js';

// Worked examples of the planner rules (DESIGN §6); the general laws are in planner-properties.test.ts.

const VIP = '10.77.0.100';
const node = (id: string, weight = 1, draining = false): PlannerNode => ({ id, weight, draining });

function loads(p: VipPlan): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of p.owners.values()) out[o] = (out[o] ?? 0) + 1;
  return out;
}

function plan(nodes: PlannerNode[], current: ReadonlyMap<number, string>, budget = 1, buckets = 16): VipPlan {
  return planVip({ vip: VIP, buckets, nodes, current, joinMoveBudget: budget });
}

describe('planner examples', () => {
  it('first plan spreads 16 buckets 6/5/5 over three nodes, all moves "unassigned"', () => {
    const p = plan([node('a'), node('b'), node('c')], new Map());
    expect(Object.values(loads(p)).sort()).toEqual([5, 5, 6]);
    expect(p.moves).toHaveLength(16);
    expect(p.moves.every((m) => m.reason === 'unassigned' && m.from === null)).toBe(true);
    expect(p.balanced).toBe(true);
    expect(p.pool).toBe('weighted');
  });

  it("a dead node's buckets go to the least loaded survivors; the survivors' buckets stay", () => {
    const nodes = [node('a'), node('b'), node('c'), node('d')];
    const start = plan(nodes, new Map()).owners;
    const p = plan(
      nodes.filter((n) => n.id !== 'b'),
      start,
    );
    const ofB = [...start].filter(([, o]) => o === 'b').map(([b]) => b);
    expect(p.moves.map((m) => m.bucket)).toEqual(ofB);
    for (const m of p.moves) expect(m).toMatchObject({ from: 'b', reason: 'ownerDead' });
    for (const [b, o] of start) if (o !== 'b') expect(p.owners.get(b)).toBe(o);
    expect(Object.values(loads(p)).sort()).toEqual([5, 5, 6]);
  });

  it('ties between equally loaded nodes go to the highest rendezvous score of vip#bucket#node', () => {
    const p = plan(
      [node('a'), node('b'), node('c')],
      new Map([
        [2, 'a'],
        [3, 'b'],
        [4, 'c'],
      ]),
      0,
      4,
    );
    // Bucket 1 is the only orphan and all three nodes hold one bucket: the rendezvous winner takes it.
    const want = ['a', 'b', 'c'].reduce((x, y) => (rendezvous(VIP, 1, y) > rendezvous(VIP, 1, x) ? y : x));
    expect(p.owners.get(1)).toBe(want);
  });

  it('draining: the buckets move with reason ownerDraining, and nothing is given to the draining node', () => {
    const start = plan([node('a'), node('b')], new Map()).owners;
    const p = plan([node('a', 1, true), node('b')], start);
    expect(loads(p)).toEqual({ b: 16 });
    expect(p.moves.every((m) => m.from === 'a' && m.to === 'b' && m.reason === 'ownerDraining')).toBe(true);
  });

  it('join: a new node receives one bucket per call with k = 1, none with k = 0, and converges to 4/4/4/4', () => {
    const three = [node('a'), node('b'), node('c')];
    let owners = plan(three, new Map()).owners;
    const four = [...three, node('d')];
    expect(plan(four, owners, 0).moves).toEqual([]);
    const calls: number[] = [];
    for (let i = 0; i < 10; i++) {
      const p = plan(four, owners, 1);
      if (p.moves.length === 0) break;
      expect(p.moves).toHaveLength(1);
      expect(p.moves[0]).toMatchObject({ to: 'd', reason: 'rebalanceJoin' });
      calls.push(i);
      owners = p.owners;
    }
    expect(calls).toHaveLength(4); // the minimum: d needs 4 buckets
    expect(loads(plan(four, owners, 1))).toEqual({ a: 4, b: 4, c: 4, d: 4 });
  });

  it('weights: 1 and 3 share 16 buckets 4/12', () => {
    const p = plan([node('light', 1), node('heavy', 3)], new Map(), 0);
    expect(loads(p)).toEqual({ light: 4, heavy: 12 });
  });

  it('standby (weight 0) takes everything only while no weighted node is live, then hands back under the join budget', () => {
    const start = plan([node('a'), node('s', 0)], new Map()).owners;
    expect(loads({ owners: start } as VipPlan)).toEqual({ a: 16 });
    const failover = plan([node('s', 0)], start);
    expect(failover.pool).toBe('standby');
    expect(loads(failover)).toEqual({ s: 16 });
    // a comes back: s is hold-only now; its buckets return at k per call, k = 0 keeps them where they are.
    expect(plan([node('a'), node('s', 0)], failover.owners, 0).moves).toEqual([]);
    const back = plan([node('a'), node('s', 0)], failover.owners, 3);
    expect(back.moves).toHaveLength(3);
    expect(back.moves.every((m) => m.from === 's' && m.to === 'a' && m.reason === 'rebalanceJoin')).toBe(true);
    expect(back.balanced).toBe(false);
    expect(loads(plan([node('a'), node('s', 0)], failover.owners, 16))).toEqual({ a: 16 });
  });

  it('several standby nodes share equally when they are all that is left', () => {
    const p = plan([node('s1', 0), node('s2', 0), node('a', 2, true)], new Map(), 0);
    expect(loads(p)).toEqual({ s1: 8, s2: 8 });
  });

  it('unknown owners, buckets beyond N and strange inputs do not crash', () => {
    const p = plan(
      [node('a', Number.NaN), node('b', -3), node('a', 1)],
      new Map([
        [1, 'ghost'],
        [99, 'a'],
        [0, 'a'],
      ]),
      Number.NaN,
      4,
    );
    // 'a' is listed twice: merged with the larger weight (1); 'b' has an invalid weight and counts as standby.
    expect(p.pool).toBe('weighted');
    expect(loads(p)).toEqual({ a: 4 });
    expect(p.moves[0]).toEqual({ bucket: 1, from: 'ghost', to: 'a', reason: 'ownerDead' });
    expect(plan([node('a')], new Map(), 1, 0).owners.size).toBe(0);
  });

  it('planCluster plans each VIP of the spec with its own bucket count and budget', () => {
    const vip = (address: string, buckets: number): VipSpec => ({
      address,
      interface: 'eth0',
      buckets,
      hashMode: 'sourceip',
      seed: 1,
      clusterMac: '01:00:5e:00:00:01',
      sticky: false,
    });
    const spec: ClusterSpec = {
      vips: [vip('10.0.0.1', 16), vip('10.0.0.2', 4)],
      rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
    };
    const nodes = [node('a'), node('b')];
    const first = planCluster(spec, nodes, new Map([['10.0.0.9', new Map([[1, 'a']])]]), 1);
    expect([...first.keys()]).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(first.get('10.0.0.1')!.owners.size).toBe(16);
    expect(first.get('10.0.0.2')!.owners.size).toBe(4);
    const current = new Map([...first].map(([v, p]) => [v, p.owners] as const));
    const joined = planCluster(spec, [...nodes, node('c')], current, 1);
    for (const p of joined.values()) {
      expect(p.moves).toHaveLength(1);
      expect(p.moves[0]).toMatchObject({ to: 'c', reason: 'rebalanceJoin' });
    }
    // Same result as planning each VIP on its own.
    for (const v of spec.vips) {
      const alone = planVip({
        vip: v.address,
        buckets: v.buckets,
        nodes: [...nodes, node('c')],
        current: current.get(v.address)!,
        joinMoveBudget: 1,
      });
      expect(joined.get(v.address)).toEqual(alone);
    }
  });

  it('spreads ties well: 1,000 nodes and 4,096 buckets give every node 4 or 5', () => {
    const nodes = Array.from({ length: 1000 }, (_, i) => node(`node-${i}`));
    const p = plan(nodes, new Map(), 0, 4096);
    const counts = Object.values(loads(p));
    expect(counts).toHaveLength(1000);
    expect(Math.min(...counts)).toBe(4);
    expect(Math.max(...counts)).toBe(5);
  });
});
