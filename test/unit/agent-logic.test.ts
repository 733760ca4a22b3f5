import type { IKeyValue } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { planAssignments } from '../../src/agent/assignments.js';
import { logLineFor } from '../../src/agent/daemon.js';
import { decideLeadership } from '../../src/agent/election.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { defaultFenceMarginMs, fenceDeadline } from '../../src/agent/session.js';
import type { ClusterSpec } from '../../src/config/types.js';
import { keysFor } from '../../src/etcd/keys.js';
import { applyDelete, applyPut, emptyClusterState } from '../../src/etcd/store.js';

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
      current: new Map([['10.0.0.1', { epoch: 1, owners }]]),
      joinBudgetLeft: () => 1,
    });
    expect(again.writes).toEqual([]);
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
    expect(applyPut(st, keys, kv(keys.node('n1'), '{bad', '3')).ok).toBe(false);
    expect(st.nodes.get('n1')?.lease).toBe('7');
    expect(st.badValues.map((b) => b.key)).toEqual([keys.node('n1')]);
    applyPut(st, keys, kv(keys.node('n1'), node, '4', '8'));
    expect(st.badValues).toEqual([]);
    applyPut(st, keys, kv(keys.claim('10.0.0.1', 3), 'n1', '5', '8'));
    applyPut(st, keys, kv(`${keys.electionName}/b`, 'n2', '9'));
    applyPut(st, keys, kv(`${keys.electionName}/a`, 'n1', '6'));
    expect(st.leader).toBe('n1');
    applyDelete(st, keys, `${keys.electionName}/a`);
    expect(st.leader).toBe('n2');
    expect(st.claims.get('10.0.0.1')?.get(3)?.owner).toBe('n1');
    applyDelete(st, keys, keys.claim('10.0.0.1', 3));
    expect(st.claims.size).toBe(0);
    expect(applyPut(st, keys, kv(`${keys.prefix}odd/key`, 'x')).ok).toBe(false);
  });
});

describe('daemon log vocabulary', () => {
  it('every event maps to one line with an op', () => {
    const evs: AgentEvent[] = [
      { event: 'sessionStarted', leaseId: '1', ttlSeconds: 2 },
      { event: 'fenced', reason: 'deadlinePassed', buckets: 3 },
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
