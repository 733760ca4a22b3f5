import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  failoverLatencies,
  failoverStats,
  latencyStats,
  ownershipGrid,
  renderSvg,
  renderText,
  type ChaosReport,
  type FaultRecord,
} from '../../src/chaos/report.js';
import type { OwnershipSample } from '../../src/invariant/types.js';

const V = '10.77.0.100';
const s = (t: number, bucket: number, holders: string[]): OwnershipSample => ({
  t,
  source: 'backend',
  vip: V,
  bucket,
  holders,
});

function baseReport(over: Partial<ChaosReport> = {}): ChaosReport {
  return {
    seed: 42,
    options: {},
    startedAt: 0,
    endedAt: 10_000,
    ttlMs: 2000,
    boundMs: 2200,
    faultsByKind: { kill: 1 },
    skippedByKind: {},
    faults: [],
    failover: {},
    failoverSamples: [],
    maxUnownedMs: { [`${V}#1`]: 1500, [`${V}#2`]: 3 },
    violations: [],
    converged: true,
    invariant: { unownedIntervals: [], samples: 10, startedAt: 0, endedAt: 10_000 },
    backendHistory: [],
    nodes: ['n1', 'n2'],
    ...over,
  };
}

describe('chaos report', () => {
  it('measures failover from the kill to the last of the victim’s buckets owned again after its gap', () => {
    const hist = [
      s(0, 1, ['n1']),
      s(0, 2, ['n1']),
      s(0, 3, ['n2']),
      s(1500, 1, []), // n1's entries expire
      s(1500, 2, []),
      s(2600, 1, ['n2']),
      s(2900, 2, ['n2']),
      s(5000, 3, []), // unrelated to the fault
      s(5010, 3, ['n1']),
    ];
    const faults: FaultRecord[] = [
      {
        seq: 1,
        kind: 'kill',
        target: 'n1',
        plannedAtMs: 1000,
        outcome: 'done',
        injectedAt: 1000,
        undoneAt: 1400,
        holdMs: 400,
      },
      { seq: 2, kind: 'stopShort', target: 'n2', plannedAtMs: 1100, outcome: 'done', injectedAt: 1100, holdMs: 300 },
      { seq: 3, kind: 'kill', target: 'n2', plannedAtMs: 1200, outcome: 'skipped', holdMs: 300 },
    ];
    expect(failoverLatencies(faults, hist)).toEqual([{ seq: 1, kind: 'kill', target: 'n1', ms: 1900, buckets: 2 }]);
    // Bucket 2 (the slow one) leaves the spec during the failover (a bucket-count change): it owes no owner, so
    // its return when the spec grows back is no failover time.
    expect(failoverLatencies(faults, hist, [{ t: 1500, vip: V, buckets: 1 }])).toEqual([
      { seq: 1, kind: 'kill', target: 'n1', ms: 1600, buckets: 2 },
    ]);
  });

  it('latency percentiles match a sorted sample', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 10_000 }), { minLength: 1, maxLength: 200 }), (xs) => {
        const st = latencyStats(xs);
        const sorted = [...xs].sort((a, b) => a - b);
        expect(st.max).toBe(sorted[sorted.length - 1]);
        expect(st.p50).toBeLessThanOrEqual(st.p95);
        expect(st.p95).toBeLessThanOrEqual(st.p99);
        expect(st.p99).toBeLessThanOrEqual(st.max);
        expect(sorted).toContain(st.p50);
        expect(sorted.filter((x) => x <= st.p50).length).toBeGreaterThanOrEqual(xs.length / 2);
      }),
      { numRuns: 300 },
    );
    expect(failoverStats([{ seq: 1, kind: 'kill', target: 'a', ms: 5, buckets: 1 }]).kill?.samples).toBe(1);
  });

  it('draws owners, gaps and double owners in the text grid', () => {
    const r = baseReport({
      backendHistory: [
        s(0, 1, ['n1']),
        s(5000, 1, []),
        s(6000, 1, ['n2']),
        s(0, 2, ['n2']),
        s(2000, 2, ['n1', 'n2']),
        s(2100, 2, ['n2']),
      ],
    });
    const grid = ownershipGrid(r, 10);
    // A short gap inside a column does not paint it as unowned; a long one does.
    const gaps = baseReport({
      backendHistory: [s(0, 1, ['n1']), s(1200, 1, []), s(1300, 1, ['n1']), s(3100, 1, []), s(3900, 1, ['n2'])],
    });
    expect(ownershipGrid(gaps, 10)[0]!.row).toBe('111.222222');
    expect(grid).toEqual([
      { key: `${V}#1`, row: '11111.2222' },
      { key: `${V}#2`, row: '22#2222222' },
    ]);
  });

  it('renders the text summary with violations, the seed and the faults that led to them', () => {
    const r = baseReport({
      faults: [
        {
          seq: 7,
          kind: 'stopShort',
          target: 'n1',
          plannedAtMs: 3000,
          outcome: 'done',
          injectedAt: 3000,
          undoneAt: 4000,
          holdMs: 1000,
        },
      ],
      violations: [
        { kind: 'unownedTooLong', vip: V, bucket: 1, fromMs: 3500, toMs: 9000, durationMs: 5500, boundMs: 2200 },
      ],
      failover: { all: { samples: 3, p50: 2100, p95: 2300, p99: 2300, max: 2300 } },
      backendHistory: [s(0, 1, ['n1']), s(3500, 1, [])],
    });
    const t = renderText(r, { columns: 20 });
    expect(t).toContain('seed=42');
    expect(t).toContain('VIOLATIONS: 1 (reproduce with --seed 42)');
    expect(t).toContain('#7 +3000ms stopShort n1 hold 1000ms');
    expect(t).toMatch(/all\s+3\s+2100\s+2300\s+2300\s+2300\s+1\.15/);
    expect(t).toContain('1:1500 2:3');
    expect(renderText(baseReport())).toContain('violations: none');
  });

  it('renders a self-contained SVG with one row per bucket and escaped text', () => {
    const r = baseReport({
      nodes: ['n<1>', 'n2'],
      backendHistory: [s(0, 1, ['n<1>']), s(4000, 1, []), s(4100, 1, ['n2']), s(0, 2, ['n2'])],
      faults: [
        {
          seq: 1,
          kind: 'kill',
          target: 'n<1>',
          plannedAtMs: 3900,
          outcome: 'done',
          injectedAt: 3900,
          undoneAt: 4200,
          holdMs: 300,
        },
      ],
      violations: [{ kind: 'doubleOwner', source: 'backend', vip: V, bucket: 2, nodes: ['n2', 'n<1>'], at: 5000 }],
    });
    const svg = renderSvg(r);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).not.toContain('n<1>');
    expect(svg).toContain('n&lt;1&gt;');
    expect(svg).toContain(`${V}#1`);
    expect(svg).toContain(`${V}#2`);
    expect(svg).toContain('stroke="red"');
    // Every opened element is closed or self-closing.
    const opened = (svg.match(/<(rect|text|line|title|svg)(\s[^>]*)?(?<!\/)>/g) ?? []).length;
    const closed = (svg.match(/<\/(rect|text|line|title|svg)>/g) ?? []).length;
    expect(opened).toBe(closed);
  });
});
