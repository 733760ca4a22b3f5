import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checkTimeline, InvariantChecker, type TimelineFact } from '../../src/invariant/checker.js';
import type { OwnershipSample } from '../../src/invariant/types.js';
import { writtenByAgent } from '../../src/invariant/observer.js';

const NODES = ['a', 'b', 'c', 'd'];
const BOUND = 300;

interface Segment {
  dur: number;
  holders: string[];
}

const segmentArb = fc.record({
  dur: fc.integer({ min: 1, max: 600 }),
  holders: fc.subarray(NODES, { minLength: 0, maxLength: 3 }),
});

/** Samples at the start of each segment of one (source, vip, bucket); returns them and the end time. */
function toSamples(
  segs: Segment[],
  source: OwnershipSample['source'],
  t0 = 1000,
  bucket = 1,
): { samples: OwnershipSample[]; end: number } {
  let t = t0;
  const samples: OwnershipSample[] = [];
  for (const s of segs) {
    samples.push({ t, source, vip: '10.0.0.1', bucket, holders: s.holders });
    t += s.dur;
  }
  return { samples, end: t };
}

/** The verdict a person would write down for one bucket's segments (always a live node, no impairments). */
function expected(segs: Segment[], t0 = 1000) {
  const doubles: { at: number; nodes: string[] }[] = [];
  const unowned: { from: number; to: number }[] = [];
  let t = t0;
  let dbl: { at: number; nodes: Set<string> } | null = null;
  let un: number | null = null;
  for (const s of segs) {
    if (s.holders.length >= 2) {
      dbl ??= { at: t, nodes: new Set() };
      s.holders.forEach((h) => dbl!.nodes.add(h));
    } else if (dbl) {
      doubles.push({ at: dbl.at, nodes: [...dbl.nodes].sort() });
      dbl = null;
    }
    if (s.holders.length === 0) un ??= t;
    else if (un !== null) {
      unowned.push({ from: un, to: t });
      un = null;
    }
    t += s.dur;
  }
  if (dbl) doubles.push({ at: dbl.at, nodes: [...dbl.nodes].sort() });
  const open = un !== null ? { from: un, to: t } : null;
  return { doubles, unowned, open, end: t };
}

const liveFrom = (t: number): TimelineFact => ({ type: 'liveness', t, live: ['a'] });

function run(samples: OwnershipSample[], end: number, extra: TimelineFact[] = []) {
  const facts: TimelineFact[] = [...extra, ...samples.map((s) => ({ type: 'sample' as const, ...s }))];
  facts.sort((x, y) => x.t - y.t);
  return checkTimeline(facts, { boundMs: BOUND, startedAt: 0, endMs: end });
}

describe('invariant checker', () => {
  it('reports exactly the generated double-owner stretches and too-long unowned stretches', () => {
    fc.assert(
      fc.property(fc.array(segmentArb, { minLength: 1, maxLength: 30 }), (segs) => {
        const { samples, end } = toSamples(segs, 'backend');
        const r = run(samples, end, [liveFrom(0)]);
        const exp = expected(segs);
        const dbl = r.violations.filter((v) => v.kind === 'doubleOwner');
        expect(dbl.map((v) => ({ at: v.at, nodes: v.nodes }))).toEqual(exp.doubles);
        const tooLong = r.violations.filter((v) => v.kind === 'unownedTooLong');
        const expTooLong = [...exp.unowned, ...(exp.open ? [exp.open] : [])].filter((u) => u.to - u.from > BOUND);
        expect(tooLong.map((v) => v.kind === 'unownedTooLong' && { from: v.fromMs, to: v.toMs })).toEqual(
          expTooLong.map((u) => ({ from: u.from, to: u.to })),
        );
        expect(r.unownedIntervals.map((u) => ({ from: u.fromMs, to: u.toMs }))).toEqual(exp.unowned);
        const all = [...exp.unowned, ...(exp.open ? [exp.open] : [])];
        const maxExp = all.length ? Math.max(...all.map((u) => u.to - u.from)) : undefined;
        expect(r.maxUnownedMs['10.0.0.1#1']).toEqual(maxExp);
      }),
      { numRuns: 1500 },
    );
  });

  it('splitting a stretch into more samples or merging equal neighbours does not change the verdict', () => {
    fc.assert(
      fc.property(
        fc.array(segmentArb, { minLength: 1, maxLength: 20 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 20, maxLength: 20 }),
        (segs, splits) => {
          const { samples, end } = toSamples(segs, 'backend');
          // Split: repeat each segment's sample (holders in another order) at extra instants inside it.
          const split: OwnershipSample[] = [];
          segs.forEach((s, i) => {
            const base = samples[i]!;
            split.push(base);
            const n = splits[i] ?? 0;
            for (let j = 1; j <= n; j++) {
              const t = base.t + Math.floor((s.dur * j) / (n + 1));
              if (t > base.t) split.push({ ...base, t, holders: [...base.holders].reverse() });
            }
          });
          // Merge: drop each sample equal (as a set) to its predecessor.
          const merged = samples.filter(
            (s, i) => i === 0 || [...s.holders].sort().join() !== [...samples[i - 1]!.holders].sort().join(),
          );
          const a = run(samples, end, [liveFrom(0)]);
          const b = run(split, end, [liveFrom(0)]);
          const c = run(merged, end, [liveFrom(0)]);
          expect(b.violations).toEqual(a.violations);
          expect(c.violations).toEqual(a.violations);
          expect(b.maxUnownedMs).toEqual(a.maxUnownedMs);
          expect(c.maxUnownedMs).toEqual(a.maxUnownedMs);
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('finds nothing on a timeline that never overlaps and hands over within the bound', () => {
    const calm = fc.oneof(
      fc.record({ dur: fc.integer({ min: 1, max: 2000 }), holders: fc.constantFrom(...NODES.map((n) => [n])) }),
      fc.record({ dur: fc.integer({ min: 1, max: BOUND }), holders: fc.constant([] as string[]) }),
    );
    fc.assert(
      fc.property(
        fc.array(calm, { minLength: 1, maxLength: 40 }),
        fc.array(calm, { minLength: 1, maxLength: 40 }),
        (s1, s2) => {
          // Every empty stretch is followed by a held one, so no unowned stretch is longer than one calm gap.
          const closeGaps = (segs: Segment[]): Segment[] =>
            segs.flatMap((s) => (s.holders.length === 0 ? [s, { dur: 10, holders: ['a'] }] : [s]));
          const one = toSamples(closeGaps(s1), 'backend', 1000, 1);
          const two = toSamples(closeGaps(s2), 'claims', 1000, 2);
          const end = Math.max(one.end, two.end);
          const r = run([...one.samples, ...two.samples], end, [liveFrom(0)]);
          // The last stretch is still open at the end; a calm one is within the bound by construction.
          expect(r.violations).toEqual([]);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('counts unowned time only while a live node existed', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.integer({ min: 0, max: 500 }),
        (liveFlips, gap, start) => {
          // Liveness toggles at the given steps, starting dead; the bucket is unowned during [start, start+gap).
          const facts: TimelineFact[] = [];
          let t = 0;
          liveFlips.forEach((d, i) => {
            facts.push({ type: 'liveness', t, live: i % 2 === 0 ? [] : ['a', 'b'] });
            t += d;
          });
          facts.push({ type: 'sample', t: start, source: 'backend', vip: 'v', bucket: 1, holders: [] });
          facts.push({ type: 'sample', t: start + gap, source: 'backend', vip: 'v', bucket: 1, holders: ['a'] });
          facts.sort((x, y) => x.t - y.t);
          const r = checkTimeline(facts, { boundMs: BOUND, startedAt: 0, endMs: start + gap + 1 });
          // Naive per-millisecond count of "unowned and live".
          let liveMs = 0;
          for (let ms = start; ms < start + gap; ms++) {
            let live = false;
            let acc = 0;
            for (let i = 0; i < liveFlips.length; i++) {
              if (ms >= acc) live = i % 2 === 1;
              acc += liveFlips[i]!;
            }
            if (live) liveMs++;
          }
          expect(r.maxUnownedMs['v#1']).toBe(liveMs);
          expect(r.violations.length).toBe(liveMs > BOUND ? 1 : 0);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('restarts the failover clock at each fault in the chain, not after an overrun, not for other nodes', () => {
    // bound 1000, cascade bound 1500 (bound + 500).
    const c = new InvariantChecker(1000);
    c.liveness({ t: 0, live: ['a', 'b', 'c'] });
    c.leader({ t: 0, leader: 'c' });
    c.assignee({ t: 0, vip: 'v', bucket: 1, assignee: 'a' });
    c.observe({ t: 0, source: 'backend', vip: 'v', bucket: 1, holders: ['a'] });
    c.impair('a', 'kill', 100)(5000); // the owner dies: its failover
    c.impair('c', 'stop', 200)(1500); // the leader freezes too: the clock restarts at 200
    c.impair('b', 'stop', 300)(1400); // b is not in this bucket's chain (yet)
    c.observe({ t: 500, source: 'backend', vip: 'v', bucket: 1, holders: [] });
    expect(c.allowedMs('v', 1, 500, 2400)).toBe(200 + 1500 - 500);
    c.assignee({ t: 2000, vip: 'v', bucket: 1, assignee: 'b' });
    // b joined the chain while its fault still mattered: the clock restarts at b's fault.
    expect(c.allowedMs('v', 1, 500, 2400)).toBe(300 + 1500 - 500);
    c.impair('c', 'stop', 1750)(1900); // within the allowance (deadline 1800): restart at 1750
    expect(c.allowedMs('v', 1, 500, 3000)).toBe(1750 + 1500 - 500);
    c.impair('c', 'stop', 3400)(3500); // after the deadline 3250: excuses nothing
    expect(c.allowedMs('v', 1, 500, 3600)).toBe(1750 + 1500 - 500);
    c.observe({ t: 3200, source: 'backend', vip: 'v', bucket: 1, holders: ['b'] });
    expect(c.finish(4000, 0).violations).toEqual([]);

    // Without faults the bound is exactly boundMs.
    const plain = new InvariantChecker(1000);
    expect(plain.allowedMs('v', 1, 500, 9000)).toBe(1000);

    // A node whose fault was over (plus one bound) before it joined the chain does not count.
    const past = new InvariantChecker(1000);
    past.assignee({ t: 0, vip: 'v', bucket: 1, assignee: 'a' });
    past.impair('a', 'kill', 100)(5000);
    past.impair('b', 'kill', 600)(700);
    past.assignee({ t: 2000, vip: 'v', bucket: 1, assignee: 'b' });
    expect(past.allowedMs('v', 1, 500, 3000)).toBe(1100);
    const soon = new InvariantChecker(1000);
    soon.assignee({ t: 0, vip: 'v', bucket: 1, assignee: 'a' });
    soon.impair('a', 'kill', 100)(5000);
    soon.impair('b', 'kill', 600)(700);
    soon.assignee({ t: 1500, vip: 'v', bucket: 1, assignee: 'b' });
    expect(soon.allowedMs('v', 1, 500, 3000)).toBe(600 + 1500 - 500);

    // etcd faults count for every bucket, from the next etcd election (the kill + the election timeout).
    const e = new InvariantChecker(1000, 500, 1500, 1000);
    e.impair(null, 'etcdMember', 900)(2000);
    expect(e.allowedMs('v', 1, 500, 4000)).toBe(900 + 1000 + 1500 - 500);
    // An election seen later (it refreshed every lease to election timeout + TTL) restarts the clock there, while
    // the stretch is still within its allowance; one seen after an overrun excuses nothing.
    e.impair(null, 'etcdLeaderChange', 2600)(2600);
    expect(e.allowedMs('v', 1, 500, 6000)).toBe(2600 + 1000 + 1500 - 500);
    const late = new InvariantChecker(1000, 500, 1500, 1000);
    late.impair(null, 'etcdLeaderChange', 1600)(1600);
    expect(late.allowedMs('v', 1, 500, 6000)).toBe(1000);

    const d = new InvariantChecker(1000);
    d.liveness({ t: 0, live: ['a', 'b'] });
    d.assignee({ t: 0, vip: 'v', bucket: 1, assignee: 'a' });
    d.impair('a', 'kill', 100)(5000);
    d.observe({ t: 500, source: 'backend', vip: 'v', bucket: 1, holders: [] });
    // The owner's own fault allows until max(gap start + bound, fault + cascade bound) = 1600.
    d.observe({ t: 1700, source: 'backend', vip: 'v', bucket: 1, holders: ['b'] });
    expect(d.finish(2000, 0).violations).toEqual([
      { kind: 'unownedTooLong', vip: 'v', bucket: 1, fromMs: 500, toMs: 1700, durationMs: 1200, boundMs: 1100 },
    ]);
  });

  it('does not hold a claim the observer could not see against the node (its watch was reconnecting)', () => {
    const mk = (): InvariantChecker => {
      const c = new InvariantChecker(1000, 500);
      c.liveness({ t: 0, live: ['a', 'b'] });
      c.observe({ t: 0, source: 'claims', vip: 'v', bucket: 1, holders: [] });
      c.observe({ t: 100, source: 'backend', vip: 'v', bucket: 1, holders: ['a'] });
      return c;
    };
    // The claim shows up 700 ms after the backend: a violation, unless 400 ms of it the observer was blind.
    const seeing = mk();
    seeing.observe({ t: 800, source: 'claims', vip: 'v', bucket: 1, holders: ['a'] });
    expect(seeing.finish(1000, 0).violations.map((v) => v.kind)).toEqual(['heldWithoutClaim']);
    const blind = mk();
    blind.blind({ t: 600, from: 200, to: 600 });
    blind.observe({ t: 800, source: 'claims', vip: 'v', bucket: 1, holders: ['a'] });
    expect(blind.finish(1000, 0).violations).toEqual([]);
    // Blind for less than the excess: still a violation.
    const short = mk();
    short.blind({ t: 250, from: 200, to: 250 });
    short.observe({ t: 800, source: 'claims', vip: 'v', bucket: 1, holders: ['a'] });
    expect(short.finish(1000, 0).violations.map((v) => v.kind)).toEqual(['heldWithoutClaim']);
  });

  it('reports an unowned stretch still open at the end, and double owners per source', () => {
    const c = new InvariantChecker(100);
    c.liveness({ t: 0, live: ['a'] });
    c.observe({ t: 0, source: 'claims', vip: 'v', bucket: 2, holders: ['a', 'b'] });
    c.observe({ t: 0, source: 'backend', vip: 'v', bucket: 2, holders: [] });
    c.observe({ t: 10, source: 'dataplane', vip: 'v', bucket: 2, holders: ['a', 'b'] });
    c.observe({ t: 20, source: 'dataplane', vip: 'v', bucket: 2, holders: ['b'] });
    expect(c.openViolations(150)).toHaveLength(1);
    const r = c.finish(500, 0);
    expect(r.violations.map((v) => [v.kind, 'source' in v ? v.source : ''])).toEqual([
      ['doubleOwner', 'dataplane'],
      ['doubleOwner', 'claims'],
      ['unownedTooLong', ''],
    ]);
  });
});

describe('kernel ⊆ claims (heldWithoutClaim)', () => {
  const claim = (t: number, holders: string[]): OwnershipSample => ({
    t,
    source: 'claims',
    vip: 'v',
    bucket: 1,
    holders,
  });
  const back = (t: number, holders: string[]): OwnershipSample => ({
    t,
    source: 'backend',
    vip: 'v',
    bucket: 1,
    holders,
  });

  it('flags a backend holder that outlives its claim beyond the lag, and only that', () => {
    const c = new InvariantChecker(10_000, 500);
    c.observe(claim(0, ['a']));
    c.observe(back(10, ['a'])); // acquire: claim first, then kernel
    c.observe(back(1000, [])); // release: kernel first ...
    c.observe(claim(1005, [])); // ... then the claim
    c.observe(claim(2000, ['b']));
    c.observe(back(2100, ['b']));
    c.observe(claim(3000, [])); // b's lease expired, but its kernel kept the bucket: a fence failure
    c.observe(back(3700, []));
    expect(c.finish(4000, 0).violations).toEqual([
      { kind: 'heldWithoutClaim', vip: 'v', bucket: 1, node: 'b', fromMs: 3000, toMs: 3700, durationMs: 700 },
    ]);
  });

  it('tolerates observation lag and is not checked before any claim was seen', () => {
    const c = new InvariantChecker(10_000, 500);
    c.observe(back(0, ['a'])); // no claims sample yet: unchecked
    c.observe(back(100, ['a', 'b'])); // a double, but still no claim seen
    c.observe(back(200, ['a']));
    c.observe(claim(300, ['a']));
    c.observe(back(1000, ['c'])); // c's kernel add seen before its claim event ...
    c.observe(claim(1300, ['c'])); // ... 300 ms later: within the lag
    const v = c.finish(2000, 0).violations;
    expect(v.map((x) => x.kind)).toEqual(['doubleOwner']);
  });

  it('never fires when the backend follows the claims exactly', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ dur: fc.integer({ min: 1, max: 2000 }), owner: fc.constantFrom(null, 'a', 'b', 'c') }), {
          maxLength: 40,
        }),
        (steps) => {
          const c = new InvariantChecker(100_000, 0);
          let t = 0;
          let prev: string | null = null;
          for (const s of steps) {
            // Release: kernel before claim; acquire: claim before kernel (the protocol's order).
            if (prev) c.observe(back(t, []));
            c.observe(claim(t, s.owner ? [s.owner] : []));
            if (s.owner) c.observe(back(t, [s.owner]));
            prev = s.owner;
            t += s.dur;
          }
          expect(c.finish(t, 0).violations.filter((v) => v.kind === 'heldWithoutClaim')).toEqual([]);
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('legal transitions and holders without any claim', () => {
  const claim = (t: number, holders: string[], lease = 'L1'): OwnershipSample => ({
    t,
    source: 'claims',
    vip: 'v',
    bucket: 1,
    holders,
    ...(holders.length > 0 ? { lease } : {}),
  });
  const back = (t: number, holders: string[]): OwnershipSample => ({
    t,
    source: 'backend',
    vip: 'v',
    bucket: 1,
    holders,
  });
  const kinds = (c: InvariantChecker, end: number) => c.finish(end, 0).violations.map((v) => v.kind);

  it('flags a previous holder still in the first backend round that started after the claim moved', () => {
    const c = new InvariantChecker(10_000, 500);
    c.observe(claim(0, ['a']));
    c.observe(back(5, ['a']));
    c.round({ t: 10 });
    c.observe(claim(100, ['b'])); // handoff a → b ...
    c.round({ t: 95 }); // a round that started before the handoff was seen proves nothing
    c.round({ t: 110 }); // ... but a's kernel still held it in a round that began after: released too late
    c.observe(back(115, []));
    c.observe(back(120, ['b']));
    c.round({ t: 130 });
    const v = c.finish(1000, 0).violations;
    expect(v).toEqual([
      { kind: 'heldAfterRelease', vip: 'v', bucket: 1, node: 'a', lease: 'L1', claimAt: 100, seenAt: 110 },
    ]);
  });

  it('a node that claims the bucket again while the round reads may show the new entry; after the round, not', () => {
    // A re-hash: a releases (kernel, then claim) and re-acquires (claim, then kernel) within one backend round.
    const during = new InvariantChecker(10_000, 500);
    during.observe(claim(0, ['a']));
    during.observe(back(5, ['a']));
    during.observe(claim(100, [])); // released ...
    during.observe(back(110, ['a'])); // ... the round from 110 read a's set after its re-add
    during.round({ t: 110, end: 200 }); // (facts come in stamp order: a round is stamped when it started)
    during.observe(claim(180, ['a'])); // the re-claim, seen before the round's end (200) + the lag
    during.observe(back(230, ['a']));
    expect(kinds(during, 1000)).toEqual([]);
    // The same round with the re-claim seen long after it ended: a held the bucket across its release.
    const after = new InvariantChecker(10_000, 500);
    after.observe(claim(0, ['a']));
    after.observe(back(5, ['a']));
    after.observe(claim(100, []));
    after.observe(back(110, ['a']));
    after.round({ t: 110, end: 200 });
    after.observe(claim(900, ['a']));
    expect(kinds(after, 2000)).toContain('heldAfterRelease');
    // Another owner in between: the bucket changed hands while a may still have held it; a's return excuses nothing.
    const between = new InvariantChecker(10_000, 500);
    between.observe(claim(0, ['a']));
    between.observe(back(5, ['a']));
    between.observe(claim(100, []));
    between.observe(back(110, ['a']));
    between.round({ t: 110, end: 200 });
    between.observe(claim(150, ['b'], 'L2'));
    between.observe(claim(170, ['a']));
    expect(kinds(between, 2000)).toContain('heldAfterRelease');
    // Another node's claim excuses nothing.
    const other = new InvariantChecker(10_000, 500);
    other.observe(claim(0, ['a']));
    other.observe(back(5, ['a']));
    other.observe(claim(100, []));
    other.observe(back(110, ['a']));
    other.round({ t: 110, end: 200 });
    other.observe(claim(150, ['b']));
    other.observe(back(160, []));
    expect(kinds(other, 2000)).toContain('heldAfterRelease');
  });

  it('garbage over a claim is no release: its holder owes a release within the claim lag, not before', () => {
    const damaged = (t: number): OwnershipSample => ({ ...claim(t, []), damaged: true });
    const quick = new InvariantChecker(10_000, 500);
    quick.observe(claim(0, ['a']));
    quick.observe(back(5, ['a']));
    quick.observe(damaged(100));
    quick.round({ t: 110 }); // a still holds: it could not have let go before the garbage landed
    quick.observe(back(140, []));
    quick.observe(claim(160, ['a']));
    quick.observe(back(170, ['a']));
    quick.round({ t: 180 });
    expect(kinds(quick, 1000)).toEqual([]);
    // Holding on past the lag is kernel ⊄ claims.
    const slow = new InvariantChecker(10_000, 500);
    slow.observe(claim(0, ['a']));
    slow.observe(back(5, ['a']));
    slow.observe(damaged(100));
    slow.round({ t: 110 });
    slow.observe(back(700, []));
    expect(kinds(slow, 1000)).toEqual(['heldWithoutClaim']);
    // The same change as a plain delete is a release the holder had to make first.
    const plain = new InvariantChecker(10_000, 500);
    plain.observe(claim(0, ['a']));
    plain.observe(back(5, ['a']));
    plain.observe(claim(100, []));
    plain.round({ t: 110 });
    plain.observe(back(140, []));
    expect(kinds(plain, 1000)).toEqual(['heldAfterRelease']);
  });

  it('a claim no agent wrote (a ghost holder) is damage too: its previous holder owes a release within the lag', () => {
    const ghost = (t: number): OwnershipSample => ({ ...claim(t, ['ghost']), lease: 'L9', damaged: true });
    const c = new InvariantChecker(10_000, 500);
    c.observe(claim(0, ['a']));
    c.observe(back(5, ['a']));
    c.observe(ghost(100));
    c.round({ t: 110 }); // a still holds 10 ms after the overwrite: no release it failed to make first
    c.observe(back(140, []));
    expect(kinds(c, 1000)).toEqual([]);
    // The same overwrite taken for an agent's handoff is a release a still had to make first.
    const asHandoff = new InvariantChecker(10_000, 500);
    asHandoff.observe(claim(0, ['a']));
    asHandoff.observe(back(5, ['a']));
    asHandoff.observe({ ...claim(100, ['ghost']), lease: 'L9' });
    asHandoff.round({ t: 110 });
    asHandoff.observe(back(140, []));
    expect(kinds(asHandoff, 1000)).toEqual(['heldAfterRelease']);
  });

  it('tells an agent-written claim (holder registered under that lease) from a foreign one', () => {
    const nodes = new Map([['a', { lease: 'L1' }]]);
    expect(writtenByAgent(nodes, 'a', 'L1')).toBe(true);
    expect(writtenByAgent(nodes, 'a', 'L2')).toBe(false); // a foreign lease over a real id
    expect(writtenByAgent(nodes, 'ghost', 'L1')).toBe(false); // an id nobody registered
  });

  it('accepts kernel-first releases, and a node taking its bucket back (a new incarnation too)', () => {
    const c = new InvariantChecker(10_000, 500);
    c.observe(claim(0, ['a']));
    c.observe(back(5, ['a']));
    c.observe(back(90, [])); // release: kernel first ...
    c.observe(claim(100, [])); // ... then the claim
    c.observe(claim(105, ['a'], 'L2')); // a restarted and claims again before the next round
    c.observe(back(108, ['a']));
    c.round({ t: 110 });
    c.observe(claim(200, ['a'], 'L3')); // same node, new lease in one change: its backend may keep it
    c.round({ t: 210 });
    expect(kinds(c, 1000)).toEqual([]);
  });

  it('flags a backend holder that never had a claim, however short, unless the claim arrives within the lag', () => {
    const c = new InvariantChecker(10_000, 500);
    c.observe(claim(0, ['a']));
    c.observe(back(5, ['a']));
    c.observe(back(100, ['a', 'b'])); // b adds without a claim for 30 ms
    c.observe(back(130, ['a']));
    c.observe(back(300, ['a', 'c'])); // c's add is seen before its claim event ...
    c.observe(back(310, ['a']));
    c.observe(claim(600, ['c'])); // ... which arrives within the lag: fine
    const v = c.finish(2000, 0).violations.filter((x) => x.kind === 'heldNeverClaimed');
    expect(v).toEqual([{ kind: 'heldNeverClaimed', vip: 'v', bucket: 1, node: 'b', fromMs: 100, toMs: 130 }]);
  });

  it('does not hold a holder without a claim against a node while the observer was blind', () => {
    const c = new InvariantChecker(10_000, 500);
    c.observe(claim(0, ['a']));
    c.observe(back(100, ['b']));
    c.observe(back(200, []));
    c.blind({ t: 3000, from: 50, to: 3000 }); // the claim of b may have come and gone unseen
    expect(kinds(c, 4000)).not.toContain('heldNeverClaimed');
  });

  it('never fires on protocol-ordered handoffs, whatever the rounds; fires when a release comes after its claim', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            dur: fc.integer({ min: 2, max: 300 }),
            owner: fc.constantFrom(null, 'a', 'b', 'c'),
            round: fc.integer({ min: 0, max: 299 }),
            late: fc.boolean(),
          }),
          { minLength: 1, maxLength: 40 },
        ),
        (steps) => {
          const ok = new InvariantChecker(100_000, 500);
          const bad = new InvariantChecker(100_000, 500);
          let t = 0;
          let prev: string | null = null;
          // Late releases, each excused if its node claims the bucket again by its round's end + the claim lag.
          // ... unless another node claims it first (then it changed hands while the node may still have held it).
          const late: { node: string; until: number; excused: boolean; decided: boolean }[] = [];
          for (const s of steps) {
            const changed = s.owner !== prev;
            if (changed && s.owner)
              for (const l of late) {
                if (l.decided) continue;
                if (l.node !== s.owner) l.decided = true;
                else if (t <= l.until) l.excused = l.decided = true;
              }
            // ok: kernel before claim. bad: for `late` steps, the old holder lets go 1 ms after the claim moved.
            if (prev && changed) ok.observe(back(t, []));
            if (changed) {
              ok.observe(claim(t, s.owner ? [s.owner] : []));
              if (prev && s.late) {
                bad.observe(claim(t, s.owner ? [s.owner] : []));
                const r = Math.min(t + 1 + s.round, t + s.dur - 1);
                // A round inside the overlap (it starts after the claim moved, before the release).
                bad.round({ t: t + 1 });
                bad.observe(back(Math.max(t + 1, r), []));
                late.push({ node: prev, until: t + 1 + 500, excused: false, decided: false });
              } else {
                if (prev) bad.observe(back(t, []));
                bad.observe(claim(t, s.owner ? [s.owner] : []));
              }
              if (s.owner) {
                ok.observe(back(t, [s.owner]));
                bad.observe(back(Math.max(t + 1, Math.min(t + 1 + s.round, t + s.dur - 1)), [s.owner]));
              }
            }
            ok.round({ t: t + Math.min(s.round, s.dur - 1) });
            prev = s.owner;
            t += s.dur;
          }
          expect(ok.finish(t, 0).violations).toEqual([]);
          const badKinds = bad.finish(t, 0).violations.map((v) => v.kind);
          expect(badKinds.includes('heldAfterRelease')).toBe(late.some((l) => !l.excused));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('buckets that leave the spec', () => {
  const back = (t: number, bucket: number, holders: string[]): OwnershipSample => ({
    t,
    source: 'backend',
    vip: 'v',
    bucket,
    holders,
  });

  it('owe no owner while out of the spec, and do again once back in it', () => {
    const c = new InvariantChecker(300);
    c.liveness({ t: 0, live: ['a'] });
    c.scope({ t: 0, vip: 'v', buckets: 2 });
    c.observe(back(0, 2, ['a']));
    c.scope({ t: 100, vip: 'v', buckets: 1 }); // 2 → 1 bucket: bucket 2 is released for good
    c.observe(back(150, 2, []));
    c.scope({ t: 5000, vip: 'v', buckets: 2 }); // back: unowned from here
    c.observe(back(5200, 2, ['a'])); // within the bound
    expect(c.finish(5300, 0).violations).toEqual([]);

    const late = new InvariantChecker(300);
    late.liveness({ t: 0, live: ['a'] });
    late.scope({ t: 0, vip: 'v', buckets: 1 });
    late.observe(back(0, 2, []));
    late.scope({ t: 5000, vip: 'v', buckets: 2 });
    late.observe(back(5400, 2, ['a'])); // 400 ms after it re-entered the spec: too long
    expect(late.finish(5500, 0).violations.map((v) => v.kind)).toEqual(['unownedTooLong']);
  });
});
