import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { AgentEvent } from './events.js';

// Event-loop delay of the main thread, reported periodically: the fence does not depend on it (the worker
// fires regardless), but a slow loop delays acquires, releases and keepalive processing, so operators see it.

/**
 * The delay figures of a `monitorEventLoopDelay` histogram, in ms. Node records the whole interval between its
 * sampling timer's runs, so an idle loop reads as the resolution itself: subtract it.
 */
export function loopDelayStats(h: IntervalHistogram, resolutionMs: number): { p99Ms: number; maxMs: number } {
  const ms = (ns: number): number => Math.round(Math.max(0, ns / 1e6 - resolutionMs) * 100) / 100;
  return { p99Ms: ms(h.percentile(99)), maxMs: ms(h.max) };
}

export function startLoopDelayMonitor(emit: (e: AgentEvent) => void, everyMs = 10_000, resolutionMs = 100): () => void {
  const h = monitorEventLoopDelay({ resolution: resolutionMs });
  h.enable();
  const t = setInterval(() => {
    if (h.count > 0) emit({ event: 'loopDelay', ...loopDelayStats(h, resolutionMs) });
    h.reset();
  }, everyMs);
  t.unref();
  return () => {
    clearInterval(t);
    h.disable();
  };
}
