import type { IKeyValue } from 'etcd3';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { planAssignments } from '../../src/agent/assignments.js';
import { hashIdentity } from '../../src/hash/identity.js';
import { logLineFor } from '../../src/agent/daemon.js';
import { decideLeadership } from '../../src/agent/election.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { fenceDeadline } from '../../src/agent/session.js';
import { defaultFenceMarginMs } from '../../src/config/index.js';
import type { ClusterSpec } from '../../src/config/types.js';
import { keysFor, parseKey } from '../../src/etcd/keys.js';
import { chunk, MAX_TXN_OPS } from '../../src/agent/rebalancer.js';
import { NODE_WITHOUT_LEASE, applyDelete, applyPut, emptyClusterState } from '../../src/etcd/store.js';

const spec: ClusterSpec = {
  vips: [
    {
      address: '10.0.0.1',
      interface: 'eth0',
      buckets: 4,
      hashMode: 'sourceip',
      seed: 1,
      clusterMac: '01:00:5e:00:00:01',
      sticky: false,
    },
  ],
  rebalance: { joinMovesPerInterval: 1, intervalMs: 100 },
};

describe('fence deadline', () => {
  it('is t_send + TTL − margin, margin at most half the TTL', () => {
    expect(defaultFenceMarginMs(2)).toBe(500);
    expect(defaultFenceMarginMs(1)).toBe(250);
    expect(fenceDeadline(1000, 2, 500)).toBe(2500);
    expect(fenceDeadline(0, 1, 5000)).toBe(500);
  });
});

describe('decideLeadership', () => {
  const c = (key: string, rev: string) => ({ key, node: key, lease: '1', createRevision: rev });
  it('lowest create revision leads', () => {
    expect(decideLeadership([c('a', '5'), c('b', '7')], '9', { key: 'a', createRevision: '5' })).toEqual({
      role: 'leader',
    });
    expect(decideLeadership([c('a', '5'), c('b', '7')], '9', { key: 'b', createRevision: '7' })).toEqual({
      role: 'follower',
      leader: 'a',
    });
  });
  it('a key missing from a picture newer than it was deleted; older picture: pending', () => {
    expect(decideLeadership([c('a', '5')], '9', { key: 'b', createRevision: '7' })).toEqual({
      role: 'lost',
      reason: 'keyDeleted',
    });
    expect(decideLeadership([c('a', '5')], '6', { key: 'b', createRevision: '7' })).toEqual({ role: 'pending' });
    expect(decideLeadership([c('b', '12')], '12', { key: 'b', createRevision: '7' })).toEqual({
      role: 'lost',
      reason: 'keyReplaced',
    });
  });
});

describe('planAssignments', () => {
  const nodes = [
    { id: 'a', weight: 1, draining: false },
    { id: 'b', weight: 1, draining: false },
  ];
  it('writes only when owners change, with the next epoch', () => {
    const first = planAssignments({ leader: 'a', spec, nodes, current: new Map(), joinBudgetLeft: () => 1 });
    expect(first.writes).toHaveLength(1);
    const w = first.writes[0]!;
    expect(w.value.epoch).toBe(1);
    expect(Object.keys(w.value.owners)).toHaveLength(4);
    const owners = new Map(Object.entries(w.value.owners).map(([b, n]) => [Number(b), n]));
    const again = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: new Map([['10.0.0.1', { epoch: 1, owners, buckets: 4, hash: hashIdentity(spec.vips[0]!) }]]),
      joinBudgetLeft: () => 1,
    });
    expect(again.writes).toEqual([]);
    expect(w.value.buckets).toBe(4);
    expect(w.value.hash).toBe('4/sourceip/0x00000001');
    // A value of an older leader (no hash, same count) is stamped in place: no barrier, same owners.
    const stamped = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: new Map([['10.0.0.1', { epoch: 1, owners, buckets: 4 }]]),
      joinBudgetLeft: () => 1,
    });
    expect(stamped.writes[0]?.value.owners).toEqual(w.value.owners);
    expect(stamped.writes[0]?.value.hash).toBe(w.value.hash);
    const rewrite = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: new Map([['10.0.0.1', { epoch: 1, owners }]]),
      joinBudgetLeft: () => 1,
      rewrite: new Set(['10.0.0.1']),
    });
    expect(rewrite.writes[0]?.value.epoch).toBe(2);
  });
  it('treats a new bucket count as a new bucket space: empty first, assign only once no claim is left', () => {
    const owners = new Map([
      [1, 'a'],
      [2, 'b'],
      [3, 'a'],
      [4, 'b'],
      [5, 'a'],
      [6, 'b'],
    ]);
    // Stored for 6 buckets (an older leader's value without the field: inferred from the owners); the spec says 4.
    const reset = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: new Map([['10.0.0.1', { epoch: 7, owners }]]),
      joinBudgetLeft: () => 1,
    });
    expect(reset.writes.map((w) => w.value)).toEqual([
      { v: 1, epoch: 8, leader: 'a', owners: {}, buckets: 4, hash: '4/sourceip/0x00000001' },
    ]);
    const empty = new Map([
      ['10.0.0.1', { epoch: 8, owners: new Map<number, string>(), buckets: 4, hash: '4/sourceip/0x00000001' }],
    ]);
    const waiting = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: empty,
      joinBudgetLeft: () => 1,
      claimsLeft: () => 3,
    });
    expect(waiting.writes).toEqual([]);
    const fresh = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: empty,
      joinBudgetLeft: () => 1,
      claimsLeft: () => 0,
    });
    expect(Object.keys(fresh.writes[0]!.value.owners)).toHaveLength(4);
    expect(fresh.writes[0]!.value.buckets).toBe(4);
  });
  it('goes through the empty barrier on every change of hash identity, and only then (DESIGN §12)', () => {
    const modes = ['sourceip', 'sourceip-sourceport', 'sourceip-sourceport-destport'] as const;
    const identity = fc.record({
      buckets: fc.integer({ min: 1, max: 64 }),
      hashMode: fc.constantFrom(...modes),
      seed: fc.integer({ min: 0, max: 0xffffffff }),
    });
    fc.assert(
      fc.property(identity, identity, fc.boolean(), (was, now, sameCount) => {
        const next = { ...spec.vips[0]!, ...now, ...(sameCount ? { buckets: was.buckets } : {}) };
        const owners = new Map<number, string>();
        for (let b = 1; b <= was.buckets; b++) owners.set(b, b % 2 ? 'a' : 'b');
        const p = planAssignments({
          leader: 'a',
          spec: { ...spec, vips: [next] },
          nodes,
          current: new Map([['10.0.0.1', { epoch: 3, owners, buckets: was.buckets, hash: hashIdentity(was) }]]),
          joinBudgetLeft: () => 0,
          claimsLeft: () => was.buckets,
        });
        const changed = hashIdentity(was) !== hashIdentity(next);
        const w = p.writes[0];
        if (changed) {
          expect(w?.barrier).toBe(true);
          expect(w?.value.owners).toEqual({});
          expect(w?.value.hash).toBe(hashIdentity(next));
        } else {
          expect(w?.barrier ?? false).toBe(false);
          if (w) expect(Object.keys(w.value.owners)).toHaveLength(next.buckets);
        }
      }),
      { numRuns: 500 },
    );
  });
  it('reassigns a dead owner and deletes VIPs gone from the spec', () => {
    const owners = new Map([
      [1, 'a'],
      [2, 'dead'],
      [3, 'b'],
      [4, 'a'],
    ]);
    const p = planAssignments({
      leader: 'a',
      spec,
      nodes,
      current: new Map([
        ['10.0.0.1', { epoch: 3, owners }],
        ['10.0.0.9', { epoch: 1, owners: new Map() }],
      ]),
      joinBudgetLeft: () => 0,
    });
    expect(p.writes[0]!.moves).toEqual([{ bucket: 2, from: 'dead', to: 'b', reason: 'ownerDead' }]);
    expect(p.deletes).toEqual(['10.0.0.9']);
  });
});

describe('store fold', () => {
  const keys = keysFor('c');
  const kv = (key: string, value: string, rev = '2', lease = '0'): IKeyValue =>
    ({
      key: Buffer.from(key),
      value: Buffer.from(value),
      create_revision: rev,
      mod_revision: rev,
      version: '1',
      lease,
    }) as IKeyValue;
  it('decodes families, keeps the last good value over garbage, lists garbage with its key', () => {
    const st = emptyClusterState();
    const node = JSON.stringify({ v: 1, address: 'h', weight: 1, draining: false, version: '1', startedAt: 'x' });
    expect(applyPut(st, keys, kv(keys.node('n1'), node, '2', '7')).ok).toBe(true);
    expect(applyPut(st, keys, kv(keys.node('n1'), '{bad', '3', '7')).ok).toBe(false);
    expect(st.nodes.get('n1')?.lease).toBe('7');
    expect(st.badValues.map((b) => b.key)).toEqual([keys.node('n1')]);
    applyPut(st, keys, kv(keys.node('n1'), node, '4', '8'));
    expect(st.badValues).toEqual([]);
    applyPut(st, keys, kv(keys.claim('10.0.0.1', 3), 'n1', '5', '8'));
    applyPut(st, keys, kv(`${keys.electionName}/b`, 'n2', '9', '11'));
    applyPut(st, keys, kv(`${keys.electionName}/a`, 'n1', '6', '10'));
    expect(st.leader).toBe('n1');
    applyDelete(st, keys, `${keys.electionName}/a`);
    expect(st.leader).toBe('n2');
    expect(st.claims.get('10.0.0.1')?.get(3)?.owner).toBe('n1');
    applyDelete(st, keys, keys.claim('10.0.0.1', 3));
    expect(st.claims.size).toBe(0);
    expect(applyPut(st, keys, kv(`${keys.prefix}odd/key`, 'x')).ok).toBe(false);
  });

  it('a node key outside any lease is no node; garbage over a claim leaves the bucket unclaimed', () => {
    const st = emptyClusterState();
    const node = JSON.stringify({ v: 1, address: 'h', weight: 1, draining: false, version: '1', startedAt: 'x' });
    applyPut(st, keys, kv(keys.node('n1'), node, '2', '7'));
    // A put without a lease detaches the key: it would outlive its agent and count as live forever.
    expect(applyPut(st, keys, kv(keys.node('n1'), node, '3', '0')).ok).toBe(false);
    expect(st.nodes.has('n1')).toBe(false);
    expect(st.badValues).toEqual([{ key: keys.node('n1'), error: NODE_WITHOUT_LEASE, modRevision: '3' }]);
    applyPut(st, keys, kv(keys.claim('10.0.0.1', 3), 'n1', '5', '8'));
    expect(applyPut(st, keys, kv(keys.claim('10.0.0.1', 3), '{bad', '6', '8')).ok).toBe(false);
    // Its former owner must let go in the kernel (kernel ⊆ claims): the picture holds no claim for it.
    expect(st.claims.get('10.0.0.1')?.has(3)).toBe(false);
  });

  it('drops a candidate not under the lease its key names, in a fresh fold and over a good value alike', () => {
    const st = emptyClusterState();
    applyPut(st, keys, kv(`${keys.electionName}/a`, 'n1', '6', '10'));
    applyPut(st, keys, kv(`${keys.electionName}/b`, 'n2', '9', '11'));
    expect(st.leader).toBe('n1');
    // A put over the leader's key without a lease (what a full read would also see): not a candidate.
    const o = applyPut(st, keys, kv(`${keys.electionName}/a`, 'n1', '12', '0'));
    expect(o.ok).toBe(false);
    expect(st.leader).toBe('n2');
    expect(st.badValues).toEqual([{ key: `${keys.electionName}/a`, error: expect.any(String), modRevision: '12' }]);
    const fresh = emptyClusterState();
    applyPut(fresh, keys, kv(`${keys.electionName}/a`, 'n1', '12', '0'));
    applyPut(fresh, keys, kv(`${keys.electionName}/b`, 'n2', '9', '11'));
    expect(fresh.leader).toBe(st.leader);
    // Garbage value under a right lease is not a candidate either.
    applyPut(st, keys, kv(`${keys.electionName}/b`, 'bad@id', '13', '11'));
    expect(st.leader).toBe(null);
  });

  it('treats a claim without a lease as garbage and ignores node keys with invalid ids', () => {
    const st = emptyClusterState();
    expect(applyPut(st, keys, kv(keys.claim('10.0.0.1', 2), 'n1', '5', '0')).ok).toBe(false);
    expect(st.claims.size).toBe(0);
    expect(st.badValues[0]?.modRevision).toBe('5');
    const node = JSON.stringify({ v: 1, address: 'h', weight: 1, draining: false, version: '1', startedAt: 'x' });
    expect(applyPut(st, keys, kv(`${keys.nodesPrefix}bad@id`, node, '6', '7')).ok).toBe(false);
    expect(applyPut(st, keys, kv(`${keys.statusPrefix}bad@id`, '{}', '6', '7')).ok).toBe(false);
    expect(st.nodes.size).toBe(0);
    expect(parseKey(keys, `${keys.nodesPrefix}bad@id`).family).toBe('unknown');
    expect(parseKey(keys, keys.node('n-1.a_b'))).toEqual({ family: 'node', node: 'n-1.a_b' });
  });
});

describe('rebalancer txn chunks', () => {
  it('splits 256 VIP writes into fenced txns etcd accepts (at most 127 ops each)', () => {
    const parts = chunk(
      Array.from({ length: 256 }, (_, i) => i),
      MAX_TXN_OPS,
    );
    expect(parts.map((p) => p.length)).toEqual([127, 127, 2]);
    expect(parts.flat()).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect(MAX_TXN_OPS).toBeLessThan(128);
  });
});

describe('daemon log vocabulary', () => {
  it('every event maps to one line with an op', () => {
    const evs: AgentEvent[] = [
      { event: 'sessionStarted', leaseId: '1', ttlSeconds: 2 },
      { event: 'fenced', reason: 'deadlinePassed', buckets: 3, cleared: true },
      { event: 'acquired', vip: 'v', bucket: 1, durationMs: 2 },
      { event: 'released', vip: 'v', bucket: 1, reason: 'draining', durationMs: 2 },
      { event: 'badValue', key: 'k', error: 'e' },
      { event: 'shutdown', phase: 'done' },
    ];
    for (const e of evs) {
      const l = logLineFor(e);
      expect(l.op.length).toBeGreaterThan(0);
    }
    expect(logLineFor(evs[3]!).fields).toMatchObject({ vip: 'v', bucket: 1, reason: 'draining' });
    expect(logLineFor(evs[4]!).fields).toMatchObject({ key: 'k', reason: 'badValue' });
  });
});

describe('daemon log vocabulary: service health', () => {
  it('health events log with op check/health, a reason, and a loud level for a panic', () => {
    const down = logLineFor({ event: 'checkTransition', check: 'web', state: 'down', flap: false, output: 'refused' });
    expect(down).toMatchObject({ level: 'warn', op: 'check', fields: { check: 'web', state: 'down' } });
    const failed = logLineFor({
      event: 'checkResult',
      check: 'web',
      ok: false,
      state: 'up',
      failure: 'timeout',
      durationMs: 500,
      output: '',
    });
    expect(failed).toMatchObject({ level: 'debug', op: 'check', fields: { reason: 'timeout' } });
    expect(logLineFor({ event: 'healthDrain', change: 'drain', reason: 'maintenance' })).toMatchObject({
      level: 'warn',
      op: 'health',
      fields: { change: 'drain', reason: 'maintenance' },
    });
    const panic = logLineFor({ event: 'healthPanic', panic: true, kept: ['n1'], healthy: 0, minHealthyNodes: 1 });
    expect(panic).toMatchObject({ level: 'error', op: 'health', fields: { reason: 'panicThreshold', kept: ['n1'] } });
  });
});
