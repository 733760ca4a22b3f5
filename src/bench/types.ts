// One row of `npm run bench`. Each area (planner, agent, backends, chaos scale) exports a function returning rows;
// src/bench/main.ts runs them all, prints one table and writes JSON.

export interface BenchTarget {
  /** The figure must be at most (`<=`) or at least (`>=`) this value. */
  op: '<=' | '>=';
  value: number;
}

export interface BenchRow {
  group: string; // 'planner' | 'agent' | 'backend' | 'scale' ...
  name: string; // what was measured, with its parameters: 'plan after 1 death, 1000 nodes x 4096 buckets x 1 VIP'
  unit: string; // 'ms', 'MB', '%', 'writes/s'
  /** The headline figure (p99 when `p99` is given, otherwise the single measured value). */
  value: number;
  samples?: number;
  p50?: number;
  p99?: number;
  max?: number;
  target?: BenchTarget;
  /** Lease TTL in ms, for failover rows: the table prints value / ttl. */
  ttlMs?: number;
  note?: string;
}

export interface BenchContext {
  /** Quick mode (`--quick`): fewer repetitions, for a smoke run in CI. */
  quick: boolean;
  log: (line: string) => void;
}

export type BenchSuite = (ctx: BenchContext) => Promise<BenchRow[]>;

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export function summarize(samples: number[]): { p50: number; p99: number; max: number; samples: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN, samples: s.length };
}
