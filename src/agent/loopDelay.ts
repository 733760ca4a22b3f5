import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { AgentEvent } from './events.js';

// Event-loop delay of the main thread, reported periodically: the fence does not depend on it (the worker
// fires regardless), but a slow loop delays acquires, releases and keepalive processing, so operators see it.
export function startLoopDelayMonitor(emit: (e: AgentEvent) => void, everyMs = 10_000): () => void {
  const h = monitorEventLoopDelay({ resolution: 100 });
  h.enable();
  const t = setInterval(() => {
    if (h.count > 0) {
      emit({
        event: 'loopDelay',
        p99Ms: Math.round(h.percentile(99) / 1e4) / 100,
        maxMs: Math.round(h.max / 1e4) / 100,
      });
    }
    h.reset();
  }, everyMs);
  t.unref();
  return () => {
    clearInterval(t);
    h.disable();
  };
}
