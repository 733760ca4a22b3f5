import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkExpected,
  doubleAnswers,
  foldLateReplies,
  handoffOf,
  ownershipSamples,
  runsOf,
  verdictOf,
} from '../../src/netns/analysis.js';
import { namespaceNames, ownerPidOf, sourceAddress } from '../../src/netns/addressing.js';
import { parseSetElements } from '../../src/netns/nftRead.js';
import type { ProbeResult } from '../../src/netns/prober.js';
import { renderStaticRuleset } from '../../src/netns/staticRuleset.js';
import { unsettledReason } from '../../src/netns/dataplane.js';

// Pure logic of the netns dataplane (no namespaces needed): how probe results are read.

let nextId = 1;
function probe(t0: number, udp: Record<string, string[]>, extra: Partial<ProbeResult> = {}): ProbeResult {
  return {
    id: nextId++,
    t0,
    t1: t0 + 30,
    udpProbed: true,
    tcpProbed: false,
    answers: Object.entries(udp).map(([source, replies]) => ({ source, udp: replies, tcp: null, tcpError: null })),
    late: [],
    ...extra,
  };
}

describe('netns analysis', () => {
  it('classifies replies', () => {
    expect(verdictOf([])).toEqual({ kind: 'none' });
    expect(verdictOf(['n1'])).toEqual({ kind: 'one', node: 'n1' });
    expect(verdictOf(['n2', 'n1'])).toEqual({ kind: 'double', nodes: ['n1', 'n2'] });
    expect(verdictOf(['n1', 'n1'])).toEqual({ kind: 'repeated', node: 'n1', count: 2 });
  });

  it('folds a late reply into its own probe, where it makes a double answer', () => {
    const a = probe(0, { s1: ['n1'] });
    const b = probe(40, { s1: [] }, { late: [{ id: a.id, source: 's1', node: 'n2' }] });
    expect(doubleAnswers([a, b])).toEqual([]);
    const folded = foldLateReplies([a, b]);
    expect(doubleAnswers(folded)).toEqual([{ probeId: a.id, t: 0, source: 's1', nodes: ['n1', 'n2'] }]);
    // The input is untouched.
    expect(a.answers[0]!.udp).toEqual(['n1']);
  });

  it('reports every mismatch against the expected owners', () => {
    const r = probe(0, { s1: ['n1'], s2: [], s3: ['n2'], s4: ['n1', 'n3'], s5: ['n9'] });
    const exp = new Map([
      ['s1', 'n1'],
      ['s2', 'n1'],
      ['s3', 'n1'],
      ['s4', 'n1'],
    ]);
    expect(checkExpected(r, exp).map((m) => `${m.source}:${m.reason}`)).toEqual([
      's2:none',
      's3:wrongNode',
      's4:double',
    ]);
    const tcp: ProbeResult = {
      ...r,
      udpProbed: false,
      tcpProbed: true,
      answers: [{ source: 's1', udp: [], tcp: null, tcpError: 'ECONNRESET' }],
    };
    expect(checkExpected(tcp, exp)).toEqual([
      { source: 's1', reason: 'tcpMismatch', expected: 'n1', got: null, error: 'ECONNRESET' },
    ]);
  });

  it('tells a clean handoff from an overlapping or flapping one', () => {
    const clean = [probe(0, { s: ['a'] }), probe(40, { s: [] }), probe(80, { s: ['b'] }), probe(120, { s: ['b'] })];
    expect(handoffOf(clean, 's')).toEqual({ kind: 'clean', from: 'a', to: 'b', gapMs: 80, lastFromT: 0, firstToT: 80 });
    expect(handoffOf([probe(0, { s: ['a'] }), probe(40, { s: ['a', 'b'] }), probe(80, { s: ['b'] })], 's').kind).toBe(
      'unclean',
    );
    expect(handoffOf([probe(0, { s: ['a'] }), probe(40, { s: ['b'] }), probe(80, { s: ['a'] })], 's').kind).toBe(
      'unclean',
    );
    expect(handoffOf([probe(0, { s: [] }), probe(40, { s: ['a'] })], 's')).toEqual({ kind: 'stayed', node: 'a' });
    expect(runsOf(clean, 's').map((r) => [r.node, r.probes])).toEqual([
      ['a', 1],
      [null, 1],
      ['b', 2],
    ]);
  });

  it('a handoff is clean exactly when no probe saw two nodes and the owner changed once (property)', () => {
    const step = fc.constantFrom<string[]>([], ['a'], ['b'], ['a', 'b']);
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 30 }), (steps) => {
        const rs = steps.map((s, i) => probe(i * 10, { s }));
        const h = handoffOf(rs, 's');
        const owners = steps.filter((s) => s.length > 0).map((s) => s.join('+'));
        const changes = owners.filter((o, i) => i > 0 && o !== owners[i - 1]).length;
        const anyDouble = steps.some((s) => s.length > 1);
        if (h.kind === 'clean') {
          expect(anyDouble).toBe(false);
          expect(changes).toBe(1);
          expect(h.lastFromT).toBeLessThan(h.firstToT);
        } else if (!anyDouble && changes === 1) throw new Error('a clean handoff was not recognized');
      }),
    );
  });

  it('turns a probe into per-bucket ownership samples', () => {
    const r = probe(5, { s1: ['n1'], s2: ['n2'], s3: [], s4: ['n1'] });
    const bucket: Record<string, number> = { s1: 1, s2: 1, s3: 2, s4: 3 };
    expect(ownershipSamples(r, '10.0.0.1', (s) => bucket[s]!)).toEqual([
      { t: 5, source: 'dataplane', vip: '10.0.0.1', bucket: 1, holders: ['n1', 'n2'] },
      { t: 5, source: 'dataplane', vip: '10.0.0.1', bucket: 2, holders: [] },
      { t: 5, source: 'dataplane', vip: '10.0.0.1', bucket: 3, holders: ['n1'] },
    ]);
  });

  it('says why ownership is not settled', () => {
    const o = {
      assigned: new Map([
        [1, 'n1'],
        [2, 'n2'],
      ]),
      claims: new Map([
        [1, 'n1'],
        [2, 'n2'],
      ]),
      kernel: new Map([
        ['n1', [1]],
        ['n2', [2]],
      ]),
    };
    expect(unsettledReason(o, 2, ['n1', 'n2'])).toBe('');
    expect(unsettledReason(o, 2, ['n1', 'n2', 'n3'])).toBe('nodes without buckets: n3');
    expect(
      unsettledReason(
        {
          ...o,
          kernel: new Map([
            ['n1', [1, 2]],
            ['n2', [2]],
          ]),
        },
        2,
        [],
      ),
    ).toBe('bucket 2 claimed by n2, in the kernel of [n1, n2]');
    expect(unsettledReason({ ...o, claims: new Map([[1, 'n1']]) }, 2, [])).toBe(
      'bucket 2 assigned to n2, claimed by nobody',
    );
    expect(unsettledReason(o, 3, [])).toBe('bucket 3 unassigned');
  });

  it('names, addresses and nft listings', () => {
    const n = namespaceNames(4242, 7);
    expect(n.node('n1')).toBe('cipha-dp-4242-7-node-n1');
    expect(ownerPidOf(n.switchNs)).toBe(4242);
    expect(ownerPidOf('cipha-be-4242-x')).toBeUndefined();
    expect(sourceAddress(0)).toBe('10.77.1.1');
    expect(sourceAddress(250)).toBe('10.77.2.1');
    expect(
      parseSetElements(
        JSON.stringify({
          nftables: [
            { metainfo: {} },
            { set: { name: 'owned_x', elem: [3, { elem: { val: 1, timeout: 1500, expires: 1200 } }] } },
          ],
        }),
      ),
    ).toEqual([1, 3]);
    const text = renderStaticRuleset({ table: 't', vip: '10.77.0.100', buckets: 4, seed: 0x5eed }, [2, 1]);
    expect(text).toContain('jhash ip saddr mod 4 seed 0x00005eed offset 1 != @owned drop');
    expect(text).toContain('elements = { 2, 1 }');
    expect(() => renderStaticRuleset({ table: 't;x', vip: '10.77.0.100', buckets: 4, seed: 1 }, [])).toThrow();
    expect(() => renderStaticRuleset({ table: 't', vip: '10.77.0.100', buckets: 4, seed: 1 }, [5])).toThrow();
  });
});
