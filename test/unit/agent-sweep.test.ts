import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BAD_VALUE_HOLD_MS, planSweep, type SweepInputs } from '../../src/agent/sweep.js';
import { keysFor } from '../../src/etcd/keys.js';
import { CLAIM_WITHOUT_LEASE, NODE_WITHOUT_LEASE, emptyClusterState, type ClusterState } from '../../src/etcd/store.js';
import { statusValue } from '../helpers/fixtures.js';

const keys = keysFor('t');
const VIP = '10.0.0.1';
const HOLD = 3000;
const nodeIds = ['a', 'b', 'c'];
const leases = ['La', 'Lb', 'Lc', 'Lx'];

const status = (held: number[]) => statusValue(VIP, held);

/** A random picture: nodes a..c (some absent), claims naming any of them (or a ghost) under any lease. */
const picture = fc
  .record({
    present: fc.subarray(nodeIds),
    claims: fc.array(fc.record({ owner: fc.constantFrom(...nodeIds, 'ghost'), lease: fc.constantFrom(...leases) }), {
      maxLength: 8,
    }),
    held: fc.array(fc.subarray([1, 2, 3, 4, 5, 6, 7, 8]), { minLength: 3, maxLength: 3 }),
  })
  .map(({ present, claims, held }) => {
    const st: ClusterState = emptyClusterState();
    for (const id of present)
      st.nodes.set(id, {
        lease: `L${id}`,
        modRevision: '1',
        value: { v: 1, address: id, weight: 1, draining: false, version: '0', startedAt: '' },
      });
    const m = new Map(
      claims.map((c, i) => [i + 1, { ...c, createRevision: String(10 + i), modRevision: String(10 + i) }]),
    );
    st.claims.set(VIP, m);
    nodeIds.forEach((id, i) => st.statuses.set(id, status(held[i]!)));
    return st;
  });

const inputs = (state: ClusterState, now: number, since: SweepInputs['since'] = new Map()): SweepInputs => ({
  state,
  keys,
  now,
  since,
  holdMs: HOLD,
});

describe('planSweep', () => {
  it('never deletes a claim its named node holds under its own lease, nor one a node reports in its kernel', () => {
    fc.assert(
      fc.property(picture, (st) => {
        // Seen long enough ago that only the two rules can keep a claim.
        const first = planSweep(inputs(st, 0));
        const { decisions } = planSweep(inputs(st, HOLD + 1, first.since));
        for (const d of decisions.filter((x) => x.action === 'delete')) {
          const bucket = Number(d.key.split('/').at(-1));
          const c = st.claims.get(VIP)!.get(bucket)!;
          expect(st.nodes.get(c.owner)?.lease).not.toBe(c.lease);
          for (const s of st.statuses.values()) expect(s.held[VIP]).not.toContain(bucket);
        }
      }),
    );
  });

  it('a ghost waits out the hold, then goes once nobody reports its bucket held', () => {
    fc.assert(
      fc.property(picture, fc.integer({ min: 0, max: HOLD - 1 }), (st, early) => {
        const first = planSweep(inputs(st, 0));
        expect(planSweep(inputs(st, early, first.since)).decisions.some((d) => d.action === 'delete')).toBe(false);
      }),
    );
    const st = emptyClusterState();
    st.claims.set(VIP, new Map([[3, { owner: 'ghost', lease: 'Lx', createRevision: '5', modRevision: '7' }]]));
    st.statuses.set('a', status([3]));
    const first = planSweep(inputs(st, 0));
    expect(first.decisions).toMatchObject([{ action: 'wait', reason: 'holding', sweep: 'claimGhost' }]);
    expect(planSweep(inputs(st, HOLD, first.since)).decisions).toMatchObject([
      { action: 'wait', reason: 'heldInKernel' },
    ]);
    st.statuses.set('a', status([]));
    expect(planSweep(inputs(st, HOLD, first.since)).decisions).toEqual([
      expect.objectContaining({ action: 'delete', reason: 'claimGhost', key: keys.claim(VIP, 3), modRevision: '7' }),
    ]);
  });

  it('bad values nobody writes go after one status interval; an invalid election key at once', () => {
    const st = emptyClusterState();
    st.badValues.push(
      { key: keys.node('x'), error: NODE_WITHOUT_LEASE, modRevision: '4' },
      { key: keys.claim(VIP, 2), error: CLAIM_WITHOUT_LEASE, modRevision: '5' },
      { key: `${keys.electionName}/zz`, error: 'election key not under its lease (0)', modRevision: '6' },
    );
    const first = planSweep(inputs(st, 0));
    expect(first.decisions.filter((d) => d.action === 'delete').map((d) => d.key)).toEqual([`${keys.electionName}/zz`]);
    const later = planSweep(inputs(st, BAD_VALUE_HOLD_MS, first.since));
    expect(later.decisions.map((d) => [d.action, d.reason])).toEqual([
      ['delete', 'nodeWithoutLease'],
      ['delete', 'claimUnreadable'],
      ['delete', 'electionKeyInvalid'],
    ]);
  });

  it('a key rewritten is judged anew (its mod revision starts a new hold)', () => {
    const st = emptyClusterState();
    st.claims.set(VIP, new Map([[1, { owner: 'ghost', lease: 'Lx', createRevision: '5', modRevision: '7' }]]));
    const first = planSweep(inputs(st, 0));
    st.claims.get(VIP)!.set(1, { owner: 'ghost', lease: 'Lx', createRevision: '5', modRevision: '9' });
    expect(planSweep(inputs(st, HOLD + 1, first.since)).decisions).toMatchObject([
      { action: 'wait', reason: 'holding' },
    ]);
  });
});
