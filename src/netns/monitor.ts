import type { ProbeOptions, ProbeResult } from './prober.js';

// Probe continuously while something happens (a kill, a cut, a drain), bounded in time and count. The caller's
// `until` decides when the story is over; results are kept for the analysis (analysis.ts).

export interface MonitorOptions {
  probe: (opts?: ProbeOptions) => Promise<ProbeResult>;
  probeOptions?: ProbeOptions;
  /** Hard bounds: the loop stops at whichever comes first. */
  maxMs: number;
  maxProbes: number;
  /** Stop early once this holds for the results so far (checked after every probe). */
  until?: (results: readonly ProbeResult[]) => boolean;
  /** Called with every result as it arrives (progress, observer.record). */
  onResult?: (r: ProbeResult) => void;
  /** Aborts the loop between probes. */
  signal?: AbortSignal;
}

export type MonitorEnd = 'until' | 'maxMs' | 'maxProbes' | 'aborted';

export interface MonitorRun {
  results: ProbeResult[];
  ended: MonitorEnd;
}

export interface Monitor {
  /** Resolves when the loop ends. */
  done: Promise<MonitorRun>;
  /** Stop after the probe in flight. */
  stop(): void;
}

export function startMonitor(opts: MonitorOptions): Monitor {
  let stopped = false;
  const done = (async (): Promise<MonitorRun> => {
    const results: ProbeResult[] = [];
    const until = Date.now() + opts.maxMs;
    for (;;) {
      if (stopped || opts.signal?.aborted) return { results, ended: 'aborted' };
      if (Date.now() >= until) return { results, ended: 'maxMs' };
      if (results.length >= opts.maxProbes) return { results, ended: 'maxProbes' };
      const r = await opts.probe(opts.probeOptions);
      results.push(r);
      opts.onResult?.(r);
      if (opts.until?.(results)) return { results, ended: 'until' };
    }
  })();
  return { done, stop: () => void (stopped = true) };
}
