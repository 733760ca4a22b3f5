import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { ReorderBuffer } from '../../src/invariant/reorder.js';
import { InvariantChecker, applyFact, type TimelineFact } from '../../src/invariant/checker.js';

describe('ReorderBuffer', () => {
  it('releases every fact once, in stamp order (ties in arrival order), when each arrives within the window', () => {
    fc.assert(
      fc.property(
        // Facts as (stamp, arrival delay ≤ window); releases at arbitrary times in between.
        fc.array(fc.record({ t: fc.integer({ min: 0, max: 5000 }), delay: fc.integer({ min: 0, max: 300 }) }), {
          maxLength: 60,
        }),
        fc.array(fc.integer({ min: 0, max: 6000 }), { maxLength: 20 }),
        (facts, releases) => {
          const buf = new ReorderBuffer<{ t: number; id: number }>(300);
          const events = [
            ...facts.map((f, id) => ({ at: f.t + f.delay, fact: { t: f.t, id } })),
            ...releases.map((at) => ({ at, fact: null })),
          ].sort((a, b) => a.at - b.at || (a.fact ? -1 : 1));
          const out: { t: number; id: number }[] = [];
          const arrived: number[] = [];
          for (const e of events) {
            if (e.fact) arrived.push(e.fact.id);
            if (e.fact) buf.push(e.fact);
            else out.push(...buf.release(e.at));
          }
          out.push(...buf.release(Infinity));
          expect(out.map((f) => f.id).sort((a, b) => a - b)).toEqual(facts.map((_, i) => i));
          for (let i = 1; i < out.length; i++) {
            const [a, b] = [out[i - 1]!, out[i]!];
            expect(b.t).toBeGreaterThanOrEqual(a.t);
            if (a.t === b.t) expect(arrived.indexOf(b.id)).toBeGreaterThan(arrived.indexOf(a.id));
          }
          expect(buf.late).toBe(0);
          expect(buf.size).toBe(0);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('counts a fact that comes after its window closed, and still releases it', () => {
    const buf = new ReorderBuffer<{ t: number }>(100);
    buf.push({ t: 500 });
    expect(buf.release(700)).toEqual([{ t: 500 }]);
    buf.push({ t: 400 });
    expect(buf.late).toBe(1);
    expect(buf.release(700)).toEqual([{ t: 400 }]);
  });

  it('puts a kernel read that returned after a handoff before it: the holder is credited with its claim', () => {
    // The CI failure (chaos-netns seed 5): a read stamped 100 (when it started) shows n1, which held the claim
    // until the handoff to n4 seen at 150; the read returned at 180. In arrival order n1 looks never claimed.
    const arrivals: TimelineFact[] = [
      { type: 'sample', t: 0, source: 'claims', vip: 'v', bucket: 1, holders: [] },
      { type: 'sample', t: 50, source: 'claims', vip: 'v', bucket: 1, holders: ['n1'], lease: 'L1' },
      { type: 'sample', t: 150, source: 'claims', vip: 'v', bucket: 1, holders: ['n4'], lease: 'L4' },
      { type: 'sample', t: 100, source: 'backend', vip: 'v', bucket: 1, holders: ['n1'] },
      { type: 'round', t: 100, end: 180 },
      { type: 'sample', t: 200, source: 'backend', vip: 'v', bucket: 1, holders: ['n4'] },
    ];
    const verdict = (facts: TimelineFact[]): string[] => {
      const c = new InvariantChecker(10_000, 100);
      for (const f of facts) applyFact(c, f);
      return c.finish(1000, 0).violations.map((v) => v.kind);
    };
    expect(verdict(arrivals)).toEqual(['heldNeverClaimed']);
    const buf = new ReorderBuffer<TimelineFact>(500);
    for (const f of arrivals) buf.push(f);
    expect(verdict(buf.release(Infinity))).toEqual([]);
  });
});

describe('file poll rounds in stamp order', () => {
  it('a round is checked against the holders its own reads found (samples stamped when it began)', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { FileBackend } = await import('../../src/backends/file.js');
    const { FilePoller } = await import('../../src/invariant/filePoll.js');
    const dir = mkdtempSync(join(tmpdir(), 'cipha-poll-'));
    // A clock that moves 1 ms per reading, so the reads of a round end later than it began (as on a busy host).
    let now = 1_000_000;
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => now++);
    try {
      const spec = {
        vips: [
          {
            address: '10.0.0.1',
            interface: 'eth0',
            buckets: 1,
            hashMode: 'sourceip' as const,
            seed: 1,
            clusterMac: '01:00:5e:00:00:01',
            sticky: false,
          },
        ],
        rebalance: { joinMovesPerInterval: 1, intervalMs: 1000 },
      };
      const n1 = new FileBackend({ dir: join(dir, 'n1'), now: () => now });
      const n2 = new FileBackend({ dir: join(dir, 'n2'), now: () => now });
      await n1.ensure(spec);
      await n2.ensure(spec);
      const poller = new FilePoller();
      poller.setDirs([
        ['n1', join(dir, 'n1')],
        ['n2', join(dir, 'n2')],
      ]);
      poller.setVips([{ address: '10.0.0.1', buckets: 1 }]);
      const buf = new ReorderBuffer<TimelineFact>(1000);
      const pollInto = (): void => {
        const r = poller.poll()!;
        for (const s of r.samples) buf.push({ type: 'sample', ...s });
        buf.push({ type: 'round', t: r.roundT });
      };
      const claim = (holders: string[]): void =>
        buf.push({ type: 'sample', t: Date.now(), source: 'claims', vip: '10.0.0.1', bucket: 1, holders, lease: 'L' });
      claim(['n1']);
      await n1.apply([{ vip: '10.0.0.1', add: [1], remove: [] }], { holdForMs: 60_000_000 });
      pollInto();
      // The handoff, kernel first: n1 lets go, the claim moves to n2, n2 adds.
      await n1.apply([{ vip: '10.0.0.1', add: [], remove: [1] }]);
      claim(['n2']);
      await n2.apply([{ vip: '10.0.0.1', add: [1], remove: [] }], { holdForMs: 60_000_000 });
      pollInto();
      const c = new InvariantChecker(60_000, 500);
      for (const f of buf.release(Infinity)) applyFact(c, f);
      expect(c.finish(now + 10, 0).violations).toEqual([]);
    } finally {
      spy.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
