import type { OwnershipSample } from '../invariant/types.js';
import type { ProbeResult } from './prober.js';

// Pure reading of probe results: who answered each source, double answers, handoff order, and the per-bucket
// ownership samples the invariant observer takes. No I/O, so it is unit-tested with hand-made results.

/** What one source saw in one probe (UDP replies, late ones included). */
export type SourceVerdict =
  | { kind: 'one'; node: string }
  | { kind: 'none' }
  /** Two or more different nodes answered: two kernel owners at once. */
  | { kind: 'double'; nodes: string[] }
  /** One node answered more than once (a duplicated packet): not two owners, but not clean either. */
  | { kind: 'repeated'; node: string; count: number };

export function verdictOf(replies: readonly string[]): SourceVerdict {
  if (replies.length === 0) return { kind: 'none' };
  const distinct = [...new Set(replies)].sort();
  if (distinct.length > 1) return { kind: 'double', nodes: distinct };
  if (replies.length > 1) return { kind: 'repeated', node: distinct[0]!, count: replies.length };
  return { kind: 'one', node: distinct[0]! };
}

/**
 * Fold late replies (reported by the prober with a later answer) back into the probe they belong to, so a reply
 * that missed its window still counts. Returns new results; the input is not changed.
 */
export function foldLateReplies(results: readonly ProbeResult[]): ProbeResult[] {
  const byId = new Map<number, ProbeResult>();
  const out = results.map((r) => {
    const copy: ProbeResult = { ...r, answers: r.answers.map((a) => ({ ...a, udp: [...a.udp] })), late: [] };
    byId.set(r.id, copy);
    return copy;
  });
  for (const r of results) {
    for (const l of r.late) {
      const target = byId.get(l.id)?.answers.find((a) => a.source === l.source);
      target?.udp.push(l.node);
    }
  }
  return out;
}

export type ExpectationMismatch =
  | { source: string; reason: 'none'; expected: string }
  | { source: string; reason: 'wrongNode'; expected: string; got: string }
  | { source: string; reason: 'double'; expected: string; got: string[] }
  | { source: string; reason: 'repeated'; expected: string; got: string; count: number }
  | { source: string; reason: 'tcpMismatch'; expected: string; got: string | null; error: string | null };

/** Compare one probe with the expected owner of each source (absent from `expected`: ignored). */
export function checkExpected(result: ProbeResult, expected: ReadonlyMap<string, string>): ExpectationMismatch[] {
  const out: ExpectationMismatch[] = [];
  for (const a of result.answers) {
    const want = expected.get(a.source);
    if (want === undefined) continue;
    const v = verdictOf(a.udp);
    if (result.udpProbed) {
      if (v.kind === 'none') out.push({ source: a.source, reason: 'none', expected: want });
      else if (v.kind === 'double') out.push({ source: a.source, reason: 'double', expected: want, got: v.nodes });
      else if (v.kind === 'repeated') {
        out.push({ source: a.source, reason: 'repeated', expected: want, got: v.node, count: v.count });
      } else if (v.node !== want) out.push({ source: a.source, reason: 'wrongNode', expected: want, got: v.node });
    }
    if (result.tcpProbed && a.tcp !== want) {
      out.push({ source: a.source, reason: 'tcpMismatch', expected: want, got: a.tcp, error: a.tcpError });
    }
  }
  return out;
}

export interface DoubleAnswer {
  probeId: number;
  t: number;
  source: string;
  nodes: string[];
}

/** Every (probe, source) that two different nodes answered. Fold late replies first. */
export function doubleAnswers(results: readonly ProbeResult[]): DoubleAnswer[] {
  const out: DoubleAnswer[] = [];
  for (const r of results) {
    for (const a of r.answers) {
      const v = verdictOf(a.udp);
      if (v.kind === 'double') out.push({ probeId: r.id, t: r.t0, source: a.source, nodes: v.nodes });
    }
  }
  return out;
}

/** One stretch of consecutive probes a source was answered by the same node (or by nobody: node null). */
export interface Run {
  node: string | null;
  fromT: number;
  toT: number;
  probes: number;
}

/** The answer history of one source as runs; double answers show as a run of `a+b`. */
export function runsOf(results: readonly ProbeResult[], source: string): Run[] {
  const runs: Run[] = [];
  for (const r of results) {
    const a = r.answers.find((x) => x.source === source);
    if (!a) continue;
    const v = verdictOf(a.udp);
    const node =
      v.kind === 'none' ? null : v.kind === 'double' ? v.nodes.join('+') : v.kind === 'repeated' ? v.node : v.node;
    const last = runs[runs.length - 1];
    if (last && last.node === node) {
      last.toT = r.t0;
      last.probes++;
    } else runs.push({ node, fromT: r.t0, toT: r.t0, probes: 1 });
  }
  return runs;
}

export type HandoffVerdict =
  | { kind: 'stayed'; node: string | null }
  /** from answered up to some probe, then (after `gapMs` without an owner) only `to` answered. */
  | { kind: 'clean'; from: string; to: string; gapMs: number; lastFromT: number; firstToT: number }
  /** Anything else: a double answer, a return of the old owner, or a third node. */
  | { kind: 'unclean'; runs: Run[] };

/** Classify a source's history: did it move from one node to another exactly once, in order, without overlap? */
export function handoffOf(results: readonly ProbeResult[], source: string): HandoffVerdict {
  const runs = runsOf(results, source);
  // Runs of the same owner separated only by silence are one ownership (it went dark and came back).
  const owners: Run[] = [];
  for (const r of runs) {
    if (r.node === null) continue;
    const last = owners[owners.length - 1];
    if (last && last.node === r.node)
      owners[owners.length - 1] = { ...last, toT: r.toT, probes: last.probes + r.probes };
    else owners.push(r);
  }
  if (owners.length === 0) return { kind: 'stayed', node: null };
  if (owners.length === 1 && !owners[0]!.node!.includes('+')) return { kind: 'stayed', node: owners[0]!.node };
  if (owners.length === 2 && !owners.some((r) => r.node!.includes('+'))) {
    const [a, b] = owners as [Run, Run];
    return { kind: 'clean', from: a.node!, to: b.node!, gapMs: b.fromT - a.toT, lastFromT: a.toT, firstToT: b.fromT };
  }
  return { kind: 'unclean', runs };
}

/**
 * Per-bucket ownership as the dataplane showed it in one probe: the holders of a bucket are every node that
 * answered any of its sources. Buckets with no probed source produce no sample.
 */
export function ownershipSamples(
  result: ProbeResult,
  vip: string,
  bucketOfSource: (source: string) => number,
): OwnershipSample[] {
  const holders = new Map<number, Set<string>>();
  for (const a of result.answers) {
    const b = bucketOfSource(a.source);
    let set = holders.get(b);
    if (!set) holders.set(b, (set = new Set()));
    for (const n of a.udp) set.add(n);
  }
  return [...holders.entries()]
    .sort(([x], [y]) => x - y)
    .map(([bucket, set]) => ({ t: result.t0, source: 'dataplane', vip, bucket, holders: [...set].sort() }));
}

/** Count of sources per verdict kind in one probe, for progress lines. */
export function summarizeProbe(result: ProbeResult): Record<SourceVerdict['kind'], number> {
  const out = { one: 0, none: 0, double: 0, repeated: 0 };
  for (const a of result.answers) out[verdictOf(a.udp).kind]++;
  return out;
}
