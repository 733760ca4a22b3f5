import { percentile } from '../bench/types.js';
import type { GapStats } from '../invariant/observer.js';
import type { Impairment, TimelineFact } from '../invariant/checker.js';
import type { InvariantReport, OwnershipSample, Violation } from '../invariant/types.js';
import { FAILOVER_KINDS, type FaultKind } from './schedule.js';

// The chaos report: pure functions from what a run recorded (faults, ownership history, the invariant verdict)
// to figures, a compact terminal picture and a self-contained SVG time line.

export type FaultOutcome = 'done' | 'skipped';

export interface FaultRecord {
  seq: number;
  kind: FaultKind;
  /** Node id, etcd member name, or '' when skipped before a target was chosen. */
  target: string;
  plannedAtMs: number;
  outcome: FaultOutcome;
  /** Why it was skipped: no free node, leader busy, ... */
  skipReason?: string;
  injectedAt?: number;
  undoneAt?: number;
  holdMs: number;
  error?: string;
  /** What the fault varied (the spec change, the write fault shares, the clone's label). */
  detail?: string;
  /** A fault that checks an outcome itself (a clone must refuse to start) and found it wrong: fails the run. */
  checkFailed?: string;
}

export interface LatencyStats {
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export interface ChaosReport {
  seed: number;
  options: Record<string, unknown>;
  startedAt: number;
  endedAt: number;
  ttlMs: number;
  boundMs: number;
  faultsByKind: Record<string, number>;
  skippedByKind: Record<string, number>;
  faults: FaultRecord[];
  /** kill/stop/partition → every bucket the target held was owned again, per kind and overall. */
  failover: Record<string, LatencyStats>;
  failoverSamples: { seq: number; kind: FaultKind; target: string; ms: number; buckets: number }[];
  maxUnownedMs: Record<string, number>;
  violations: Violation[];
  converged: boolean;
  invariant: Omit<InvariantReport, 'violations' | 'maxUnownedMs'>;
  /** Backend ownership changes, for the time line. */
  backendHistory: OwnershipSample[];
  nodes: string[];
  dataplane?: 'file' | 'netns';
  /** The chaos process's own event-loop delay (ms) during the fault phase. */
  harnessLoopDelayMs?: { p99: number; max: number };
  /** etcd raft leader changes seen during the run (each one refreshes every lease). */
  etcdLeaderChanges?: number;
  /** netns: probes sent, sources probed, sources answered by two nodes (double replies), unanswered. */
  dataplaneCounts?: Record<string, number>;
  /**
   * How often each source looked (gaps between the starts of successive complete looks, ms): a double owner that
   * lasts longer than a source's max gap is seen by it with certainty. backend: every node's backend read;
   * dataplane (netns): a UDP request from every client source.
   */
  resolution?: { backend: GapStats; dataplane?: GapStats };
  /** Facts the observer got after its reorder window had closed on them: checked out of time order. */
  lateFacts?: number;
  /** Everything the checker saw, to re-check offline: checkTimeline(facts, {boundMs, impairments, ...}). */
  facts?: TimelineFact[];
  impairments?: Impairment[];
}

export function latencyStats(values: number[]): LatencyStats {
  const s = [...values].sort((a, b) => a - b);
  return {
    samples: s.length,
    p50: percentile(s, 50),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    max: s.length ? s[s.length - 1]! : NaN,
  };
}

/**
 * Failover latency of each fault that kills, freezes past the TTL or cuts off its target: from the injection to
 * the moment every bucket the target held in the backend was held again after having been unowned (by a
 * survivor, or by the target's next incarnation). Buckets that never went unowned are not counted.
 */
export function failoverLatencies(
  faults: readonly FaultRecord[],
  backendHistory: readonly OwnershipSample[],
  /** The spec's bucket count per VIP over time (observer `scope` facts): a bucket out of the spec is no failover. */
  scopes: readonly { t: number; vip: string; buckets: number }[] = [],
): ChaosReport['failoverSamples'] {
  const outOfSpec = (vip: string, bucket: number, from: number, to: number): boolean => {
    let at: number | undefined;
    for (const s of scopes) {
      if (s.vip !== vip) continue;
      if (s.t <= from) at = s.buckets;
      else if (s.t <= to && bucket > s.buckets) return true;
    }
    return at !== undefined && bucket > at;
  };
  const byBucket = new Map<string, OwnershipSample[]>();
  for (const s of backendHistory) {
    if (s.source !== 'backend') continue;
    const k = `${s.vip}#${s.bucket}`;
    if (!byBucket.has(k)) byBucket.set(k, []);
    byBucket.get(k)!.push(s);
  }
  const out: ChaosReport['failoverSamples'] = [];
  for (const f of faults) {
    if (f.outcome !== 'done' || f.injectedAt === undefined || !FAILOVER_KINDS.includes(f.kind)) continue;
    const t0 = f.injectedAt;
    let worst = -1;
    let held = 0;
    for (const hist of byBucket.values()) {
      // Holders at t0.
      let before: OwnershipSample | undefined;
      for (const s of hist) {
        if (s.t > t0) break;
        before = s;
      }
      if (!before || !before.holders.includes(f.target)) continue;
      held++;
      let gap = false;
      let back: number | undefined;
      for (const s of hist) {
        if (s.t < t0) continue;
        if (s.holders.length === 0) gap = true;
        else if (gap) {
          back = s.t;
          break;
        }
      }
      if (back !== undefined && !outOfSpec(before.vip, before.bucket, t0, back)) worst = Math.max(worst, back - t0);
    }
    if (held > 0 && worst >= 0) out.push({ seq: f.seq, kind: f.kind, target: f.target, ms: worst, buckets: held });
  }
  return out;
}

export function failoverStats(samples: ChaosReport['failoverSamples']): Record<string, LatencyStats> {
  const out: Record<string, LatencyStats> = {};
  if (samples.length > 0) out.all = latencyStats(samples.map((s) => s.ms));
  for (const k of FAILOVER_KINDS) {
    const v = samples.filter((s) => s.kind === k).map((s) => s.ms);
    if (v.length > 0) out[k] = latencyStats(v);
  }
  return out;
}

const fmtMs = (n: number): string => (Number.isFinite(n) ? `${Math.round(n)}` : '-');

function describeViolation(v: Violation, t0: number): string {
  switch (v.kind) {
    case 'doubleOwner':
      return `doubleOwner ${v.source} ${v.vip}#${v.bucket} nodes=${v.nodes.join(',')} at +${fmtMs(v.at - t0)}ms`;
    case 'unownedTooLong':
      return `unownedTooLong ${v.vip}#${v.bucket} +${fmtMs(v.fromMs - t0)}..+${fmtMs(v.toMs - t0)}ms live-unowned ${fmtMs(v.durationMs)}ms > bound ${fmtMs(v.boundMs)}ms`;
    case 'notConverged':
      return `notConverged ${v.vip}#${v.bucket}: ${v.detail}`;
    case 'heldWithoutClaim':
      return `heldWithoutClaim ${v.vip}#${v.bucket} node=${v.node} +${fmtMs(v.fromMs - t0)}..+${fmtMs(v.toMs - t0)}ms (${fmtMs(v.durationMs)}ms)`;
    case 'heldAfterRelease':
      return `heldAfterRelease ${v.vip}#${v.bucket} node=${v.node} lease=${v.lease} claim moved +${fmtMs(v.claimAt - t0)}ms, still held in the round from +${fmtMs(v.seenAt - t0)}ms`;
    case 'heldNeverClaimed':
      return `heldNeverClaimed ${v.vip}#${v.bucket} node=${v.node} +${fmtMs(v.fromMs - t0)}..+${fmtMs(v.toMs - t0)}ms`;
  }
}

function violationTime(v: Violation): number | undefined {
  if (v.kind === 'doubleOwner') return v.at;
  if (v.kind === 'unownedTooLong' || v.kind === 'heldWithoutClaim' || v.kind === 'heldNeverClaimed') return v.fromMs;
  if (v.kind === 'heldAfterRelease') return v.claimAt;
  return undefined;
}

/** Fault lines within `windowMs` before a violation, to reproduce it. */
export function timelineAround(r: ChaosReport, v: Violation, windowMs: number): string[] {
  const at = violationTime(v) ?? r.endedAt;
  return r.faults
    .filter((f) => f.injectedAt !== undefined && f.injectedAt >= at - windowMs && f.injectedAt <= at + 500)
    .map(
      (f) =>
        `  #${f.seq} +${fmtMs(f.injectedAt! - r.startedAt)}ms ${f.kind} ${f.target} hold ${f.holdMs}ms` +
        (f.undoneAt !== undefined ? ` undone +${fmtMs(f.undoneAt - r.startedAt)}ms` : ''),
    );
}

/** Owner of each bucket at evenly spaced instants: one character per column. */
export function ownershipGrid(r: ChaosReport, columns: number): { key: string; row: string }[] {
  const legend = new Map(r.nodes.map((n, i) => [n, symbolFor(i)]));
  const byBucket = new Map<string, OwnershipSample[]>();
  for (const s of r.backendHistory) {
    const k = `${s.vip}#${s.bucket}`;
    if (!byBucket.has(k)) byBucket.set(k, []);
    byBucket.get(k)!.push(s);
  }
  const span = Math.max(1, r.endedAt - r.startedAt);
  const keys = [...byBucket.keys()].sort(cmpBucketKey);
  return keys.map((key) => {
    const hist = byBucket.get(key)!;
    let i = 0;
    let cur: OwnershipSample | undefined;
    let row = '';
    for (let c = 0; c < columns; c++) {
      const from = r.startedAt + (span * c) / columns;
      const to = r.startedAt + (span * (c + 1)) / columns;
      // A column shows '#' if two nodes held the bucket at any moment in it, otherwise the state it was in
      // longest (an owner, or '.' for unowned): short handoff gaps do not paint a long run's picture white.
      const time = new Map<string, number>();
      let double = false;
      const add = (st: OwnershipSample | undefined, a: number, b: number) => {
        if (!st || b <= a) return;
        const ch = st.holders.length === 0 ? '.' : (legend.get(st.holders[0]!) ?? '?');
        if (st.holders.length > 1) double = true;
        time.set(ch, (time.get(ch) ?? 0) + (b - a));
      };
      while (i < hist.length && hist[i]!.t <= from) cur = hist[i++]!;
      let at = from;
      while (i < hist.length && hist[i]!.t < to) {
        const next = hist[i++]!;
        add(cur, at, next.t);
        if (next.holders.length > 1) double = true;
        cur = next;
        at = next.t;
      }
      add(cur, at, to);
      let best: string | undefined;
      for (const [ch, ms] of time)
        if (best === undefined || ms > time.get(best)! || (ms === time.get(best) && ch === '.')) best = ch;
      row += double ? '#' : (best ?? ' ');
    }
    return { key, row };
  });
}

const SYMBOLS = '123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const symbolFor = (i: number): string => SYMBOLS[i % SYMBOLS.length]!;

function cmpBucketKey(a: string, b: string): number {
  const [va, ba] = a.split('#');
  const [vb, bb] = b.split('#');
  return va === vb ? Number(ba) - Number(bb) : va! < vb! ? -1 : 1;
}

export function renderText(r: ChaosReport, opts: { columns?: number } = {}): string {
  const lines: string[] = [];
  const secs = ((r.endedAt - r.startedAt) / 1000).toFixed(1);
  const total = Object.values(r.faultsByKind).reduce((a, b) => a + b, 0);
  lines.push(`chaos seed=${r.seed} ran ${secs}s, ${total} faults, TTL ${r.ttlMs}ms, unowned bound ${r.boundMs}ms`);
  lines.push(
    `  (a fault on the bucket's assignee, the leader or etcd before or during a gap restarts its clock: fault + bound + 500 ms)`,
  );
  lines.push(
    `faults: ${Object.entries(r.faultsByKind)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}` +
      (Object.keys(r.skippedByKind).length
        ? ` (skipped: ${Object.entries(r.skippedByKind)
            .map(([k, n]) => `${k} ${n}`)
            .join(', ')})`
        : ''),
  );
  if (r.dataplaneCounts && Object.keys(r.dataplaneCounts).length > 0) {
    lines.push(
      `dataplane ${r.dataplane ?? ''}: ` +
        Object.entries(r.dataplaneCounts)
          .map(([k, v]) => `${k} ${v}`)
          .join(', '),
    );
  }
  if (r.resolution) {
    const one = (name: string, g: GapStats): string =>
      `${name} every ${fmtMs(g.p50Ms)} ms (p99 ${fmtMs(g.p99Ms)}, max ${fmtMs(g.maxMs)}, ${g.count} rounds)`;
    const parts = [one('backend read', r.resolution.backend)];
    if (r.resolution.dataplane) parts.push(one('every source probed', r.resolution.dataplane));
    const worst = Math.max(r.resolution.backend.maxMs, r.resolution.dataplane?.maxMs ?? 0);
    const best = r.resolution.dataplane ? r.resolution.dataplane.maxMs : r.resolution.backend.maxMs;
    lines.push(
      `resolution: ${parts.join('; ')}: a double longer than ${fmtMs(best)} ms is seen with certainty` +
        (r.resolution.dataplane
          ? ` (kernel sets, a double confirmed by two reads: longer than ${fmtMs(2 * worst)} ms)`
          : '') +
        (r.lateFacts ? `; ${r.lateFacts} facts reached the checker out of time order` : ''),
    );
  }
  if (r.etcdLeaderChanges !== undefined) {
    lines.push(
      `etcd leader changes: ${r.etcdLeaderChanges} (each refreshes every lease: a failover waiting on a lease restarts there)`,
    );
  }
  if (r.harnessLoopDelayMs) {
    lines.push(
      `harness event-loop delay: p99 ${fmtMs(r.harnessLoopDelayMs.p99)}ms, max ${fmtMs(r.harnessLoopDelayMs.max)}ms (it forwards the agents' etcd traffic)`,
    );
  }
  lines.push('failover (ms)      n     p50    p95    p99    max   max/TTL');
  for (const [k, s] of Object.entries(r.failover)) {
    lines.push(
      `  ${k.padEnd(15)} ${String(s.samples).padStart(4)} ${fmtMs(s.p50).padStart(7)}${fmtMs(s.p95).padStart(7)}${fmtMs(s.p99).padStart(7)}${fmtMs(s.max).padStart(7)}   ${(s.max / r.ttlMs).toFixed(2)}`,
    );
  }
  const maxU = Object.entries(r.maxUnownedMs).sort(([a], [b]) => cmpBucketKey(a, b));
  if (maxU.length > 0) {
    lines.push('longest unowned per bucket (ms, while a live node existed):');
    lines.push('  ' + maxU.map(([k, v]) => `${k.split('#')[1]}:${fmtMs(v)}`).join(' '));
  }
  const columns = opts.columns ?? 100;
  const grid = ownershipGrid(r, columns);
  if (grid.length > 0) {
    lines.push(
      `ownership over time (${columns} columns of ${((r.endedAt - r.startedAt) / columns / 1000).toFixed(2)}s, each its longest state; . unowned, # two owners at any moment):`,
    );
    const w = Math.max(...grid.map((g) => g.key.length));
    for (const g of grid) lines.push(`  ${g.key.padEnd(w)} |${g.row}|`);
    lines.push('  nodes: ' + r.nodes.map((n, i) => `${symbolFor(i)}=${n}`).join(' '));
  }
  lines.push(r.converged ? 'converged after the last fault: yes' : 'converged after the last fault: NO');
  const failedChecks = r.faults.filter((f) => f.checkFailed);
  for (const f of failedChecks) lines.push(`FAULT CHECK FAILED: #${f.seq} ${f.kind} ${f.target}: ${f.checkFailed}`);
  if (r.violations.length === 0) lines.push('violations: none');
  else {
    lines.push(`VIOLATIONS: ${r.violations.length} (reproduce with --seed ${r.seed})`);
    for (const v of r.violations.slice(0, 20)) {
      lines.push(`- ${describeViolation(v, r.startedAt)}`);
      lines.push(...timelineAround(r, v, 2 * r.boundMs + 3000));
    }
    if (r.violations.length > 20) lines.push(`... ${r.violations.length - 20} more in report.json`);
  }
  return lines.join('\n') + '\n';
}

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function colorFor(i: number): string {
  return `hsl(${Math.round((i * 137.508) % 360)} 65% 55%)`;
}

/** A self-contained SVG: one row per bucket coloured by owner, unowned white, double owners black; faults on top. */
export function renderSvg(r: ChaosReport): string {
  const span = Math.max(1, r.endedAt - r.startedAt);
  const byBucket = new Map<string, OwnershipSample[]>();
  for (const s of r.backendHistory) {
    const k = `${s.vip}#${s.bucket}`;
    if (!byBucket.has(k)) byBucket.set(k, []);
    byBucket.get(k)!.push(s);
  }
  const keys = [...byBucket.keys()].sort(cmpBucketKey);
  const left = 110;
  const width = 1400;
  const plotW = width - left - 20;
  const rowH = 16;
  const faultLane = 60;
  const top = 40 + faultLane;
  const height = top + keys.length * rowH + 80 + Math.ceil(r.nodes.length / 8) * 18;
  const x = (t: number): number => left + ((t - r.startedAt) / span) * plotW;
  const nodeIdx = new Map(r.nodes.map((n, i) => [n, i]));
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="monospace" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fafafa"/>`,
    `<text x="10" y="18" font-size="14">${esc(`clusterip-ha chaos — seed ${r.seed}, ${((r.endedAt - r.startedAt) / 1000).toFixed(1)} s, ${r.faults.filter((f) => f.outcome === 'done').length} faults, ${r.violations.length} violations`)}</text>`,
  );
  // Time axis ticks.
  const stepS = Math.max(1, Math.ceil(span / 1000 / 20));
  for (let s = 0; s * 1000 <= span; s += stepS) {
    const xx = x(r.startedAt + s * 1000).toFixed(1);
    parts.push(`<line x1="${xx}" y1="${top - 4}" x2="${xx}" y2="${top + keys.length * rowH}" stroke="#ddd"/>`);
    parts.push(`<text x="${xx}" y="${top + keys.length * rowH + 14}" text-anchor="middle">${s}s</text>`);
  }
  // Faults: a tick per fault in the lane, coloured by kind, spanning its hold.
  const kinds = [...new Set(r.faults.map((f) => f.kind))];
  const labelFaults = r.faults.length <= 300;
  r.faults.forEach((f) => {
    if (f.outcome !== 'done' || f.injectedAt === undefined) return;
    const k = kinds.indexOf(f.kind);
    const y = 34 + (k % 6) * 9;
    const x1 = x(f.injectedAt);
    const x2 = Math.max(x1 + 1.5, x(f.undoneAt ?? f.injectedAt + f.holdMs));
    parts.push(
      `<rect x="${x1.toFixed(1)}" y="${y}" width="${(x2 - x1).toFixed(1)}" height="7" fill="${colorFor(k + 3)}"><title>${esc(`#${f.seq} ${f.kind} ${f.target} at +${f.injectedAt - r.startedAt}ms, hold ${f.holdMs}ms`)}</title></rect>`,
    );
    // Name the target on the bar when there is room (short runs); long runs keep it in the tooltip.
    if (labelFaults && x2 - x1 > 14) {
      parts.push(`<text x="${(x1 + 1).toFixed(1)}" y="${y + 6}" font-size="6" fill="#fff">${esc(f.target)}</text>`);
    }
  });
  kinds.forEach((k, i) => {
    parts.push(
      `<text x="${left - 6}" y="${40 + (i % 6) * 9}" text-anchor="end" font-size="8" fill="${colorFor(i + 3)}">${esc(k)}</text>`,
    );
  });
  keys.forEach((key, row) => {
    const y = top + row * rowH;
    parts.push(`<text x="${left - 6}" y="${y + 12}" text-anchor="end">${esc(key)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 1}" width="${plotW}" height="${rowH - 2}" fill="#fff" stroke="#eee"/>`);
    const hist = byBucket.get(key)!;
    hist.forEach((s, i) => {
      const end = hist[i + 1]?.t ?? r.endedAt;
      const x1 = x(s.t);
      const w = Math.max(0.5, x(end) - x1);
      if (s.holders.length === 0) return;
      const fill = s.holders.length > 1 ? '#000' : colorFor(nodeIdx.get(s.holders[0]!) ?? 0);
      parts.push(
        `<rect x="${x1.toFixed(1)}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowH - 4}" fill="${fill}"><title>${esc(`${key} ${s.holders.join('+')} +${s.t - r.startedAt}..+${end - r.startedAt}ms`)}</title></rect>`,
      );
    });
  });
  for (const v of r.violations) {
    const t = violationTime(v);
    if (t === undefined) continue;
    const xx = x(t).toFixed(1);
    parts.push(
      `<line x1="${xx}" y1="${top}" x2="${xx}" y2="${top + keys.length * rowH}" stroke="red" stroke-width="2"><title>${esc(describeViolation(v, r.startedAt))}</title></line>`,
    );
  }
  const ly = top + keys.length * rowH + 34;
  r.nodes.forEach((n, i) => {
    const lx = left + (i % 8) * 140;
    const yy = ly + Math.floor(i / 8) * 18;
    parts.push(
      `<rect x="${lx}" y="${yy - 10}" width="12" height="12" fill="${colorFor(i)}"/><text x="${lx + 16}" y="${yy}">${esc(n)}</text>`,
    );
  });
  const noteY = ly + Math.ceil(r.nodes.length / 8) * 18 + 4;
  parts.push(
    `<text x="${left}" y="${noteY}">white: unowned; black: two owners; red line: violation; hover for details</text>`,
  );
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
