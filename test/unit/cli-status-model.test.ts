import { statusValue } from '../helpers/fixtures.js';
import { describe, expect, it } from 'vitest';
import { validateClusterSpec } from '../../src/config/index.js';
import { emptyClusterState, type ClusterState } from '../../src/etcd/store.js';
import type { StatusValue } from '../../src/etcd/values.js';
import { buildStatus } from '../../src/cli/statusModel.js';
import { drainProgress } from '../../src/cli/drainPlan.js';
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
