import { statusValue } from '../helpers/fixtures.js';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { validateClusterSpec } from '../../src/config/index.js';
import { emptyClusterState, type ClusterState } from '../../src/etcd/store.js';
import type { StatusValue } from '../../src/etcd/values.js';
import { ANOMALY_GRACE_MS, buildStatus, nextSettleInMs, settle } from '../../src/cli/statusModel.js';
import { drainProgress, drainVerdict } from '../../src/cli/drainPlan.js';
import { flushMoves, foldPicture, MOVE_QUIET_MS, newChangeTracker } from '../../src/agent/changeLog.js';
import { whoisOnline } from '../../src/cli/commands/whois.js';
import { bucketOf } from '../../src/hash/index.js';

// Pure status rules over hand-built cluster pictures (the e2e tests cover the real etcd side).

const VIP = '10.77.0.100';
const spec = validateClusterSpec({ vips: [{ address: VIP, interface: 'eth0', buckets: 4, seed: 7 }] }, 'test');

function node(s: ClusterState, id: string, o: { draining?: boolean; weight?: number } = {}) {
  s.nodes.set(id, {
    value: { v: 1, address: '', weight: o.weight ?? 1, draining: o.draining ?? false, version: '0.1.0', startedAt: '' },
    lease: `${id.charCodeAt(1)}00`,
    modRevision: '5',
  });
}
function status(s: ClusterState, id: string, held: number[], o: Partial<StatusValue> = {}) {
  s.statuses.set(id, statusValue(VIP, held, { lastApplyAt: '2026-01-01T00:00:01.000Z', ...o }));
}
function claims(s: ClusterState, owners: Record<number, string>) {
  s.claims.set(
    VIP,
    new Map(Object.entries(owners).map(([b, o]) => [Number(b), { owner: o, lease: '1', createRevision: '1' }])),
  );
}
function assign(s: ClusterState, owners: Record<number, string>) {
  s.assignments.set(VIP, {
    value: { v: 1, epoch: 3, leader: 'n1', owners: Object.fromEntries(Object.entries(owners).map(([b, o]) => [b, o])) },
    modRevision: '9',
  });
}
/** Two nodes, every bucket settled. */
function healthy(): ClusterState {
  const s = emptyClusterState();
  s.revision = '42';
  s.spec = { spec, generation: 2, modRevision: '3' };
  s.leader = 'n1';
  node(s, 'n1');
  node(s, 'n2');
  claims(s, { 1: 'n1', 2: 'n2', 3: 'n1', 4: 'n2' });
  assign(s, { 1: 'n1', 2: 'n2', 3: 'n1', 4: 'n2' });
  status(s, 'n1', [1, 3]);
  status(s, 'n2', [2, 4]);
  return s;
}
const kinds = (s: ClusterState) => buildStatus({ cluster: 'c', state: s }).anomalies.map((a) => a.kind);

describe('buildStatus', () => {
  it('reports a settled cluster healthy with owner == assigned == backend', () => {
    const r = buildStatus({ cluster: 'c', state: healthy(), leaseTtls: new Map([['4900', 2]]) });
    expect(r.healthy).toBe(true);
    expect(r.anomalies).toEqual([]);
    expect(r.leader).toBe('n1');
    expect(r.nodes.map((n) => [n.id, n.claims, n.leader, n.leaseTtlLeft])).toEqual([
      ['n1', 2, true, 2],
      ['n2', 2, false, null],
    ]);
    expect(r.vips[0]!.buckets[1]).toEqual({ bucket: 2, owner: 'n2', assigned: 'n2', backend: 'n2' });
  });

  it('finds unowned, claim != assignment, backend != claim and double backends; errors first', () => {
    const s = healthy();
    claims(s, { 1: 'n1', 2: 'n1', 4: 'n2' }); // 3 unowned; 2 claimed by n1 but assigned n2
    status(s, 'n2', [2, 4, 1]); // n2's backend also holds 1 (double with n1)
    s.badValues.push({ key: '/x', error: 'bad' });
    const r = buildStatus({ cluster: 'c', state: s });
    expect(r.healthy).toBe(false);
    const k = r.anomalies.map((a) => `${a.kind}:${a.bucket ?? ''}`);
    expect(k).toEqual(
      expect.arrayContaining([
        'unowned:3',
        'claimNotAssigned:2',
        'doubleBackend:1',
        'backendNotClaim:2',
        'backendNotClaim:3',
      ]),
    );
    expect(r.anomalies.at(-1)!.kind).toBe('badValue');
    expect(r.anomalies.at(-1)!.severity).toBe('warning');
  });

  it('no spec, no nodes, no leader', () => {
    expect(kinds(emptyClusterState())).toEqual(['noSpec', 'noNodes']);
    const s = healthy();
    s.leader = null;
    expect(kinds(s)).toEqual(['noLeader']);
  });

  it('a fenced node, a current backend error and a pending drain are reported; an old error is not', () => {
    const s = healthy();
    status(s, 'n2', [2, 4], { fenced: true, lastError: 'EIO', lastErrorAt: '2026-01-01T00:00:02.000Z' });
    node(s, 'n1', { draining: true });
    const k = kinds(s);
    expect(k).toEqual(expect.arrayContaining(['fenced', 'backendError', 'drainPending']));
    status(s, 'n2', [2, 4], { lastError: 'EIO', lastErrorAt: '2026-01-01T00:00:00.000Z' });
    expect(kinds(s)).not.toContain('backendError');
  });

  it('shows a dead node that still has claims as not alive', () => {
    const s = healthy();
    s.nodes.delete('n2');
    s.statuses.delete('n2');
    const r = buildStatus({ cluster: 'c', state: s });
    expect(r.nodes.find((n) => n.id === 'n2')).toMatchObject({ alive: false, claims: 2, weight: null });
  });
});

describe('drainProgress', () => {
  it('waits while the node owns buckets, is stuck without another node, done when it owns nothing', () => {
    const s = healthy();
    expect(drainProgress(s, 'n2')).toEqual({ state: 'waiting', owned: 2, byVip: { [VIP]: 2 } });
    node(s, 'n1', { draining: true });
    expect(drainProgress(s, 'n2')).toMatchObject({ state: 'stuck', reason: 'noOtherNode' });
    claims(s, { 1: 'n1', 2: 'n1', 3: 'n1', 4: 'n1' });
    expect(drainProgress(s, 'n2')).toEqual({ state: 'done', reason: 'ownsNothing' });
    s.nodes.delete('n2');
    expect(drainProgress(s, 'n2')).toEqual({ state: 'done', reason: 'nodeGone' });
  });
});

describe('whoisOnline', () => {
  it('hashes like the kernel and reports claim, assignment and backend of that bucket', () => {
    const s = healthy();
    const [a] = whoisOnline(s, '192.0.2.9', { saddr: '192.0.2.9' });
    const b = bucketOf(spec.vips[0]!, 'nftables', { saddr: '192.0.2.9' });
    const owner = b % 2 === 1 ? 'n1' : 'n2';
    expect(a).toEqual({
      client: '192.0.2.9',
      vip: VIP,
      bucket: b,
      owner,
      assigned: owner,
      backend: owner,
      hashedAs: 'nftables',
    });
    expect(() => whoisOnline(s, '192.0.2.9', { saddr: '192.0.2.9' }, '10.9.9.9')).toThrow(/not in the spec/);
    expect(() => whoisOnline(emptyClusterState(), '192.0.2.9', { saddr: '192.0.2.9' })).toThrow(/no cluster spec/);
  });

  it('answers only the VIPs whose hash mode the given ports serve, and says which it skipped', () => {
    const s = healthy();
    const two = validateClusterSpec(
      {
        vips: [
          { address: VIP, interface: 'eth0', buckets: 4, seed: 7 },
          { address: '10.77.0.101', interface: 'eth0', buckets: 4, seed: 7, hashMode: 'sourceip-sourceport' },
        ],
      },
      'test',
    );
    s.spec = { spec: two, generation: 1, modRevision: '1' };
    const skipped: string[] = [];
    const answers = whoisOnline(s, '192.0.2.9', { saddr: '192.0.2.9' }, undefined, undefined, skipped);
    expect(answers.map((a) => a.vip)).toEqual([VIP]);
    expect(skipped).toEqual(['10.77.0.101: hash mode sourceip-sourceport needs --sport']);
    expect(() => whoisOnline(s, '192.0.2.9', { saddr: '192.0.2.9' }, '10.77.0.101')).toThrow(/needs --sport/);
    const withPort = whoisOnline(s, '192.0.2.9', { saddr: '192.0.2.9', sport: 4000 }, '10.77.0.101', 'clusterip');
    expect(withPort[0]!.bucket).toBe(bucketOf(two.vips[1]!, 'clusterip', { saddr: '192.0.2.9', sport: 4000 }));
  });
});

describe('buildStatus: service health', () => {
  const check = (state: 'up' | 'down', output: string) => ({
    name: 'web',
    type: 'tcp' as const,
    state,
    since: '2026-01-01T00:00:00.000Z',
    last: { ok: state === 'up', at: '2026-01-01T00:00:01.000Z', durationMs: 0.3, output },
    transitions: 1,
    flaps: 0,
  });
  const withHealth = (s: ClusterState, id: string, health: string | undefined, state: 'up' | 'down', output = '') => {
    const n = s.nodes.get(id)!;
    s.nodes.set(id, { ...n, value: { ...n.value, ...(health !== undefined ? { health } : {}) } });
    const st = s.statuses.get(id)!;
    s.statuses.set(id, {
      ...st,
      health: { checks: [check(state, output)], drain: health ?? null, drainSince: null, maintenance: false },
    });
  };

  it('shows a health-drained node as a warning with its failing check, and its checks per node', () => {
    const s = healthy();
    withHealth(s, 'n1', undefined, 'up', 'connected');
    withHealth(s, 'n2', 'unhealthy:web', 'down', 'connect ECONNREFUSED');
    const r = buildStatus({ cluster: 'c', state: s });
    expect(r.panic).toBeNull();
    expect(r.nodes.map((n) => [n.id, n.health, n.panicKept, n.checks?.[0]?.state])).toEqual([
      ['n1', null, false, 'up'],
      ['n2', 'unhealthy:web', false, 'down'],
    ]);
    expect(r.anomalies.find((a) => a.kind === 'unhealthy')).toMatchObject({
      severity: 'warning',
      node: 'n2',
      detail: 'n2 is drained (unhealthy:web): web: connect ECONNREFUSED',
    });
  });

  it('every node failing: the panic threshold is an error naming the node kept serving', () => {
    const s = healthy();
    withHealth(s, 'n1', 'unhealthy:web', 'down');
    withHealth(s, 'n2', 'maintenance', 'up');
    const r = buildStatus({ cluster: 'c', state: s });
    expect(r.panic).toEqual({ kept: ['n1'], healthy: 0, minHealthyNodes: 1 });
    expect(r.healthy).toBe(false);
    expect(r.nodes.map((n) => n.panicKept)).toEqual([true, false]);
    expect(kinds(s)).toContain('healthPanic');
  });
});

describe('health that means what it says', () => {
  it('a VIP nobody can serve is unhealthy at once (no grace), even with every node drained', () => {
    const s = healthy();
    node(s, 'n1', { draining: true });
    node(s, 'n2', { draining: true });
    s.claims.clear();
    const r = settle(buildStatus({ cluster: 'c', state: s }), new Map(), 1000);
    expect(r.health).toBe('unhealthy');
    expect(r.anomalies.filter((a) => a.kind === 'unowned')).toHaveLength(4);
    expect(r.anomalies.find((a) => a.kind === 'unowned')!.graceMs).toBe(0);
  });

  it('a transient anomaly settles within its grace and counts once it outlasts it', () => {
    const s = healthy();
    claims(s, { 1: 'n1', 2: 'n1', 3: 'n1', 4: 'n2' }); // a handoff in flight: 2 assigned to n2
    status(s, 'n1', [1, 2, 3]);
    status(s, 'n2', [4]);
    const seen = new Map<string, number>();
    const t0 = settle(buildStatus({ cluster: 'c', state: s }), seen, 10_000);
    expect(t0.health).toBe('healthy');
    expect(t0.settling.map((a) => a.kind)).toEqual(['claimNotAssigned']);
    expect(nextSettleInMs(t0)).toBe(ANOMALY_GRACE_MS.claimNotAssigned);
    const t1 = settle(buildStatus({ cluster: 'c', state: s }), seen, 10_000 + ANOMALY_GRACE_MS.claimNotAssigned);
    expect(t1.health).toBe('unhealthy');
    expect(t1.anomalies.map((a) => a.kind)).toEqual(['claimNotAssigned']);
    // Gone in between: the clock starts over.
    settle(buildStatus({ cluster: 'c', state: healthy() }), seen, 20_000);
    expect(settle(buildStatus({ cluster: 'c', state: s }), seen, 21_000).health).toBe('healthy');
  });

  it('a known member without a lease is DOWN and the cluster degraded; unknown leftovers are not members', () => {
    const s = healthy();
    s.members.set('n1', { v: 1, firstSeenAt: '', address: '' });
    s.members.set('n3', { v: 1, firstSeenAt: '', address: '' });
    const r = buildStatus({ cluster: 'c', state: s });
    expect(r.health).toBe('degraded');
    expect(r.healthy).toBe(false);
    expect(r.nodes.find((n) => n.id === 'n3')).toMatchObject({ state: 'down', member: true, alive: false });
    expect(r.nodes.find((n) => n.id === 'n1')).toMatchObject({ state: 'up', member: true });
    expect(r.anomalies.map((a) => [a.kind, a.severity])).toEqual([['nodeDown', 'degraded']]);
  });

  it('docs/status-json.md documents every grace as ANOMALY_GRACE_MS has it', () => {
    const text = readFileSync(new URL('../../docs/status-json.md', import.meta.url), 'utf8');
    const table = text.slice(text.indexOf('## Grace'));
    const documented = new Map<string, number>();
    for (const m of table.matchAll(/^\|\s*`(\w+)`\s*\|\s*(\d+)( s)?\s*\|/gm))
      documented.set(m[1]!, Number(m[2]) * (m[3] ? 1000 : 1));
    expect(Object.fromEntries(documented)).toEqual(ANOMALY_GRACE_MS);
  });

  it('drain refuses the last node that can take buckets', () => {
    const s = healthy();
    expect(drainVerdict(s, 'n1')).toEqual({ ok: true });
    node(s, 'n2', { draining: true });
    expect(drainVerdict(s, 'n1')).toEqual({ ok: false, reason: 'lastNode', vips: 1 });
    s.spec = null;
    expect(drainVerdict(s, 'n1')).toEqual({ ok: true });
  });
});

describe('the change log fold', () => {
  it('a lost node, its buckets re-claimed by two others: one nodeLost, one bucketsMoved with the failover time', () => {
    const t = newChangeTracker();
    const s = healthy();
    // The first picture is the baseline; a node that joins is the recorder's (with its member record).
    s.members.set('n1', { v: 1, firstSeenAt: '', address: '' });
    expect(foldPicture(t, s, 0)).toEqual([]);
    node(s, 'n3');
    expect(foldPicture(t, s, 10)).toEqual([]);
    node(s, 'n2');
    s.nodes.get('n2')!.lease = '777';
    expect(foldPicture(t, s, 20).map((d) => [d.kind, d.node])).toEqual([['nodeBack', 'n2']]);
    s.nodes.delete('n1');
    s.statuses.delete('n1');
    claims(s, { 2: 'n2', 4: 'n2' });
    expect(foldPicture(t, s, 1000).map((d) => [d.kind, d.node])).toEqual([['nodeLost', 'n1']]);
    claims(s, { 1: 'n2', 2: 'n2', 4: 'n2' });
    expect(foldPicture(t, s, 1500)).toEqual([]);
    expect(flushMoves(t, 1600, '50')).toEqual([]); // bucket 3 still unowned: wait
    claims(s, { 1: 'n2', 2: 'n2', 3: 'n3', 4: 'n2' });
    foldPicture(t, s, 2200);
    expect(flushMoves(t, 2200, '51')).toEqual([]); // not quiet yet
    const [moved, ...rest] = flushMoves(t, 2200 + MOVE_QUIET_MS, '52');
    expect(rest).toEqual([]);
    expect(moved).toMatchObject({
      kind: 'bucketsMoved',
      vip: VIP,
      from: 'n1',
      to: { n2: 1, n3: 1 },
      buckets: 2,
      failoverMs: 1200,
    });
  });

  it('a handoff (claim replaced in one txn) moves with 0 ms unowned; draining and fencing are changes', () => {
    const t = newChangeTracker();
    const s = healthy();
    foldPicture(t, s, 0);
    node(s, 'n1', { draining: true });
    status(s, 'n2', [2, 4], { fenced: true });
    expect(foldPicture(t, s, 5).map((d) => d.kind)).toEqual(['nodeDraining', 'nodeFenced']);
    claims(s, { 1: 'n2', 2: 'n2', 3: 'n1', 4: 'n2' });
    foldPicture(t, s, 10);
    expect(flushMoves(t, 1000, '9')).toMatchObject([{ from: 'n1', to: { n2: 1 }, failoverMs: 0 }]);
  });
});
